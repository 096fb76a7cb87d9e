import Foundation

/// Adam (Kingma & Ba), with the same learning-rate decay as `SGD`:
///
///     lr = lr0 / (1 + decay · iteration)
///     m  = β1 · m + (1 − β1) · g
///     v  = β2 · v + (1 − β2) · g²
///     param −= lr · (m / (1 − β1ᵗ)) / (√(v / (1 − β2ᵗ)) + ε)     with t = iteration + 1
public struct Adam: Sendable, Equatable {
    public var initialLearningRate: Float
    public var decay: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    /// Updates applied so far.
    public var iteration: Int
    /// First and second moment estimates, one per parameter in the flat order.
    public var firstMoment: [Float]
    public var secondMoment: [Float]

    public init(parameterCount: Int, learningRate: Float, decay: Float = 0,
                beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        initialLearningRate = learningRate
        self.decay = decay
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        iteration = 0
        firstMoment = Array(repeating: 0, count: parameterCount)
        secondMoment = Array(repeating: 0, count: parameterCount)
    }

    public var currentLearningRate: Float {
        initialLearningRate / (1 + decay * Float(iteration))
    }

    /// Applies one update, given the gradient summed over `sampleCount` samples.
    public mutating func step(parameters: inout [Float], gradientSum: UnsafePointer<Float>, sampleCount: Int) {
        precondition(parameters.count == firstMoment.count, "Adam was made for \(firstMoment.count) parameters.")
        precondition(sampleCount > 0, "An Adam step needs at least one sample.")
        let t = Double(iteration + 1)
        let learningRate = currentLearningRate
        let firstCorrection = Float(1 / (1 - pow(Double(beta1), t)))
        let secondCorrection = Float(1 / (1 - pow(Double(beta2), t)))
        let inverseCount = 1 / Float(sampleCount)
        let (beta1, beta2, epsilon) = (self.beta1, self.beta2, self.epsilon)
        let count = parameters.count
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                parameters.withUnsafeMutableBufferPointer { p in
                    for i in 0..<count {
                        let g = gradientSum[i] * inverseCount
                        let mi = beta1 * m[i] + (1 - beta1) * g
                        let vi = beta2 * v[i] + (1 - beta2) * g * g
                        m[i] = mi
                        v[i] = vi
                        p[i] -= learningRate * (mi * firstCorrection) / ((vi * secondCorrection).squareRoot() + epsilon)
                    }
                }
            }
        }
        iteration += 1
    }
}
