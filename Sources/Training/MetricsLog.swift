import Foundation
import NeuralNet

/// `--metrics PATH`: JSON Lines, one object per epoch (`"kind": "epoch"`) and, with
/// `--metrics-every K`, one per K steps (`"kind": "steps"`). Every line is a complete JSON
/// object, flushed as it is written, so a run can be watched or plotted while it trains.
///
/// Fields: `kind`, `epoch`, `step` (global, after the update), `loss` and `accuracy` (training,
/// over the K steps or the epoch), `test_loss` and `test_accuracy` (epoch lines),
/// `learning_rate`, `samples_per_second`, `live_workers`, `elapsed_seconds` (since the run
/// started), and `ms_per_step` (time per step by phase: compute, send, network_wait,
/// receive, reduce, optimizer, batch; over the K steps or the epoch).
///
/// A line that cannot be written (a full disk) is thrown as an `OutputError`.
public final class MetricsLog {
    private let file: OutputFile
    private let every: Int?
    private let start = MonotonicClock.now
    private var window = BatchStatistics()
    private var windowSteps = 0
    private var windowStart = MonotonicClock.now
    private var windowTiming = StepTiming()
    private var epochTiming = StepTiming()
    private var epochStart = MonotonicClock.now
    private var epochFirstStep = 0

    /// Starts the log for `trainer`, before it runs: timings and steps count from here (a
    /// resumed run starts mid-epoch, with the timings of the steps it did not run at zero).
    public init(path: String, every: Int?, trainer: Trainer) throws {
        file = try OutputFile(creating: path)
        self.every = every
        windowTiming = trainer.combinedTiming
        epochTiming = windowTiming
        epochFirstStep = trainer.step
    }

    public func step(_ report: StepReport, trainer: Trainer) throws {
        guard let every, every > 0 else { return }
        window += report.batchStatistics
        windowSteps += 1
        guard windowSteps >= every else { return }
        let now = MonotonicClock.now
        let timing = trainer.combinedTiming
        try write([
            "kind": "steps", "epoch": report.epoch, "step": report.step,
            "loss": window.meanLoss, "accuracy": window.accuracy,
            "learning_rate": Double(report.learningRate),
            "samples_per_second": Double(window.sampleCount) / max(now - windowStart, 1e-9),
            "live_workers": trainer.liveWorkerCount,
            "elapsed_seconds": now - start,
            "ms_per_step": Self.perStep(timing, since: windowTiming, steps: windowSteps),
        ])
        window = BatchStatistics()
        windowSteps = 0
        windowStart = now
        windowTiming = timing
    }

    public func epoch(_ report: EpochReport, trainer: Trainer) throws {
        let timing = trainer.combinedTiming
        var line: [String: Any] = [
            "kind": "epoch", "epoch": report.epoch, "step": trainer.step,
            "loss": report.trainLoss, "accuracy": report.trainAccuracy,
            "learning_rate": Double(report.learningRate),
            "samples_per_second": report.samplesPerSecond,
            "live_workers": report.liveWorkers,
            "elapsed_seconds": MonotonicClock.now - start,
            "train_seconds": report.trainSeconds,
            "ms_per_step": Self.perStep(timing, since: epochTiming, steps: max(1, trainer.step - epochFirstStep)),
        ]
        if let loss = report.testLoss { line["test_loss"] = loss }
        if let accuracy = report.testAccuracy { line["test_accuracy"] = accuracy }
        try write(line)
        epochTiming = timing
        epochFirstStep = trainer.step
    }

    private static func perStep(_ now: StepTiming, since then: StepTiming, steps: Int) -> [String: Double] {
        let scale = 1000 / Double(max(steps, 1))
        return [
            "compute": (now.computeSeconds - then.computeSeconds) * scale,
            "send": (now.sendSeconds - then.sendSeconds) * scale,
            "network_wait": (now.networkWaitSeconds - then.networkWaitSeconds) * scale,
            "receive": (now.receiveSeconds - then.receiveSeconds) * scale,
            "reduce": (now.reduceSeconds - then.reduceSeconds) * scale,
            "optimizer": (now.optimizerSeconds - then.optimizerSeconds) * scale,
            "batch": (now.batchSeconds - then.batchSeconds) * scale,
        ]
    }

    private func write(_ object: [String: Any]) throws {
        // The values are numbers and strings of our own: serialisation cannot fail.
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        try file.write([UInt8](data) + [UInt8(ascii: "\n")])
    }
}
