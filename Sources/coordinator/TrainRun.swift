import ArgumentParser
import Foundation
import Logging
import MNISTData
import NeuralNet
import Training
import Wire

/// What `train` does: load the data, train here or with workers, write what was asked for.
extension TrainCommand {
    func run() throws {
        var level = Logger.Level(rawValue: logLevel) ?? .notice
        if quiet && level < .warning { level = .warning }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        BLAS.setThreadCount(1)
        do {
            try train()
        } catch let error as CleanExit {
            throw error
        } catch {
            OutputFile.standardError.writeIgnoringErrors("error: \(error)\n")
            throw ExitCode.failure
        }
    }

    private func train() throws {
        let logger = Logger(label: "coordinator")
        let (trainSet, testSet) = try DataDirectory.loadTrainAndTest(from: data, trainLimit: trainLimit)
        logger.info("loaded \(trainSet.count) training and \(testSet.count) test samples from \(data)")

        let reporter = ConsoleReporter(quiet: quiet)
        let config = self.config
        // Before any socket is bound or worker started: a bad checkpoint is a mistake to
        // report at once, not after the workers joined.
        let resumed = try loadCheckpoint(config: config, train: trainSet)
        if let path = checkpoint ?? resume { AtomicFile.removeStaleTemporaries(of: path) }
        let summaryRecord: RunSummary
        if local {
            let trainer = try makeTrainer(config: config, train: trainSet, test: testSet,
                                          source: LocalShardSource(precision: precision), resumed: resumed)
            try run(trainer, reporter: reporter)
            summaryRecord = RunSummary(mode: "local", trainer: trainer, workers: 0)
            try finish(trainer: trainer, summary: summaryRecord, reporter: reporter)
        } else {
            try DistributedRun(command: self, config: config, logger: logger)
                .run(train: trainSet, test: testSet, resumed: resumed, reporter: reporter)
        }
    }

    /// `--resume`'s checkpoint, read and checked against this run's settings and data.
    private func loadCheckpoint(config: TrainingConfig, train: Dataset) throws -> Checkpoint? {
        guard let resume else { return nil }
        let checkpoint = try Checkpoint.load(from: resume)
        do {
            try checkpoint.validate(against: config,
                                    spec: config.modelSpec(input: train.imageShape, classes: train.classCount),
                                    trainCount: train.count,
                                    stepsPerEpoch: EpochOrder(sampleCount: train.count, batchSize: config.batchSize).batchCount,
                                    precision: precision)
        } catch let error as CheckpointError {
            throw CheckpointError(path: resume, reason: error.reason)
        }
        return checkpoint
    }

    /// Runs the trainer with the console reporter and the `--metrics` log attached.
    func run(_ trainer: Trainer, reporter: ConsoleReporter) throws {
        let log = try metrics.map { try MetricsLog(path: $0, every: metricsEvery, trainer: trainer) }
        try trainer.run(onStep: { report in
            try reporter.step(report)
            try log?.step(report, trainer: trainer)
        }, onEpoch: { report in
            try reporter.epoch(report, of: trainer.config.epochs)
            try log?.epoch(report, trainer: trainer)
        })
    }

    /// A trainer, continuing `resumed` (from `--resume`) if given, that writes `--checkpoint`s.
    func makeTrainer(config: TrainingConfig, train: Dataset, test: Dataset, source: ShardGradientSource,
                     resumed: Checkpoint?) throws -> Trainer {
        let trainer: Trainer
        do {
            trainer = try Trainer(config: config, train: train, test: test, source: source, resume: resumed)
        } catch let error as CheckpointError {
            throw CheckpointError(path: resume, reason: error.reason)
        }
        if let resumed, !quiet {
            try OutputFile.standardOutput.write(
                "resuming from \(resume!) at step \(resumed.step) (epoch \(resumed.epoch + 1), step \(resumed.stepInEpoch + 1) of it)\n")
        }
        if let resumed, resumed.wirePrecision == nil {
            OutputFile.standardError.writeIgnoringErrors(
                "warning: \(resume!) does not record its --wire-precision (an older format); continuing with \(precision) as given\n")
        }
        trainer.snapshotEvery = snapshotEvery
        if let path = checkpoint ?? resume {
            trainer.checkpointEvery = checkpointEvery
            trainer.onCheckpoint = { try $0.save(to: path) }
        }
        return trainer
    }

    func finish(trainer: Trainer, summary: RunSummary, reporter: ConsoleReporter) throws {
        try reporter.summary(summary)
        if let saveModel {
            try ModelFile.save(spec: trainer.model.spec, parameters: trainer.model.parameters, to: saveModel)
            if !quiet { try OutputFile.standardOutput.write("  model saved to  \(saveModel)\n") }
        }
        if let path = self.summary {
            // In place, not through a renamed temporary file: the path may be a pipe or a
            // device (`/dev/stdout`), which a rename would replace.
            try OutputFile.write([UInt8](try summary.jsonData()), to: path)
        }
    }
}
