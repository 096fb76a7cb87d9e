import NeuralNet

/// What a run trains and how: everything that decides the final weights.
/// Two runs with equal configurations end with the same `weights_sha256`, however many
/// workers computed them.
public struct TrainingConfig: Sendable, Equatable, Codable {
    public var hidden: [Int] = [128]
    /// A typed model (`conv5x32,pool2,dense10`, see `ModelSpec.parse`) instead of the MLP
    /// of `hidden`; nil: the MLP.
    public var model: String? = nil
    public var epochs: Int = 10
    public var batchSize: Int = 128
    public var learningRate: Float = 0.2
    public var decay: Float = 5e-4
    public var momentum: Float = 0.9
    /// The update rule; Adam uses `beta1`, `beta2` and `epsilon` (and ignores `momentum`).
    public var optimizer: OptimizerKind = .sgd
    public var beta1: Float = 0.9
    public var beta2: Float = 0.999
    public var epsilon: Float = 1e-8
    /// L2 coefficient λ: `λ/2 · Σ w²` over the weights joins the loss being minimised.
    public var l2: Float = 0
    /// Dropout rate on the hidden layers' outputs while training (0: none).
    public var dropout: Float = 0
    public var seed: UInt64 = 1
    /// Shards per batch; each is computed (anywhere) as one gradient sum, and the sums are
    /// added in shard order.
    public var shardCount: Int = 1
    /// Stop after this many steps (nil: run all epochs). For tests and quick experiments.
    public var maximumSteps: Int? = nil
    /// Use only the first N training samples (nil: all).
    public var trainingLimit: Int? = nil

    public init() {}

    /// The model this configuration trains on samples of `input` in `classes` classes.
    public func modelSpec(input: ImageShape, classes: Int) throws -> ModelSpec {
        if let model { return try ModelSpec.parse(model, input: input, classes: classes) }
        return try ModelSpec.mlp(inputSize: input.count, hidden: hidden, classes: classes)
    }

    /// The dropout of this run, whose masks derive from the seed; nil without dropout.
    public var dropoutMasks: Dropout? {
        dropout > 0 ? Dropout(rate: dropout, seed: seed ^ 0xD509_0D50_9D50_90D5) : nil
    }

    /// A fresh optimizer of the configured kind.
    public func makeOptimizer(parameterCount: Int) -> Optimizer {
        switch optimizer {
        case .sgd:
            .sgd(SGD(parameterCount: parameterCount, learningRate: learningRate, decay: decay, momentum: momentum))
        case .adam:
            .adam(Adam(parameterCount: parameterCount, learningRate: learningRate, decay: decay,
                       beta1: beta1, beta2: beta2, epsilon: epsilon))
        }
    }
}
