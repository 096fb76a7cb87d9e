import MNISTData
import NeuralNet

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

public struct EpochReport: Sendable, Codable {
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

/// Why a run stopped early.
public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(step: Int, epoch: Int, learningRate: Float)
    case invalidConfig(String)

    public var description: String {
        switch self {
        case let .nonFiniteLoss(step, epoch, learningRate):
            "the loss became NaN or infinite at step \(step) (epoch \(epoch)) with learning rate \(learningRate); try a lower --learning-rate"
        case let .invalidConfig(reason):
            reason
        }
    }
}

/// The training loop of the thesis design, shared by the single-process and the
/// distributed trainer: for each batch, every shard's forward and backward pass (by the
/// gradient source), the shard sums added in order, and the SGD step.
public final class Trainer {
    public let config: TrainingConfig
    public let model: Sequential
    public private(set) var optimizer: SGD
    public let train: Dataset
    public let test: Dataset?
    private let source: ShardGradientSource
    private var dataGenerator: SeededGenerator
    private var order: EpochOrder
    private let builder: BatchBuilder
    private let results: ShardResults
    public private(set) var step = 0
    public private(set) var epoch = 0
    public private(set) var timing = StepTiming()
    public private(set) var trainSeconds = 0.0
    public private(set) var history: [EpochReport] = []

    public init(config: TrainingConfig, train: Dataset, test: Dataset?, source: ShardGradientSource) throws {
        guard config.batchSize > 0, config.epochs > 0, config.shardCount > 0 else {
            throw TrainingError.invalidConfig("batch size, epochs and shards must be positive")
        }
        guard config.shardCount <= config.batchSize else {
            throw TrainingError.invalidConfig("--shards \(config.shardCount) exceeds --batch-size \(config.batchSize)")
        }
        let spec = try config.modelSpec(inputSize: train.featureCount, classes: train.classCount)
        self.config = config
        // The seed decides the initial weights; the data order uses a stream derived from it.
        self.model = Sequential(spec: spec, seed: config.seed)
        self.optimizer = SGD(parameterCount: spec.parameterCount, learningRate: config.learningRate,
                             decay: config.decay, momentum: config.momentum)
        self.train = train
        self.test = test
        self.source = source
        self.dataGenerator = SeededGenerator(seed: config.seed ^ 0x5DEE_CE66_D1CE_5EED)
        self.order = EpochOrder(sampleCount: train.count, batchSize: config.batchSize)
        self.builder = BatchBuilder(featureCount: train.featureCount, maximumBatchSize: config.batchSize)
        self.results = ShardResults(shardCount: config.shardCount, parameterCount: spec.parameterCount)
    }

    public var stepsPerEpoch: Int { order.batchCount }
    public var totalSteps: Int {
        let all = config.epochs * stepsPerEpoch
        return min(all, config.maximumSteps ?? all)
    }

    /// Runs every remaining epoch. `onStep` and `onEpoch` are called on this thread.
    public func run(onStep: (StepReport) -> Void = { _ in }, onEpoch: (EpochReport) -> Void = { _ in }) throws {
        while epoch < config.epochs && step < totalSteps {
            let report = try runEpoch(onStep: onStep)
            history.append(report)
            onEpoch(report)
        }
    }

    private func runEpoch(onStep: (StepReport) -> Void) throws -> EpochReport {
        order.shuffle(using: &dataGenerator)
        var epochStatistics = BatchStatistics()
        let epochStart = MonotonicClock.now
        var stepsDone = 0
        var mark = MonotonicClock.now
        var batch = builder.build(from: train, indices: order.batch(0), shardCount: config.shardCount)
        for batchNumber in 0..<stepsPerEpoch where step < totalSteps {
            // The next batch is built before this step runs, so its samples can travel while
            // this step computes.
            let hasNext = batchNumber + 1 < stepsPerEpoch && step + 1 < totalSteps
            let next = hasNext ? builder.build(from: train, indices: order.batch(batchNumber + 1), shardCount: config.shardCount) : nil
            timing.batchSeconds += lap(&mark)
            let statistics = try trainStep(batch: batch, next: next)
            mark = MonotonicClock.now
            if let next { batch = next }
            epochStatistics += statistics
            stepsDone += 1
            onStep(StepReport(epoch: epoch + 1, stepInEpoch: batchNumber + 1, stepsPerEpoch: stepsPerEpoch,
                              step: step, batchStatistics: statistics,
                              learningRate: optimizer.currentLearningRate,
                              epochElapsedSeconds: MonotonicClock.now - epochStart,
                              epochSamples: epochStatistics.sampleCount))
        }
        let epochSeconds = MonotonicClock.now - epochStart
        trainSeconds += epochSeconds
        epoch += 1
        let evaluation = test.map { evaluate(on: $0) }
        return EpochReport(epoch: epoch, steps: stepsDone,
                           trainLoss: epochStatistics.meanLoss, trainAccuracy: epochStatistics.accuracy,
                           testLoss: evaluation?.meanLoss, testAccuracy: evaluation?.accuracy,
                           learningRate: optimizer.currentLearningRate,
                           samplesPerSecond: Double(epochStatistics.sampleCount) / max(epochSeconds, 1e-9),
                           trainSeconds: epochSeconds, liveWorkers: source.liveWorkerCount)
    }

    /// One step: the batch, every shard's gradient sum, their ordered sum, the SGD update.
    private func trainStep(batch: BatchView, next: BatchView?) throws -> BatchStatistics {
        var mark = MonotonicClock.now
        try source.computeShards(step: step, model: model, batch: batch, next: next, results: results)
        let statistics = results.batchStatistics
        guard statistics.lossSum.isFinite else {
            throw TrainingError.nonFiniteLoss(step: step, epoch: epoch + 1, learningRate: optimizer.currentLearningRate)
        }
        lap(&mark)
        let gradientSum = results.reduce()
        timing.reduceSeconds += lap(&mark)
        optimizer.step(parameters: &model.parameters, gradientSum: gradientSum, sampleCount: batch.sampleCount)
        timing.optimizerSeconds += lap(&mark)
        step += 1
        return statistics
    }

    @discardableResult
    private func lap(_ mark: inout Double) -> Double {
        let now = MonotonicClock.now
        defer { mark = now }
        return now - mark
    }

    /// Loss and accuracy of the current model on `dataset`, in chunks of 1,000 samples.
    public func evaluate(on dataset: Dataset) -> BatchStatistics {
        Evaluation.statistics(of: model, on: dataset)
    }

    /// Phase timings of the run: the trainer's own plus the gradient source's.
    public var combinedTiming: StepTiming {
        var combined = source.timing
        combined.reduceSeconds = timing.reduceSeconds
        combined.optimizerSeconds = timing.optimizerSeconds
        combined.batchSeconds = timing.batchSeconds
        return combined
    }
}

public enum Evaluation {
    public static func statistics(of model: Sequential, on dataset: Dataset, chunk: Int = 1000) -> BatchStatistics {
        var total = BatchStatistics()
        dataset.pixels.withUnsafeBufferPointer { pixels in
            dataset.labels.withUnsafeBufferPointer { labels in
                var start = 0
                while start < dataset.count {
                    let rows = min(chunk, dataset.count - start)
                    total += model.evaluate(pixels: pixels.baseAddress! + start * dataset.featureCount,
                                            labels: labels.baseAddress! + start, rows: rows)
                    start += rows
                }
            }
        }
        return total
    }
}
