import NeuralNet

/// What a run trains and how: everything that decides the final weights.
/// Two runs with equal configurations end with the same `weights_sha256`, however many
/// workers computed them.
public struct TrainingConfig: Sendable, Equatable, Codable {
    public var hidden: [Int] = [128]
    public var epochs: Int = 10
    public var batchSize: Int = 128
    public var learningRate: Float = 0.2
    public var decay: Float = 5e-4
    public var momentum: Float = 0.9
    public var seed: UInt64 = 1
    /// Shards per batch; each is computed (anywhere) as one gradient sum, and the sums are
    /// added in shard order.
    public var shardCount: Int = 1
    /// Stop after this many steps (nil: run all epochs). For tests and quick experiments.
    public var maximumSteps: Int? = nil
    /// Use only the first N training samples (nil: all).
    public var trainingLimit: Int? = nil

    public init() {}

    public func modelSpec(inputSize: Int, classes: Int) throws -> ModelSpec {
        try ModelSpec.mlp(inputSize: inputSize, hidden: hidden, classes: classes)
    }
}
