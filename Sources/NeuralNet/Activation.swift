#if canImport(Glibc)
import Glibc
#endif

/// The nonlinearity a dense layer applies to `inputs · weights + biases`.
///
/// Both directions work in place on a row-major `rows × columns` buffer, so a layer needs one
/// buffer for its output and one for its gradient: every backward formula here is written in
/// terms of the activation's *output*, which the forward pass leaves behind.
public enum Activation: UInt8, CaseIterable, Sendable, Codable, CustomStringConvertible {
    case linear = 0
    case relu = 1
    case sigmoid = 2
    case tanh = 3
    case softmax = 4

    public var description: String {
        switch self {
        case .linear: "linear"
        case .relu: "relu"
        case .sigmoid: "sigmoid"
        case .tanh: "tanh"
        case .softmax: "softmax"
        }
    }

    public init?(name: String) {
        guard let match = Activation.allCases.first(where: { $0.description == name.lowercased() })
        else { return nil }
        self = match
    }

    /// In place: `values` holds the pre-activation `z` on entry and `a = f(z)` on exit.
    public func forward(_ values: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        let count = rows * columns
        switch self {
        case .linear:
            break
        case .relu:
            ReLU.forward(values, count: count)
        case .sigmoid:
            for i in 0..<count { values[i] = 1 / (1 + expf(-values[i])) }
        case .tanh:
            for i in 0..<count { values[i] = tanhf(values[i]) }
        case .softmax:
            // Subtracting the row maximum keeps expf finite for any logits.
            for row in 0..<rows {
                let v = values + row * columns
                var maximum = v[0]
                for j in 1..<columns { maximum = max(maximum, v[j]) }
                var sum: Float = 0
                for j in 0..<columns {
                    let e = expf(v[j] - maximum)
                    v[j] = e
                    sum += e
                }
                let scale = 1 / sum
                for j in 0..<columns { v[j] *= scale }
            }
        }
    }

    /// In place: `values` holds `z` without the biases on entry (a product's result) and
    /// `a = f(z + biases)` on exit, `biases` (`columns` values) added to every row. One pass
    /// over the values for ReLU, while the product's result is still in the cache.
    public func forward(_ values: UnsafeMutablePointer<Float>, rows: Int, columns: Int, biases: UnsafePointer<Float>) {
        if self == .relu {
            ReLU.forward(values, rows: rows, columns: columns, biases: biases)
            return
        }
        for row in 0..<rows {
            let v = values + row * columns
            for j in 0..<columns { v[j] += biases[j] }
        }
        forward(values, rows: rows, columns: columns)
    }

    /// In place: `gradient` holds dL/da on entry and dL/dz on exit, given `output` = a.
    public func backward(output: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                         rows: Int, columns: Int) {
        let count = rows * columns
        switch self {
        case .linear:
            break
        case .relu:
            // a > 0 exactly where z > 0, so the output decides the mask.
            ReLU.backward(output: output, gradient: gradient, count: count)
        case .sigmoid:
            for i in 0..<count { gradient[i] *= output[i] * (1 - output[i]) }
        case .tanh:
            for i in 0..<count { gradient[i] *= 1 - output[i] * output[i] }
        case .softmax:
            // Jacobian-vector product: dz_j = a_j · (da_j − Σ_k da_k a_k).
            for row in 0..<rows {
                let a = output + row * columns
                let g = gradient + row * columns
                var dot: Float = 0
                for j in 0..<columns { dot += g[j] * a[j] }
                for j in 0..<columns { g[j] = a[j] * (g[j] - dot) }
            }
        }
    }
}

/// ReLU's loops, branch-free by construction: each value is masked by bits. Written as
/// `output > 0 ? gradient : 0`, the backward loop compiled to a compare-and-branch per
/// value; on real data the signs are random, so about half of those branches were
/// mispredicted, 6% of a training step. As bit masks the compiler vectorises them, and an
/// unoptimised (debug) build stays as fast as plain loops, which explicit SIMD types would
/// not (every lane operation is a generic call there).
enum ReLU {
    /// `max(z, 0)` as the standard library computes it (`0 >= z ? 0 : z`: NaN stays NaN).
    static func forward(_ values: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let z = values[i]
            let keep: UInt32 = 0 >= z ? 0 : .max
            values[i] = Float(bitPattern: z.bitPattern & keep)
        }
    }

    /// `max(z + bias, 0)` over each row, as `forward` computes it after adding the biases.
    static func forward(_ values: UnsafeMutablePointer<Float>, rows: Int, columns: Int, biases: UnsafePointer<Float>) {
        for row in 0..<rows {
            let v = values + row * columns
            for j in 0..<columns {
                let z = v[j] + biases[j]
                let keep: UInt32 = 0 >= z ? 0 : .max
                v[j] = Float(bitPattern: z.bitPattern & keep)
            }
        }
    }

    /// The gradient where the output is above zero, else 0 (a NaN output gives 0).
    static func backward(output: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count {
            let keep: UInt32 = output[i] > 0 ? .max : 0
            gradient[i] = Float(bitPattern: gradient[i].bitPattern & keep)
        }
    }
}
