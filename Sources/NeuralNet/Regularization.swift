/// L2 regularisation (weight decay in the loss): adds `λ/2 · Σ w²` over the weights (not the
/// biases) to the mean loss, so its gradient `λ · w` joins the mean data gradient.
public enum L2Regularization {
    /// Adds `coefficient · sampleCount · w` to a gradient *sum* over `sampleCount` samples, for
    /// every weight of `spec`, so that the optimizer's division by the sample count leaves
    /// `λ · w` in the mean gradient.
    public static func addGradient(coefficient: Float, spec: ModelSpec, parameters: [Float],
                                   sampleCount: Int, to gradientSum: UnsafeMutablePointer<Float>) {
        guard coefficient != 0 else { return }
        parameters.withUnsafeBufferPointer { p in
            addGradient(coefficient: coefficient, spec: spec, range: 0..<p.count, parameters: p.baseAddress!,
                        sampleCount: sampleCount, to: gradientSum)
        }
    }

    /// The same for the parameters `range` of the flat vector alone (a parameter server's
    /// range): `parameters` and `gradientSum` hold that range, index 0 being `range.lowerBound`.
    /// Element by element the same arithmetic, so a range's result equals the whole vector's.
    public static func addGradient(coefficient: Float, spec: ModelSpec, range: Range<Int>, parameters: UnsafePointer<Float>,
                                   sampleCount: Int, to gradientSum: UnsafeMutablePointer<Float>) {
        guard coefficient != 0 else { return }
        let scale = coefficient * Float(sampleCount)
        let base = range.lowerBound
        for (layer, offset) in zip(spec.layers, spec.parameterOffsets) {
            let lower = max(offset, base)
            let upper = min(offset + layer.weightCount, range.upperBound)
            guard lower < upper else { continue }
            for i in (lower - base)..<(upper - base) { gradientSum[i] += scale * parameters[i] }
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
