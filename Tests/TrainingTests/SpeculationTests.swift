import Foundation
import XCTest

/// Late shards re-run on idle workers, and the deadline on waiting for workers, with real
/// processes over real sockets.
final class SpeculationTests: XCTestCase {
    /// What a run with two workers, "fast" and "slow", whose slow one is stopped (SIGSTOP)
    /// for `stop` seconds near step 50, ended with, beside the same run with --local.
    private struct StoppedRun {
        var referenceSHA: String?
        var summary: [String: Any]
        var log: String
        var slowStats: [String: Any] {
            (summary["worker_stats"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "slow" } ?? [:]
        }
    }

    private func runWithTheSlowWorkerStopped(for stop: Double, steps: Int, coordinatorOptions: [String],
                                             tag: String) throws -> StoppedRun {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let settings = ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "1000",
                        "--max-steps", "\(steps)", "--shards", "2", "--seed", "5"]
        let reference = try runCoordinator(settings + ["--local", "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.errors)
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summaryPath = scratchFolder + "\(tag)-summary-\(getpid()).json"
        let metricsPath = scratchFolder + "\(tag)-metrics-\(getpid()).jsonl"
        defer { unlink(summaryPath); unlink(metricsPath) }
        let coordinator = try Child("coordinator", settings + [
            "--workers", "2", "--bind", endpoint, "--summary", summaryPath,
            "--metrics", metricsPath, "--metrics-every", "10"] + coordinatorOptions)
        let fast = try Child("worker", ["--connect", endpoint, "--name", "fast"])
        let slow = try Child("worker", ["--connect", endpoint, "--name", "slow"])
        // Once the scheduler has seen enough shard times to tell a late one.
        XCTAssertTrue(waitForStep(50, in: metricsPath, seconds: 120), coordinator.errors)
        kill(slow.pid, SIGSTOP)
        usleep(UInt32(stop * 1_000_000))
        kill(slow.pid, SIGCONT)
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        XCTAssertEqual(fast.wait(seconds: 30), 0, fast.errors)
        XCTAssertEqual(slow.wait(seconds: 30), 0, slow.errors)
        return StoppedRun(referenceSHA: reference.sha, summary: readSummary(summaryPath), log: coordinator.errors)
    }

    /// One worker stopped (SIGSTOP) for well under --worker-timeout: the other, idle, takes
    /// over its shards as re-runs; the stopped one is late, not lost; and the weights are
    /// those of the same run with --local, bit for bit.
    func testAStoppedWorkersShardsAreRerunAndTheWeightsStayTheSame() throws {
        let run = try runWithTheSlowWorkerStopped(for: 1.5, steps: 1500, coordinatorOptions: [
            "--worker-timeout", "30", "--log-level", "notice"], tag: "rerun")
        XCTAssertGreaterThan(run.summary["rerun_shards"] as? Int ?? 0, 0, run.log)
        XCTAssertEqual(run.summary["weights_sha256"] as? String, run.referenceSHA, run.log)
        XCTAssertGreaterThan(run.slowStats["times_late"] as? Int ?? 0, 0, "\(run.slowStats)")
        XCTAssertEqual(run.slowStats["times_lost"] as? Int, 0, "late, not lost: \(run.slowStats)")
        XCTAssertTrue(run.log.contains("is late on worker slow"), run.log)
    }

    /// A worker stopped (SIGSTOP) past --worker-timeout is lost as a suspect; running again,
    /// it earns full work back on probation instead of idling for the rest of the run, and
    /// the weights are those of --local.
    func testAWorkerOnceLatePastItsTimeoutComesBackToFullWork() throws {
        // 6,000 steps: on a quiet machine a step takes about a millisecond, and the stopped
        // worker needs a second or two after it runs again to earn its place back.
        let run = try runWithTheSlowWorkerStopped(for: 2.5, steps: 6000, coordinatorOptions: [
            "--worker-timeout", "1", "--log-level", "info"], tag: "probation")
        let (log, slowStats) = (run.log, run.slowStats)
        XCTAssertEqual(run.summary["weights_sha256"] as? String, run.referenceSHA, log)
        XCTAssertGreaterThanOrEqual(slowStats["times_lost"] as? Int ?? 0, 1, "\(slowStats)")
        XCTAssertGreaterThanOrEqual(slowStats["times_rejoined"] as? Int ?? 0, 1, "\(slowStats)\n\(log)")
        XCTAssertTrue(log.contains("on probation"), log)
        XCTAssertTrue(log.contains("worker slow is back"), log)
        // Full work again: stopped near step 50 and back a few seconds later, it still
        // computes a good share of 6,000 steps' shards (idle, it would have stayed near 50).
        XCTAssertGreaterThan(slowStats["shards_done"] as? Int ?? 0, 1000, "\(slowStats)")
    }

    /// --speculate-after 0: the same stop re-runs nothing (the step waits for the stopped
    /// worker), and the weights are the same; a negative factor is refused.
    func testSpeculateAfterZeroTurnsRerunsOff() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let refused = try runCoordinator(["--data", data, "--local", "--quiet", "--speculate-after=-1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.errors.contains("--speculate-after must be 0 (off) to 1000"), refused.errors)
        let run = try runWithTheSlowWorkerStopped(for: 1.5, steps: 300, coordinatorOptions: [
            "--worker-timeout", "30", "--quiet", "--speculate-after", "0"], tag: "no-rerun")
        XCTAssertEqual(run.summary["rerun_shards"] as? Int, 0, run.log)
        XCTAssertEqual(run.summary["weights_sha256"] as? String, run.referenceSHA, run.log)
    }

    /// Every worker gone and none coming back: the coordinator says so at once (under
    /// --quiet too) and gives up after --no-workers-timeout with a clear error.
    func testEveryWorkerGoneEndsTheRunAfterTheNoWorkersTimeout() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let metricsPath = scratchFolder + "gone-metrics-\(getpid()).jsonl"
        defer { unlink(metricsPath) }
        let coordinator = try Child("coordinator", ["--data", data, "--hidden", "32", "--epochs", "100000",
                                                    "--workers", "1", "--bind", endpoint, "--no-workers-timeout", "3",
                                                    "--metrics", metricsPath, "--metrics-every", "5", "--quiet"])
        let worker = try Child("worker", ["--connect", endpoint, "--name", "only"])
        XCTAssertTrue(waitForStep(10, in: metricsPath, seconds: 120), coordinator.errors)
        kill(worker.pid, SIGKILL)
        let start = Date()
        let status = coordinator.wait(seconds: 60)
        XCTAssertNotEqual(status, 0, coordinator.errors)
        XCTAssertLessThan(status, 128, coordinator.errors)
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 2.5, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("waiting for more to join"), coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("no progress for 3 s: 0 live workers"), coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("--no-workers-timeout"), coordinator.errors)
    }

    /// A spawned worker that dies while it is the only one is started again, and the run
    /// goes on to its end.
    func testASpawnedWorkerThatDiedIsStartedAgain() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let coordinator = try Child("coordinator", ["--data", data, "--hidden", "32", "--epochs", "1000",
                                                    "--max-steps", "3000", "--spawn-workers", "1",
                                                    "--bind", "tcp://127.0.0.1:\(freePort())", "--log-level", "notice"])
        let pid = try XCTUnwrap(waitForWorkerPID("worker-0", in: coordinator), coordinator.errors)
        usleep(300_000)
        kill(pid, SIGKILL)
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("restarted 1 spawned workers that had exited"), coordinator.errors)
    }

    private func waitForStep(_ step: Int, in metricsPath: String, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let text = (try? String(contentsOfFile: metricsPath, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
                if let reached = object?["step"] as? Int, reached >= step { return true }
            }
            usleep(10_000)
        }
        return false
    }
}
