import Foundation
import NeuralNet

/// What a person watching the run sees: a progress line during the epoch (redrawn in place
/// on a terminal, a plain line every 10 s otherwise), one line per epoch, and a summary.
/// A failed write (a full disk, a closed pipe) is thrown, so that the run stops saying so.
public final class ConsoleReporter {
    private let quiet: Bool
    private let isTerminal: Bool
    private var lastDraw = 0.0

    public init(quiet: Bool) {
        self.quiet = quiet
        self.isTerminal = isatty(STDOUT_FILENO) == 1
    }

    public func step(_ report: StepReport) throws {
        guard !quiet else { return }
        let now = MonotonicClock.now
        if lastDraw == 0 { lastDraw = now }
        let interval = isTerminal ? 0.2 : 10
        guard now - lastDraw > interval else { return }
        lastDraw = now
        let rate = Double(report.epochSamples) / max(report.epochElapsedSeconds, 1e-9)
        let remaining = Double(report.stepsPerEpoch - report.stepInEpoch) / Double(report.stepInEpoch) * report.epochElapsedSeconds
        let line = String(format: "epoch %d  step %d/%d  loss %.4f  %.0f samples/s  ETA %.1fs",
                          report.epoch, report.stepInEpoch, report.stepsPerEpoch,
                          report.batchStatistics.meanLoss, rate, remaining)
        try write(isTerminal ? "\r\u{1B}[2K" + line : line + "\n")
    }

    public func epoch(_ report: EpochReport, of epochs: Int) throws {
        guard !quiet else { return }
        if isTerminal { try write("\r\u{1B}[2K") }
        let test = report.testAccuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "–"
        let testLoss = report.testLoss.map { String(format: "%.4f", $0) } ?? "–"
        try write(String(format: "epoch %2d/%d  train loss %.4f  train acc %.2f%%  test loss %@  test acc %@  lr %.5f  %.0f samples/s\n",
                     report.epoch, epochs, report.trainLoss, report.trainAccuracy * 100, testLoss, test,
                     report.learningRate, report.samplesPerSecond))
    }

    public func summary(_ summary: RunSummary) throws {
        guard !quiet else { return }
        var lines = [
            "",
            "run summary (\(summary.mode), \(summary.model), "
                + (summary.mode == "local" ? "" : "\(summary.workers) worker\(summary.workers == 1 ? "" : "s"), ")
                + "\(summary.shards) shard\(summary.shards == 1 ? "" : "s"))",
            String(format: "  test accuracy   %@", summary.testAccuracy.map { String(format: "%.2f%%", $0 * 100) } ?? "–"),
            String(format: "  test loss       %@", summary.testLoss.map { String(format: "%.4f", $0) } ?? "–"),
            String(format: "  steps           %d in %d epochs (batch %d)", summary.steps, summary.epochs, summary.batchSize),
            String(format: "  training time   %.2f s, %.0f samples/s", summary.trainSeconds, summary.samplesPerSecond),
            String(format: "  time per step   compute %.3f ms, send %.3f ms, network wait %.3f ms, receive %.3f ms, reduce %.3f ms, optimizer %.3f ms",
                   perStep(summary.timing.computeSeconds, summary), perStep(summary.timing.sendSeconds, summary),
                   perStep(summary.timing.networkWaitSeconds, summary), perStep(summary.timing.receiveSeconds, summary),
                   perStep(summary.timing.reduceSeconds, summary), perStep(summary.timing.optimizerSeconds, summary)),
            "  weights sha256  \(summary.weightsSha256)",
        ]
        if summary.mode == "distributed" {
            lines.append("  network         \(summary.rejectedMessages) rejected messages, \(summary.staleResults) stale results, \(summary.lostWorkers) workers lost, \(summary.rerunShards) late shards re-run")
            if !summary.workerStats.isEmpty {
                lines.append("  worker              steps   shards   mean compute   lost   rejoined   late")
                for worker in summary.workerStats {
                    let name = worker.name.count >= 18 ? worker.name : worker.name + String(repeating: " ", count: 18 - worker.name.count)
                    lines.append(String(format: "  %@ %6d   %6d   %9.3f ms   %4d   %8d   %4d",
                                        name, worker.stepsDone, worker.shardsDone,
                                        worker.meanComputeMilliseconds, worker.timesLost, worker.timesRejoined, worker.timesLate))
                }
            }
        }
        try write(lines.joined(separator: "\n") + "\n")
    }

    private func perStep(_ seconds: Double, _ summary: RunSummary) -> Double {
        summary.steps == 0 ? 0 : seconds / Double(summary.steps) * 1000
    }

    private func write(_ text: String) throws {
        try OutputFile.standardOutput.write(text)
    }
}
