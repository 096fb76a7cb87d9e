import NeuralNet

/// What a run reports as it goes: after every step and every epoch.

/// Progress of a run, reported after every step and every epoch.
public struct StepReport: Sendable {
    public var epoch: Int
    public var stepInEpoch: Int
    public var stepsPerEpoch: Int
    public var step: Int
    public var batchStatistics: BatchStatistics
    public var learningRate: Float
    public var epochElapsedSeconds: Double
    public var epochSamples: Int
}

public struct EpochReport: Sendable, Codable, Equatable {
    public var epoch: Int
    public var steps: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double?
    public var testAccuracy: Double?
    public var learningRate: Float
    public var samplesPerSecond: Double
    public var trainSeconds: Double
    public var liveWorkers: Int
}
