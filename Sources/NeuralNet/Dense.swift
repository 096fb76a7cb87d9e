/// A fully connected layer: `output = activation(inputs · weights + biases)`.
///
/// The layer owns no memory. Its parameters live in the model's flat parameter buffer
/// (weights `inputSize × outputSize` row-major, then `outputSize` biases) and its activations
/// in the model's workspace; the layer only knows shapes and the math.
public struct Dense: Sendable, Equatable, Codable {
    public let inputSize: Int
    public let outputSize: Int
    public let activation: Activation

    public init(inputSize: Int, outputSize: Int, activation: Activation) {
        precondition(inputSize > 0 && outputSize > 0, "A dense layer needs positive sizes.")
        self.inputSize = inputSize
        self.outputSize = outputSize
        self.activation = activation
    }

    public var weightCount: Int { inputSize * outputSize }
    public var parameterCount: Int { weightCount + outputSize }

    /// Forward pass for `rows` samples.
    /// - Parameters:
    ///   - input: `rows × inputSize`.
    ///   - parameters: this layer's slice of the parameter buffer (weights, then biases).
    ///   - output: `rows × outputSize`; receives `activation(input · weights + biases)`.
    public func forward(input: UnsafePointer<Float>, rows: Int,
                        parameters: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>) {
        let biases = parameters + weightCount
        for row in 0..<rows {
            (output + row * outputSize).update(from: biases, count: outputSize)
        }
        BLAS.sgemm(m: rows, n: outputSize, k: inputSize,
                   a: input, lda: inputSize,
                   b: parameters, ldb: outputSize,
                   beta: 1,
                   c: output, ldc: outputSize)
        activation.forward(output, rows: rows, columns: outputSize)
    }

    /// Backward pass for `rows` samples, given dL/dz (the activation's backward already applied).
    /// - Parameters:
    ///   - input: the `rows × inputSize` input the forward pass saw.
    ///   - parameters: this layer's parameters (weights are read for the input gradient).
    ///   - outputGradient: dL/dz, `rows × outputSize`.
    ///   - parameterGradient: receives dL/dweights (`inputSize × outputSize`) then dL/dbiases,
    ///     summed over the rows.
    ///   - inputGradient: receives dL/dinput (`rows × inputSize`); `nil` skips it (the first
    ///     layer's input gradient is used by nothing).
    public func backward(input: UnsafePointer<Float>, rows: Int,
                         parameters: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         parameterGradient: UnsafeMutablePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?) {
        // dW = inputᵀ · dZ
        BLAS.sgemm(transposeA: true, m: inputSize, n: outputSize, k: rows,
                   a: input, lda: inputSize,
                   b: outputGradient, ldb: outputSize,
                   c: parameterGradient, ldc: outputSize)
        // db = Σ_rows dZ
        let biasGradient = parameterGradient + weightCount
        biasGradient.update(repeating: 0, count: outputSize)
        for row in 0..<rows {
            let g = outputGradient + row * outputSize
            for j in 0..<outputSize { biasGradient[j] += g[j] }
        }
        // dX = dZ · Wᵀ
        if let inputGradient {
            BLAS.sgemm(transposeB: true, m: rows, n: inputSize, k: outputSize,
                       a: outputGradient, lda: outputSize,
                       b: parameters, ldb: outputSize,
                       c: inputGradient, ldc: inputSize)
        }
    }
}
