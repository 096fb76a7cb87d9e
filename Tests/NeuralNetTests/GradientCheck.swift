import NeuralNet

/// Central finite differences in Float, compared with an analytic gradient.
/// `loss` is evaluated at `values` with one entry nudged by ±epsilon.
func numericGradient(of values: [Float], epsilon: Float = 1e-2, loss: ([Float]) -> Double) -> [Double] {
    var gradient = [Double](repeating: 0, count: values.count)
    for i in values.indices {
        var plus = values, minus = values
        plus[i] += epsilon
        minus[i] -= epsilon
        gradient[i] = (loss(plus) - loss(minus)) / Double(2 * epsilon)
    }
    return gradient
}

/// The largest |a − n| / max(1, |a|, |n|) over the entries.
func maximumRelativeError(_ analytic: [Float], _ numeric: [Double]) -> Double {
    zip(analytic, numeric).map { a, n in abs(Double(a) - n) / max(1, abs(Double(a)), abs(n)) }.max() ?? 0
}

func randomValues(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in (generator.nextUnitFloat() * 2 - 1) * scale }
}
