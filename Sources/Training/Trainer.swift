import MNISTData
import NeuralNet

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
    public private(set) var optimizer: Optimizer
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

    // Where the run is inside the current epoch: what a checkpoint must capture.
    private(set) var stepInEpoch = 0
    private var epochStartGenerator: SeededGenerator
    private var epochStatistics = BatchStatistics()
    private var epochSeconds = 0.0
    /// The next step's batch, once built (see `buildNextBatch`).
    private var nextBatch: BatchView?
    private var nextBatchWanted = false

    /// With a source that applies updates: steps between the snapshots the trainer brings
    /// home and keeps in memory, to roll back to when the source loses state.
    public var snapshotEvery = 50
    private var lastSnapshot: Checkpoint?
    /// Times the run went back to a snapshot.
    public private(set) var rollbacks = 0
    /// The last step and epoch reported: steps replayed after a rollback are not reported twice.
    private var reportedStep = 0
    private var reportedEpoch = 0

    /// Called with a snapshot every `checkpointEvery` steps and at the end of every epoch.
    public var onCheckpoint: ((Checkpoint) throws -> Void)?
    public var checkpointEvery: Int?

    public init(config: TrainingConfig, train: Dataset, test: Dataset?, source: ShardGradientSource,
                resume checkpoint: Checkpoint? = nil) throws {
        guard config.batchSize > 0, config.epochs > 0, config.shardCount > 0 else {
            throw TrainingError.invalidConfig("batch size, epochs and shards must be positive")
        }
        guard config.shardCount <= config.batchSize else {
            throw TrainingError.invalidConfig("--shards \(config.shardCount) exceeds --batch-size \(config.batchSize)")
        }
        if let test, test.imageShape != train.imageShape || test.classCount != train.classCount {
            throw TrainingError.invalidConfig("the test set has \(test.imageShape) images (\(test.featureCount) pixels) and \(test.classCount) classes, the training set \(train.imageShape) (\(train.featureCount)) and \(train.classCount)")
        }
        let spec = try config.modelSpec(input: train.imageShape, classes: train.classCount)
        self.config = config
        // The seed decides the initial weights; the data order uses a stream derived from it.
        self.model = Sequential(spec: spec, seed: config.seed)
        guard config.dropout >= 0 && config.dropout < 1 else {
            throw TrainingError.invalidConfig("--dropout must be in [0, 1) (got \(config.dropout))")
        }
        guard config.l2 >= 0 else { throw TrainingError.invalidConfig("--l2 must not be negative") }
        self.optimizer = config.makeOptimizer(parameterCount: spec.parameterCount)
        self.train = train
        self.test = test
        self.source = source
        self.dataGenerator = SeededGenerator(seed: config.seed ^ 0x5DEE_CE66_D1CE_5EED)
        self.epochStartGenerator = dataGenerator
        self.order = EpochOrder(sampleCount: train.count, batchSize: config.batchSize)
        self.builder = BatchBuilder(featureCount: train.featureCount, maximumBatchSize: config.batchSize)
        self.results = ShardResults(shardCount: config.shardCount, parameterCount: spec.parameterCount)
        model.dropout = config.dropoutMasks
        if let checkpoint { try restore(checkpoint) }
    }

    public var stepsPerEpoch: Int { order.batchCount }
    public var totalSteps: Int {
        let all = config.epochs * stepsPerEpoch
        return min(all, config.maximumSteps ?? all)
    }

    /// Runs every remaining epoch. `onStep` and `onEpoch` are called on this thread.
    /// An error thrown by `onStep` or `onEpoch` (a report that cannot be written) stops the
    /// run; the last checkpoint written stays the last good one.
    public func run(onStep: (StepReport) throws -> Void = { _ in }, onEpoch: (EpochReport) throws -> Void = { _ in }) throws {
        guard source.appliesUpdates else { return try runEpochs(onStep: onStep, onEpoch: onEpoch) }
        lastSnapshot = checkpoint()
        try source.seed(from: lastSnapshot!)
        while true {
            do {
                return try runEpochs(onStep: onStep, onEpoch: onEpoch)
            } catch let rollback as ParameterServiceRollback {
                guard let lastSnapshot else { throw rollback }
                rollbacks += 1
                try restore(lastSnapshot)
                try source.seed(from: lastSnapshot)
            }
        }
    }

    /// A source that applies updates hands back the parameters and optimizer state, which
    /// become the snapshot to roll back to.
    private func bringHome(keepingSnapshot: Bool = true) throws {
        guard source.appliesUpdates else { return }
        try source.bringHome(step: step, into: model, optimizer: &optimizer)
        if keepingSnapshot { lastSnapshot = checkpoint() }
    }

    private func runEpochs(onStep: (StepReport) throws -> Void, onEpoch: (EpochReport) throws -> Void) throws {
        while epoch < config.epochs && step < totalSteps {
            if stepInEpoch == 0 {
                epochStartGenerator = dataGenerator
                order.shuffle(using: &dataGenerator)
                epochStatistics = BatchStatistics()
                epochSeconds = 0
            }
            let cpuStart = ThreadCPUClock.now
            do {
                defer { timing.threadCPUSeconds += ThreadCPUClock.now - cpuStart }
                try runSteps(onStep: onStep)
            }
            // Home for the evaluation; the snapshot once the epoch's end is counted.
            try bringHome(keepingSnapshot: false)
            let complete = stepInEpoch == stepsPerEpoch
            // A run stopped by --max-steps inside an epoch reports the part it did, but stays
            // inside the epoch, so a checkpoint taken now continues it exactly.
            let report = complete ? finishEpoch() : partialEpochReport()
            history.append(report)
            if source.appliesUpdates { lastSnapshot = checkpoint() }
            // The checkpoint first: a report that cannot be written then costs no progress.
            try onCheckpoint?(checkpoint())
            if report.epoch > reportedEpoch || !complete { try onEpoch(report) }
            reportedEpoch = max(reportedEpoch, complete ? report.epoch : 0)
            if !complete { break }
        }
    }

    private func partialEpochReport() -> EpochReport {
        let elapsed = epochSeconds
        trainSeconds += elapsed
        epochSeconds = 0  // counted in trainSeconds now
        let evaluation = test.map { evaluate(on: $0) }
        return report(epoch: epoch + 1, seconds: elapsed, evaluation: evaluation)
    }

    /// The steps left in the current epoch.
    private func runSteps(onStep: (StepReport) throws -> Void) throws {
        let start = MonotonicClock.now - epochSeconds
        var batch = builder.build(from: train, indices: order.batch(stepInEpoch), shardCount: config.shardCount,
                                  into: source.batchBuffer(forStep: step))
        timing.batchSeconds += MonotonicClock.now - start - epochSeconds
        while stepInEpoch < stepsPerEpoch && step < totalSteps {
            // The source asks for the next batch once this step's work is out, so that it is
            // gathered (and its samples travel) while this step computes.
            nextBatch = nil
            nextBatchWanted = stepInEpoch + 1 < stepsPerEpoch && step + 1 < totalSteps
            let statistics = try trainStep(batch: batch, next: { buildNextBatch() })
            if let next = buildNextBatch() { batch = next }
            epochStatistics += statistics
            stepInEpoch += 1
            epochSeconds = MonotonicClock.now - start
            let checkpointDue = checkpointEvery.map { $0 > 0 && step % $0 == 0 && stepInEpoch < stepsPerEpoch } ?? false
            if source.appliesUpdates && (checkpointDue || step % max(1, snapshotEvery) == 0) { try bringHome() }
            if checkpointDue { try onCheckpoint?(checkpoint()) }
            guard step > reportedStep else { continue }
            reportedStep = step
            try onStep(StepReport(epoch: epoch + 1, stepInEpoch: stepInEpoch, stepsPerEpoch: stepsPerEpoch,
                              step: step, batchStatistics: statistics,
                              learningRate: optimizer.currentLearningRate,
                              epochElapsedSeconds: epochSeconds,
                              epochSamples: epochStatistics.sampleCount))
        }
    }

    /// The batch after the current step's, built on first call (nil at the end of an epoch
    /// or the run). A method rather than a closure over locals, which would allocate a box
    /// every step.
    private func buildNextBatch() -> BatchView? {
        guard nextBatch == nil, nextBatchWanted else { return nextBatch }
        let start = MonotonicClock.now
        nextBatch = builder.build(from: train, indices: order.batch(stepInEpoch + 1), shardCount: config.shardCount,
                                  into: source.batchBuffer(forStep: step + 1))
        timing.batchSeconds += MonotonicClock.now - start
        return nextBatch
    }

    private func finishEpoch() -> EpochReport {
        trainSeconds += epochSeconds
        epoch += 1
        let steps = stepInEpoch
        stepInEpoch = 0
        let evaluation = test.map { evaluate(on: $0) }
        var report = report(epoch: epoch, seconds: epochSeconds, evaluation: evaluation)
        report.steps = steps
        return report
    }

    private func report(epoch: Int, seconds: Double, evaluation: BatchStatistics?) -> EpochReport {
        EpochReport(epoch: epoch, steps: stepInEpoch,
                    trainLoss: epochStatistics.meanLoss, trainAccuracy: epochStatistics.accuracy,
                    testLoss: evaluation?.meanLoss, testAccuracy: evaluation?.accuracy,
                    learningRate: optimizer.currentLearningRate,
                    samplesPerSecond: Double(epochStatistics.sampleCount) / max(seconds, 1e-9),
                    trainSeconds: seconds, liveWorkers: source.liveWorkerCount)
    }

    // MARK: Checkpoints

    /// Everything needed to continue this run exactly where it is.
    public func checkpoint() -> Checkpoint {
        Checkpoint(config: config, spec: model.spec, trainCount: train.count,
                   step: step, epoch: epoch, stepInEpoch: stepInEpoch,
                   // Mid-epoch, the state before this epoch's shuffle regenerates its order.
                   generatorState: (stepInEpoch > 0 ? epochStartGenerator : dataGenerator).state,
                   epochStatistics: epochStatistics, epochSeconds: epochSeconds,
                   trainSeconds: trainSeconds, history: history, iteration: optimizer.iteration,
                   parameters: model.parameters, optimizerState: optimizer.state, wirePrecision: source.precision)
    }

    private func restore(_ checkpoint: Checkpoint) throws {
        try checkpoint.validate(against: config, spec: model.spec, trainCount: train.count,
                                stepsPerEpoch: stepsPerEpoch, precision: source.precision)
        model.parameters = checkpoint.parameters
        optimizer.state = checkpoint.optimizerState
        optimizer.iteration = checkpoint.iteration
        step = checkpoint.step
        epoch = checkpoint.epoch
        stepInEpoch = checkpoint.stepInEpoch
        // A report of a part-done epoch (a run stopped by --max-steps) is replaced when the
        // epoch completes.
        history = checkpoint.history.filter { $0.epoch <= checkpoint.epoch }
        trainSeconds = checkpoint.trainSeconds
        dataGenerator = SeededGenerator(state: checkpoint.generatorState)
        epochStartGenerator = dataGenerator
        if stepInEpoch > 0 {
            order.shuffle(using: &dataGenerator)
            epochStatistics = checkpoint.epochStatistics
            epochSeconds = checkpoint.epochSeconds
        }
    }

    /// One step: the batch, every shard's gradient sum, their ordered sum, the SGD update.
    private func trainStep(batch: BatchView, next: () -> BatchView?) throws -> BatchStatistics {
        var mark = MonotonicClock.now
        try source.computeShards(step: step, model: model, batch: batch, next: next, results: results)
        let statistics = results.batchStatistics
        guard statistics.lossSum.isFinite else {
            throw TrainingError.nonFiniteLoss(step: step, epoch: epoch + 1, learningRate: optimizer.currentLearningRate)
        }
        lap(&mark)
        if source.appliesUpdates {
            // Updated where the parameters live; the count keeps the learning rate in step.
            optimizer.iteration += 1
            step += 1
            return statistics
        }
        let gradientSum = results.reduce()
        L2Regularization.addGradient(coefficient: config.l2, spec: model.spec, parameters: model.parameters,
                                     sampleCount: batch.sampleCount, to: gradientSum)
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

    public var liveWorkerCount: Int { source.liveWorkerCount }

    /// Phase timings of the run: the trainer's own plus the gradient source's.
    public var combinedTiming: StepTiming {
        var combined = source.timing
        combined.reduceSeconds += timing.reduceSeconds
        combined.optimizerSeconds = timing.optimizerSeconds
        combined.batchSeconds = timing.batchSeconds
        combined.threadCPUSeconds = timing.threadCPUSeconds
        return combined
    }
}
