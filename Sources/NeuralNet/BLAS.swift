import COpenBLAS

/// The only place that calls OpenBLAS. Every matrix product of the network goes through
/// `sgemm`; `sgemmNaive` beside it is the tests' oracle (llm.c keeps `matmul_forward_naive`
/// next to the fast one for the same reason).
public enum BLAS {
    /// Sets the number of OpenBLAS threads for this process. Data-parallel processes use one
    /// each: the parallelism comes from the processes, and one thread keeps results bit-exact.
    public static func setThreadCount(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }

    /// `c[m×n] = alpha · op(a) · op(b) + beta · c`, all row-major.
    ///
    /// `op(a)` is `m×k` (stored `k×m` when `transposeA`), `op(b)` is `k×n` (stored `n×k` when
    /// `transposeB`); `lda`, `ldb`, `ldc` are the row strides of the stored matrices.
    /// The corresponding C function is `cblas_sgemm`.
    @inline(__always)
    public static func sgemm(
        transposeA: Bool = false, transposeB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k),
                    alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }

    /// Reference triple loop with the same contract as `sgemm`, accumulating in Double.
    public static func sgemmNaive(
        transposeA: Bool = false, transposeB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var sum = 0.0
                for p in 0..<k {
                    let aValue = transposeA ? a[p * lda + i] : a[i * lda + p]
                    let bValue = transposeB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += Double(aValue) * Double(bValue)
                }
                let previous = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
                c[i * ldc + j] = Float(Double(alpha) * sum + previous)
            }
        }
    }
}
