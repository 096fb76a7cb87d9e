/// L2 regularisation (weight decay in the loss): adds `λ/2 · Σ w²` over the weights (not the
/// biases) to the mean loss, so its gradient `λ · w` joins the mean data gradient.
public enum L2Regularization {
    /// Adds `coefficient · sampleCount · w` to a gradient *sum* over `sampleCount` samples, for
    /// every weight of `spec`, so that the optimizer's division by the sample count leaves
    /// `λ · w` in the mean gradient.
    public static func addGradient(coefficient: Float, spec: ModelSpec, parameters: [Float],
                                   sampleCount: Int, to gradientSum: UnsafeMutablePointer<Float>) {
        guard coefficient != 0 else { return }
        let scale = coefficient * Float(sampleCount)
        parameters.withUnsafeBufferPointer { p in
            for (layer, offset) in zip(spec.layers, spec.parameterOffsets) {
                for i in offset..<(offset + layer.weightCount) { gradientSum[i] += scale * p[i] }
            }
        }
    }

    /// `λ/2 · Σ w²` over the weights.
    public static func penalty(coefficient: Float, spec: ModelSpec, parameters: [Float]) -> Double {
        guard coefficient != 0 else { return 0 }
        var sum = 0.0
        for (layer, offset) in zip(spec.layers, spec.parameterOffsets) {
            for i in offset..<(offset + layer.weightCount) { sum += Double(parameters[i]) * Double(parameters[i]) }
        }
        return Double(coefficient) / 2 * sum
    }
}
