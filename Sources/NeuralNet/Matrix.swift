/// A row-major `rows × columns` matrix of `Float` over contiguous storage.
///
/// A value type for data that crosses API boundaries (test inputs, predictions, model
/// parameters in tests). The training hot path works on preallocated buffers instead.
public struct Matrix: Equatable, Sendable {
    public let rows: Int
    public let columns: Int
    public var values: [Float]

    public init(rows: Int, columns: Int, values: [Float]) {
        precondition(values.count == rows * columns,
                     "Matrix of \(rows)×\(columns) needs \(rows * columns) values, got \(values.count).")
        self.rows = rows
        self.columns = columns
        self.values = values
    }

    public init(rows: Int, columns: Int, repeating value: Float = 0) {
        self.init(rows: rows, columns: columns, values: Array(repeating: value, count: rows * columns))
    }

    public subscript(row: Int, column: Int) -> Float {
        get { values[row * columns + column] }
        set { values[row * columns + column] = newValue }
    }

    /// `self · other` through `cblas_sgemm`.
    public func multiplied(by other: Matrix) -> Matrix {
        precondition(columns == other.rows,
                     "Cannot multiply \(rows)×\(columns) by \(other.rows)×\(other.columns).")
        var result = Matrix(rows: rows, columns: other.columns)
        values.withUnsafeBufferPointer { a in
            other.values.withUnsafeBufferPointer { b in
                result.values.withUnsafeMutableBufferPointer { c in
                    BLAS.sgemm(m: rows, n: other.columns, k: columns,
                               a: a.baseAddress!, lda: columns,
                               b: b.baseAddress!, ldb: other.columns,
                               c: c.baseAddress!, ldc: other.columns)
                }
            }
        }
        return result
    }
}
