import ArgumentParser
import Foundation
import MNISTData
import NeuralNet
import Training

/// The single-process measurements of scripts/bench.sh, in one run so they can be compared:
/// the sgemm roofline for the products a training step performs, the trainer's throughput
/// as a fraction of it, allocations in the step loop, data loading time, and the weights copy.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure sgemm roofline, single-process training throughput and loading time.",
        discussion: "Run through scripts/bench.sh, which adds the distributed figures. Allocation counts need the malloc counter the script preloads."
    )

    @Option(help: "MNIST folder.") var data = "data"
    @Option(help: "Batch size.") var batchSize = 128
    @Option(help: "Hidden widths.") var hidden = "128"
    @Option(help: "Epochs of training to time.") var epochs = 3
    @Option(help: "Write the figures as JSON here.") var json: String?
    @Option(help: "Time the training step of this typed model instead (e.g. conv5x32,pool2,conv5x64,pool2,dense128,dense10; see coordinator --model): --steps steps after --warm-up-steps, beside its sgemm roofline.") var model: String?
    @Option(help: "With --model: steps to time.") var steps = 20
    @Option(help: "With --model: untimed steps first.") var warmUpSteps = 3
    @Option(help: "With --model: the learning rate (0.05 keeps the convnet stable).") var learningRate: Float = 0.05

    func run() throws {
        if let model {
            let figures = try ModelStepBench(data: data, model: model, batchSize: batchSize, steps: steps,
                                             warmUpSteps: warmUpSteps, learningRate: learningRate).run()
            print(figures.table)
            try json.map { try Self.write(figures, to: $0) }
            return
        }
        BLAS.setThreadCount(1)
        let widths = hidden.split(separator: ",").compactMap { Int($0) }

        let (train, test, loadTrainSeconds, loadTestSeconds) = try loadTimed()

        let spec = try ModelSpec.mlp(inputSize: train.featureCount, hidden: widths, classes: train.classCount)
        let roofline = Roofline.measure(spec: spec, batchSize: batchSize)
        let copy = CopyBench.measure(floats: spec.parameterCount)

        var config = TrainingConfig()
        config.hidden = widths
        config.batchSize = batchSize
        config.epochs = epochs
        let trainer = try Trainer(config: config, train: train, test: test, source: LocalShardSource())
        // The first epoch warms the workspace and the pools; allocations are counted after it.
        var allocationsAfterWarmUp: Int?
        var stepsCounted = 0
        let interleaved = InterleavedRoofline(spec: spec, batchSize: batchSize)
        try trainer.run(onStep: { report in
            if report.epoch == 2 && report.stepInEpoch == 1 { allocationsAfterWarmUp = MallocCounter.count }
            if report.epoch >= 2 { stepsCounted += 1 }
            interleaved.stepFinished(report)
        })
        let allocationsEnd = MallocCounter.count
        let timedEpochs = trainer.history.dropFirst()
        let samples = timedEpochs.reduce(0.0) { $0 + $1.samplesPerSecond * $1.trainSeconds }
        // The roofline passes between blocks ran inside the timed epochs.
        let seconds = timedEpochs.reduce(0.0) { $0 + $1.trainSeconds } - interleaved.passSeconds
        let samplesPerSecond = samples / seconds
        let achievedGflops = samplesPerSecond * Double(spec.trainingFlopsPerSample) / 1e9

        var allocationsPerStep: Double?
        if let before = allocationsAfterWarmUp, let after = allocationsEnd, stepsCounted > 1 {
            // Epoch boundaries (shuffle, evaluation) allocate; count per step over whole epochs.
            allocationsPerStep = Double(after - before) / Double(stepsCounted)
        }

        let result = BenchResult(
            model: spec.description, batchSize: batchSize,
            flopsPerSample: spec.trainingFlopsPerSample,
            sgemmShapes: roofline.shapes, rooflineGflops: roofline.gflops,
            samplesPerSecond: samplesPerSecond, achievedGflops: achievedGflops,
            rooflineFraction: achievedGflops / roofline.gflops,
            interleaved: interleaved.figures,
            allocationsPerStep: allocationsPerStep,
            loadTrainCsvSeconds: loadTrainSeconds, loadTestCsvSeconds: loadTestSeconds,
            weightsCopy: copy,
            testAccuracy: trainer.history.last?.testAccuracy ?? 0)
        print(result.table)
        try json.map { try Self.write(result, to: $0) }
    }

    static func write(_ value: some Encodable, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(value).write(to: URL(fileURLWithPath: path))
    }

    /// The training and test sets, and the seconds each took to load.
    private func loadTimed() throws -> (train: Dataset, test: Dataset, trainSeconds: Double, testSeconds: Double) {
        let start = MonotonicClock.now
        let train = try DataDirectory.load(.train, from: data)
        let trainSeconds = MonotonicClock.now - start
        let test = try DataDirectory.load(.test, from: data)
        return (train, test, trainSeconds, MonotonicClock.now - start - trainSeconds)
    }
}

struct BenchResult: Codable {
    var model: String
    var batchSize: Int
    var flopsPerSample: Int
    var sgemmShapes: [Roofline.Shape]
    var rooflineGflops: Double
    var samplesPerSecond: Double
    var achievedGflops: Double
    var rooflineFraction: Double
    var interleaved: InterleavedRoofline.Figures?
    var allocationsPerStep: Double?
    var loadTrainCsvSeconds: Double
    var loadTestCsvSeconds: Double
    var weightsCopy: CopyBench.Figures
    var testAccuracy: Double

    var table: String {
        var lines = ["single-process benchmark: \(model), batch \(batchSize), \(flopsPerSample) matrix FLOPs per sample",
                     "  sgemm shapes of one step (one thread):"]
        for shape in sgemmShapes {
            lines.append(String(format: "    %-28@ %9.1f GFLOP/s", shape.name as NSString, shape.gflops))
        }
        lines += [
            String(format: "  sgemm roofline for the step        %9.1f GFLOP/s", rooflineGflops),
            String(format: "  training throughput                %9.0f samples/s = %.1f GFLOP/s", samplesPerSecond, achievedGflops),
            String(format: "  fraction of the roofline           %9.1f %%", rooflineFraction * 100),
        ]
        if let interleaved {
            lines.append(String(format: "  timed side by side (median of %d blocks of %d steps, each against the roofline just before and after it; roofline median %.1f GFLOP/s):",
                                interleaved.blocks, interleaved.stepsPerBlock, interleaved.medianRooflineGflops))
            lines.append(String(format: "  fraction of the roofline, side by side %5.1f %% (blocks %.1f–%.1f %%)",
                                interleaved.medianFraction * 100, interleaved.lowestFraction * 100, interleaved.highestFraction * 100))
        }
        lines += [
            "  allocations per step               " + (allocationsPerStep.map { String(format: "%9.2f", $0) } ?? "  n/a (run via scripts/bench.sh)"),
            String(format: "  load mnist_train.csv               %9.3f s", loadTrainCsvSeconds),
            String(format: "  load mnist_test.csv                %9.3f s", loadTestCsvSeconds),
            String(format: "  copy the weights (%d KB) into slot 0: memcpy %.1f µs (%.1f µs half a page further), BulkCopy %.1f µs",
                   weightsCopy.bytes / 1000, weightsCopy.memcpyAtSlotOffsetMicroseconds, weightsCopy.memcpyElsewhereMicroseconds,
                   weightsCopy.bulkCopyAtSlotOffsetMicroseconds),
            String(format: "  test accuracy after the run        %9.2f %%", testAccuracy * 100),
        ]
        return lines.joined(separator: "\n")
    }
}
