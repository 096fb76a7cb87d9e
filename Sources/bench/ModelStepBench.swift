import ArgumentParser
import Foundation
import MNISTData
import NeuralNet
import Training

/// `bench --model`: the project's single-process training step (the trainer's own loop, one
/// shard, one thread) on any typed model, timed over a fixed number of steps after a
/// warm-up, beside the sgemm roofline of exactly that step's products. scripts/convbench.sh
/// runs it in rounds interleaved with PyTorch's same network.
struct ModelStepBench {
    var data: String
    var model: String
    var batchSize: Int
    var steps: Int
    var warmUpSteps: Int
    var learningRate: Float

    struct Figures: Codable {
        var model: String
        var batchSize: Int
        var parameters: Int
        var flopsPerSample: Int
        var steps: Int
        var samplesPerSecond: Double
        var achievedGflops: Double
        var sgemmShapes: [Roofline.Shape]
        var rooflineGflops: Double
        var rooflineFraction: Double
        var interleaved: InterleavedRoofline.Figures?
        var allocationsPerStep: Double?
        var finalLoss: Double
    }

    func run() throws -> Figures {
        BLAS.setThreadCount(1)
        let train = try DataDirectory.load(.train, from: data)
        var config = TrainingConfig()
        config.model = model
        config.batchSize = batchSize
        config.learningRate = learningRate
        config.epochs = 1
        config.maximumSteps = warmUpSteps + steps
        let trainer = try Trainer(config: config, train: train, test: nil, source: LocalShardSource())
        let spec = trainer.model.spec
        guard steps > 0, warmUpSteps >= 0, trainer.totalSteps == warmUpSteps + steps else {
            throw ValidationError("--steps \(steps) after --warm-up-steps \(warmUpSteps) must be positive and fit one epoch (\(trainer.stepsPerEpoch) steps of \(batchSize))")
        }
        let roofline = Roofline.measure(spec: spec, batchSize: batchSize)
        // Blocks of 5 steps against a roofline pass before and after each.
        let interleaved = InterleavedRoofline(spec: spec, batchSize: batchSize, stepsPerBlock: 5, firstEpoch: 1)
        var start = 0.0, passSecondsAtStart = 0.0
        var allocationsAtStart: Int?, allocationsAtEnd: Int?
        var lastLoss = 0.0
        try trainer.run(onStep: { report in
            if report.step == warmUpSteps {
                allocationsAtStart = MallocCounter.count
                passSecondsAtStart = interleaved.passSeconds
                start = MonotonicClock.now
            }
            // Counted up to the last step's end: the run's own ending (its history) allocates.
            if report.step == warmUpSteps + steps { allocationsAtEnd = MallocCounter.count }
            if report.step > warmUpSteps { interleaved.stepFinished(report) }
            lastLoss = report.batchStatistics.meanLoss
        })
        let seconds = MonotonicClock.now - start - (interleaved.passSeconds - passSecondsAtStart)
        let samplesPerSecond = Double(steps * batchSize) / seconds
        let achieved = samplesPerSecond * Double(spec.trainingFlopsPerSample) / 1e9
        var allocationsPerStep: Double?
        if let before = allocationsAtStart, let after = allocationsAtEnd {
            allocationsPerStep = Double(after - before) / Double(steps)
        }
        return Figures(model: spec.description, batchSize: batchSize, parameters: spec.parameterCount,
                       flopsPerSample: spec.trainingFlopsPerSample, steps: steps,
                       samplesPerSecond: samplesPerSecond, achievedGflops: achieved,
                       sgemmShapes: roofline.shapes, rooflineGflops: roofline.gflops,
                       rooflineFraction: achieved / roofline.gflops, interleaved: interleaved.figures,
                       allocationsPerStep: allocationsPerStep, finalLoss: lastLoss)
    }
}

extension ModelStepBench.Figures {
    var table: String {
        var lines = ["single-process training step: \(model) (\(parameters) parameters), batch \(batchSize), one thread",
                     "  \(flopsPerSample) matrix FLOPs per sample; sgemm shapes of one step:"]
        for shape in sgemmShapes {
            lines.append("    " + shape.name.padding(toLength: 40, withPad: " ", startingAt: 0)
                         + String(format: " %9.1f GFLOP/s", shape.gflops))
        }
        lines += [
            String(format: "  sgemm roofline for the step        %9.1f GFLOP/s", rooflineGflops),
            String(format: "  training throughput (%d steps)     %9.0f samples/s = %.1f GFLOP/s", steps, samplesPerSecond, achievedGflops),
            String(format: "  fraction of the roofline           %9.1f %%", rooflineFraction * 100),
        ]
        if let interleaved {
            lines.append(String(format: "  side by side: median of %d blocks of %d steps %.1f %% (blocks %.1f–%.1f %%; roofline median %.1f GFLOP/s)",
                                interleaved.blocks, interleaved.stepsPerBlock, interleaved.medianFraction * 100,
                                interleaved.lowestFraction * 100, interleaved.highestFraction * 100,
                                interleaved.medianRooflineGflops))
        }
        lines.append("  allocations per step               " + (allocationsPerStep.map { String(format: "%9.2f", $0) } ?? "  n/a (preload scripts/malloc-counter.c)"))
        lines.append(String(format: "  mean loss of the last step         %9.4f", finalLoss))
        return lines.joined(separator: "\n")
    }
}
