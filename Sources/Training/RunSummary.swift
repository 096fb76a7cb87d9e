import Foundation
import NeuralNet

/// The end-of-run record written by `--summary PATH` (JSON, snake_case keys). Runs are
/// compared by `weights_sha256`, the SHA-256 of the final flat parameter buffer's bytes.
public struct RunSummary: Codable, Sendable {
    public var mode: String
    public var model: String
    public var parameters: Int
    public var workers: Int
    public var shards: Int
    public var epochs: Int
    public var steps: Int
    public var batchSize: Int
    public var learningRate: Float
    public var decay: Float
    public var momentum: Float
    public var optimizer: String
    public var l2: Float
    public var dropout: Float
    public var seed: UInt64
    public var finalLearningRate: Float
    /// Wall time of the training steps (data loading and evaluation excluded).
    public var trainSeconds: Double
    /// Training samples per second of `train_seconds`.
    public var samplesPerSecond: Double
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var testLoss: Double?
    public var testAccuracy: Double?
    public var weightsSha256: String
    /// Forward/backward time (distributed: the slowest worker of each step, summed).
    public var computeSeconds: Double
    /// Time the coordinator waited on the network beyond the workers' compute.
    public var networkWaitSeconds: Double
    public var timing: StepTiming
    /// Messages refused as malformed, unexpected or from unknown peers.
    public var rejectedMessages: Int
    /// Results that arrived for a step that was already over (dropped, not applied).
    public var staleResults: Int
    public var lostWorkers: Int
    /// Late shards sent to an idle worker as well (the first result won).
    public var rerunShards: Int
    /// Gradient results the coordinator accepted (a host's block counts once); nil in
    /// summaries written before it was counted.
    public var gradientsReceived: Int?
    public var workerStats: [WorkerSummary]
    public var history: [EpochReport]
    /// With `--parameter-servers`: who served what, receipts, rollbacks (absent otherwise).
    public var parameterService: ParameterServiceSummary?

    public init(mode: String, trainer: Trainer, workers: Int, network: NetworkCounters = NetworkCounters(),
                workerStats: [WorkerSummary] = []) {
        let last = trainer.history.last
        let timing = trainer.combinedTiming
        let samples = trainer.history.reduce(0.0) { $0 + $1.samplesPerSecond * $1.trainSeconds }
        self.mode = mode
        self.model = trainer.model.spec.description
        self.parameters = trainer.model.spec.parameterCount
        self.workers = workers
        self.shards = trainer.config.shardCount
        self.epochs = trainer.epoch
        self.steps = trainer.step
        self.batchSize = trainer.config.batchSize
        self.learningRate = trainer.config.learningRate
        self.decay = trainer.config.decay
        self.momentum = trainer.config.momentum
        self.optimizer = trainer.config.optimizer.rawValue
        self.l2 = trainer.config.l2
        self.dropout = trainer.config.dropout
        self.seed = trainer.config.seed
        self.finalLearningRate = trainer.optimizer.currentLearningRate
        self.trainSeconds = trainer.trainSeconds
        self.samplesPerSecond = trainer.trainSeconds > 0 ? samples / trainer.trainSeconds : 0
        self.trainLoss = last?.trainLoss ?? 0
        self.trainAccuracy = last?.trainAccuracy ?? 0
        self.testLoss = last?.testLoss
        self.testAccuracy = last?.testAccuracy
        self.weightsSha256 = Checksum.sha256Hex(of: trainer.model.parameters)
        self.computeSeconds = timing.computeSeconds
        self.networkWaitSeconds = timing.networkWaitSeconds
        self.timing = timing
        self.rejectedMessages = network.rejectedMessages
        self.staleResults = network.staleResults
        self.lostWorkers = network.lostWorkers
        self.rerunShards = network.rerunShards
        self.gradientsReceived = network.gradientsReceived
        self.workerStats = workerStats
        self.history = trainer.history
    }

    public func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    public static func decode(_ data: Data) throws -> RunSummary {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return try decoder.decode(RunSummary.self, from: data)
    }
}

/// What the coordinator counted on its socket.
public struct NetworkCounters: Codable, Sendable, Equatable {
    public var rejectedMessages = 0
    public var staleResults = 0
    public var lostWorkers = 0
    public var rerunShards = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Gradient results accepted: one per shard from a worker, one per block from a host
    /// (`worker --processes K`).
    public var gradientsReceived = 0

    public init() {}
}

/// Per-worker figures for the end-of-run table.
public struct WorkerSummary: Codable, Sendable, Equatable {
    public var name: String
    public var shardsDone: Int
    public var stepsDone: Int
    public var meanComputeMilliseconds: Double
    public var timesLost: Int
    public var timesRejoined: Int
    /// Shards it held that were re-run elsewhere for being late.
    public var timesLate: Int
    /// Compute processes behind its link (`worker --processes K`), and the gradient results
    /// it sent that were accepted (a block of shards counts once); nil in older summaries.
    public var slots: Int?
    public var results: Int?
    /// How its tasks' samples reached it: "pixels" (in the tasks), "indices" (it holds the
    /// training set, `worker --data`), or "shared memory" (on the coordinator's host).
    public var data: String?
}
