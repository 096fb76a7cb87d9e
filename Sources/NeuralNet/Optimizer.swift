/// Which update rule a run uses.
public enum OptimizerKind: String, Sendable, Codable, CaseIterable {
    case sgd, adam
}

/// The optimizer a trainer holds: SGD with momentum (the thesis design) or Adam, behind one
/// interface, with its state as flat buffers in the parameter order (for checkpoints).
public enum Optimizer: Sendable, Equatable {
    case sgd(SGD)
    case adam(Adam)

    public var currentLearningRate: Float {
        switch self {
        case let .sgd(sgd): sgd.currentLearningRate
        case let .adam(adam): adam.currentLearningRate
        }
    }

    public var iteration: Int {
        get {
            switch self {
            case let .sgd(sgd): sgd.iteration
            case let .adam(adam): adam.iteration
            }
        }
        set {
            switch self {
            case var .sgd(sgd): sgd.iteration = newValue; self = .sgd(sgd)
            case var .adam(adam): adam.iteration = newValue; self = .adam(adam)
            }
        }
    }

    /// SGD: `[velocity]`; Adam: `[first moment, second moment]`.
    public var state: [[Float]] {
        get {
            switch self {
            case let .sgd(sgd): [sgd.velocity]
            case let .adam(adam): [adam.firstMoment, adam.secondMoment]
            }
        }
        set {
            switch self {
            case var .sgd(sgd):
                precondition(newValue.count == 1)
                sgd.velocity = newValue[0]
                self = .sgd(sgd)
            case var .adam(adam):
                precondition(newValue.count == 2)
                adam.firstMoment = newValue[0]
                adam.secondMoment = newValue[1]
                self = .adam(adam)
            }
        }
    }

    /// Applies one update from the gradient summed over `sampleCount` samples.
    public mutating func step(parameters: inout [Float], gradientSum: UnsafePointer<Float>, sampleCount: Int) {
        switch self {
        case var .sgd(sgd):
            self = .sgd(SGD(parameterCount: 0, learningRate: 0))  // drop the copy so `sgd` is unique
            sgd.step(parameters: &parameters, gradientSum: gradientSum, sampleCount: sampleCount)
            self = .sgd(sgd)
        case var .adam(adam):
            self = .sgd(SGD(parameterCount: 0, learningRate: 0))
            adam.step(parameters: &parameters, gradientSum: gradientSum, sampleCount: sampleCount)
            self = .adam(adam)
        }
    }
}
