import Foundation
import XCTest

/// Failures with real processes and sockets: each run must end with the weights of a run
/// without faults (same seed and shards), bit for bit.
final class FaultToleranceTests: SyntheticDataTestCase {
    /// Long enough (3,000 steps) to be interrupted in the middle.
    private func settings(shards: Int) -> [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200", "--max-steps", "3000",
         "--shards", "\(shards)", "--seed", "11", "--quiet", "--worker-timeout", "1"]
    }

    private func reference(shards: Int) throws -> String {
        let run = try runCoordinator(settings(shards: shards) + ["--local"])
        XCTAssertEqual(run.status, 0, run.errors)
        return run.sha
    }

    private func temporaryPath(_ name: String) -> String {
        scratchFolder + "\(name)-\(getpid())-\(UUID().uuidString.prefix(6))"
    }

    private func waitForFile(_ path: String, seconds: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if FileManager.default.fileExists(atPath: path) { return true }
            usleep(10_000)
        }
        return false
    }

    /// Starts a coordinator for `workers` hand-started workers and the workers themselves.
    private func startRun(workers: Int, shards: Int, extra: [String] = []) throws -> (Child, [Child], String) {
        let port = freePort()
        let endpoint = "tcp://127.0.0.1:\(port)"
        let summary = temporaryPath("summary") + ".json"
        let coordinator = try Child("coordinator", settings(shards: shards) + [
            "--workers", "\(workers)", "--bind", endpoint, "--summary", summary, "--log-level", "notice"] + extra)
        let children = try (0..<workers).map { index in
            try Child("worker", ["--connect", endpoint, "--name", "w\(index)", "--coordinator-timeout", "20"])
        }
        return (coordinator, children, summary)
    }

    func testAKilledWorkerAndAHungWorkerCostNothing() throws {
        let expected = try reference(shards: 3)
        for signal in [SIGKILL, SIGSTOP] {
            let checkpoint = temporaryPath("progress")
            let (coordinator, workers, summaryPath) = try startRun(
                workers: 3, shards: 3, extra: ["--checkpoint", checkpoint, "--checkpoint-every", "200"])
            // The first checkpoint says training is under way.
            XCTAssertTrue(waitForFile(checkpoint), coordinator.errors)
            kill(workers[1].pid, signal)
            XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
            let result = readSummary(summaryPath)
            XCTAssertEqual(result["weights_sha256"] as? String, expected, "signal \(signal):\n\(coordinator.errors)")
            XCTAssertGreaterThanOrEqual(result["lost_workers"] as? Int ?? 0, 1)
            XCTAssertTrue(coordinator.errors.contains("worker w1 is lost"), coordinator.errors)
            if signal == SIGSTOP {
                // Lost, but still there: the shutdown waits in its socket, and it stops when it
                // runs again instead of waiting out its timeout for a coordinator that is gone.
                kill(workers[1].pid, SIGCONT)
                XCTAssertEqual(workers[1].wait(seconds: 8), 0, workers[1].errors)
                XCTAssertFalse(workers[1].errors.contains("it is gone"), workers[1].errors)
            }
            for worker in [workers[0], workers[2]] { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
            unlink(checkpoint)
        }
    }

    func testAWorkerThatJoinsMidRunGetsShardsFromTheNextStep() throws {
        let expected = try reference(shards: 3)
        let checkpoint = temporaryPath("progress")
        let (coordinator, workers, summaryPath) = try startRun(
            workers: 1, shards: 3, extra: ["--checkpoint", checkpoint, "--checkpoint-every", "200"])
        XCTAssertTrue(waitForFile(checkpoint), coordinator.errors)
        let port = workers[0].process.arguments![1]
        let late = try Child("worker", ["--connect", port, "--name", "late"])
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        XCTAssertEqual(late.wait(seconds: 30), 0, late.errors)
        let result = readSummary(summaryPath)
        XCTAssertEqual(result["weights_sha256"] as? String, expected)
        let stats = result["worker_stats"] as? [[String: Any]] ?? []
        XCTAssertEqual(stats.count, 2)
        XCTAssertGreaterThan(stats.first { $0["name"] as? String == "late" }?["shards_done"] as? Int ?? 0, 0)
        unlink(checkpoint)
    }

    /// The coordinator stopped (SIGSTOP) for longer than the workers' --coordinator-timeout:
    /// they say hello again instead of exiting, and rejoin when it runs again.
    func testWorkersRejoinACoordinatorSilentLongerThanTheirTimeout() throws {
        let expected = try reference(shards: 2)
        let checkpoint = temporaryPath("progress")
        defer { unlink(checkpoint) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summaryPath = temporaryPath("summary") + ".json"
        let coordinator = try Child("coordinator", settings(shards: 2) + [
            "--workers", "2", "--bind", endpoint, "--summary", summaryPath, "--log-level", "notice",
            "--checkpoint", checkpoint, "--checkpoint-every", "200"])
        let workers = try (0..<2).map { index in
            try Child("worker", ["--connect", endpoint, "--name", "w\(index)", "--coordinator-timeout", "1",
                                 "--connect-timeout", "30"])
        }
        XCTAssertTrue(waitForFile(checkpoint), coordinator.errors)
        kill(coordinator.pid, SIGSTOP)
        for worker in workers { XCTAssertTrue(worker.waitFor("saying hello again", seconds: 15), worker.errors) }
        kill(coordinator.pid, SIGCONT)
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(readSummary(summaryPath)["weights_sha256"] as? String, expected, coordinator.errors)
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
    }

    /// The coordinator killed with SIGKILL and started again with --resume, while its workers
    /// (started by hand) keep running and join the new coordinator.
    func testACoordinatorKilledAndResumedEndsWithTheSameWeights() throws {
        let expected = try reference(shards: 2)
        let checkpoint = temporaryPath("checkpoint")
        let (first, workers, _) = try startRun(
            workers: 2, shards: 2, extra: ["--checkpoint", checkpoint, "--checkpoint-every", "150"])
        XCTAssertTrue(waitForFile(checkpoint), first.errors)
        kill(first.pid, SIGKILL)
        first.wait(seconds: 10)
        let endpoint = workers[0].process.arguments![1]
        let summaryPath = temporaryPath("summary") + ".json"
        let second = try Child("coordinator", settings(shards: 2) + [
            "--workers", "2", "--bind", endpoint, "--resume", checkpoint, "--summary", summaryPath])
        XCTAssertEqual(second.wait(seconds: 120), 0, second.errors)
        let result = readSummary(summaryPath)
        XCTAssertEqual(result["steps"] as? Int, 3000)
        XCTAssertEqual(result["weights_sha256"] as? String, expected, second.errors)
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
        unlink(checkpoint)
    }

    func testCorruptedAndMismatchedCheckpointsAreRefused() throws {
        let checkpoint = temporaryPath("checkpoint")
        defer { unlink(checkpoint) }
        let short = ["--data", data, "--hidden", "32", "--batch-size", "60", "--max-steps", "20", "--quiet"]
        XCTAssertEqual(try runCoordinator(short + ["--local", "--checkpoint", checkpoint]).status, 0)
        let mismatched = try runCoordinator(short + ["--local", "--resume", checkpoint, "--learning-rate", "0.05"])
        XCTAssertNotEqual(mismatched.status, 0)
        XCTAssertTrue(mismatched.errors.contains("belongs to another run: --learning-rate 0.2 (checkpoint) vs 0.05"),
                      mismatched.errors)
        var bytes = [UInt8](FileManager.default.contents(atPath: checkpoint)!)
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: checkpoint))
        let corrupted = try runCoordinator(short + ["--local", "--resume", checkpoint])
        XCTAssertNotEqual(corrupted.status, 0)
        XCTAssertTrue(corrupted.errors.contains("checksum mismatch"), corrupted.errors)
    }

    func testADivergingRunStopsNamingTheStepAndKeepsTheLastGoodCheckpoint() throws {
        let checkpoint = temporaryPath("checkpoint")
        defer { unlink(checkpoint) }
        let run = try runCoordinator(["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "3",
                                      "--learning-rate", "1e30", "--momentum", "0", "--quiet", "--local",
                                      "--checkpoint", checkpoint, "--checkpoint-every", "1"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.errors.contains("NaN or infinite at step"), run.errors)
        XCTAssertTrue(run.errors.contains("lower --learning-rate"), run.errors)
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint), "the last good checkpoint is kept")
    }
}
