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

/// ReLU's loops, written with explicit vectors. Written as scalar loops, the compiler kept a
/// branch per value in the backward one (and vectorised neither): on real data the signs
/// are random, so about half of those branches were mispredicted, 6% of a training step.
enum ReLU {
    typealias Vector = SIMD8<Float>
    static let width = Vector.scalarCount

    /// `max(z, 0)` as the standard library computes it (`0 >= z ? 0 : z`: NaN stays NaN).
    static func forward(_ values: UnsafeMutablePointer<Float>, count: Int) {
        let raw = UnsafeMutableRawPointer(values)
        var i = 0
        while i + width <= count {
            let z = raw.loadUnaligned(fromByteOffset: i * 4, as: Vector.self)
            raw.storeBytes(of: z.replacing(with: 0, where: z .<= 0), toByteOffset: i * 4, as: Vector.self)
            i += width
        }
        while i < count { values[i] = max(values[i], 0); i += 1 }
    }

    /// The gradient where the output is above zero, else 0 (a NaN output gives 0).
    static func backward(output: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>, count: Int) {
        let outputs = UnsafeRawPointer(output), gradients = UnsafeMutableRawPointer(gradient)
        var i = 0
        while i + width <= count {
            let a = outputs.loadUnaligned(fromByteOffset: i * 4, as: Vector.self)
            let g = gradients.loadUnaligned(fromByteOffset: i * 4, as: Vector.self)
            gradients.storeBytes(of: g.replacing(with: 0, where: .!(a .> 0)), toByteOffset: i * 4, as: Vector.self)
            i += width
        }
        while i < count { gradient[i] = output[i] > 0 ? gradient[i] : 0; i += 1 }
    }
}
