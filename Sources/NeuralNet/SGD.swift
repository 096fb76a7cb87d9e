/// Stochastic gradient descent with learning-rate decay and momentum, as in the thesis design:
///
///     lr       = lr0 / (1 + decay · iteration)
///     velocity = momentum · velocity − lr · gradient
///     param   += velocity
///
/// The learning rate is computed from the iteration count *before* the update and the count
/// goes up after it, so step 0 uses the full rate `lr0`.
public struct SGD: Sendable, Equatable, Codable {
    public var initialLearningRate: Float
    public var decay: Float
    public var momentum: Float
    /// Updates applied so far.
    public var iteration: Int
    /// One velocity per parameter, in the flat parameter order.
    public var velocity: [Float]

    public init(parameterCount: Int, learningRate: Float, decay: Float = 0, momentum: Float = 0) {
        self.initialLearningRate = learningRate
        self.decay = decay
        self.momentum = momentum
        self.iteration = 0
        self.velocity = Array(repeating: 0, count: parameterCount)
    }

    /// The rate the next update will use.
    public var currentLearningRate: Float {
        initialLearningRate / (1 + decay * Float(iteration))
    }

    /// Applies one update, given the gradient *summed* over `sampleCount` samples; the mean
    /// gradient is `gradientSum / sampleCount`.
    public mutating func step(parameters: inout [Float], gradientSum: [Float], sampleCount: Int) {
        precondition(gradientSum.count == velocity.count, "SGD was made for \(velocity.count) parameters.")
        gradientSum.withUnsafeBufferPointer { step(parameters: &parameters, gradientSum: $0.baseAddress!, sampleCount: sampleCount) }
    }

    /// The same on a gradient buffer of `velocity.count` floats.
    public mutating func step(parameters: inout [Float], gradientSum: UnsafePointer<Float>, sampleCount: Int) {
        precondition(parameters.count == velocity.count, "SGD was made for \(velocity.count) parameters.")
        precondition(sampleCount > 0, "An SGD step needs at least one sample.")
        let learningRate = currentLearningRate
        let inverseCount = 1 / Float(sampleCount)
        let momentum = self.momentum
        let count = velocity.count
        velocity.withUnsafeMutableBufferPointer { v in
            parameters.withUnsafeMutableBufferPointer { p in
                for i in 0..<count {
                    let update = momentum * v[i] - learningRate * (gradientSum[i] * inverseCount)
                    v[i] = update
                    p[i] += update
                }
            }
        }
        iteration += 1
    }
}
