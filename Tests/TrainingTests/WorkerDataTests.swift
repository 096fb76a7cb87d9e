import Foundation
import NeuralNet
import Training
import XCTest

/// `worker --data DIR`: real coordinator and worker processes over real sockets on loopback.
/// A worker whose training set is the coordinator's gets sample indices instead of samples;
/// one with other data, or none, gets the samples; the weights end bit for bit the same.
final class WorkerDataTests: SyntheticDataTestCase {
    private var common: [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--max-steps", "40", "--epochs", "50", "--quiet", "--seed", "7"]
    }

    /// Runs a coordinator for `workers` (each a worker's extra arguments, `--name` first)
    /// and returns its summary and log, and the workers' logs by name.
    private func distributedRun(_ arguments: [String], workers: [[String]]) throws
        -> (summary: [String: Any], coordinator: Child, workers: [String: Child]) {
        let port = freePort()
        let summaryPath = scratchFolder + "worker-data-\(getpid())-\(UUID().uuidString.prefix(8)).json"
        defer { try? FileManager.default.removeItem(atPath: summaryPath) }
        let coordinator = try Child("coordinator", common + arguments + ["--workers", "\(workers.count)",
                                                                         "--bind", "tcp://127.0.0.1:\(port)", "--summary", summaryPath])
        var children: [String: Child] = [:]
        for worker in workers {
            children[worker[1]] = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--log-level", "info"] + worker)
        }
        XCTAssertEqual(coordinator.wait(), 0, coordinator.errors)
        for (name, child) in children { XCTAssertEqual(child.wait(), 0, "\(name): \(child.errors)") }
        return (readSummary(summaryPath), coordinator, children)
    }

    private func dataPaths(_ summary: [String: Any]) -> [String: String] {
        var paths: [String: String] = [:]
        for worker in summary["worker_stats"] as? [[String: Any]] ?? [] {
            paths[worker["name"] as? String ?? "?"] = worker["data"] as? String ?? "?"
        }
        return paths
    }

    /// One worker by socket with the data set gets indices, one by socket without gets
    /// pixels, one on this host with the data set keeps shared memory; same bits as --local.
    func testWorkersWithTheTrainingSetGetIndicesAndMatchTheLocalRun() throws {
        let local = try runCoordinator(common + ["--local", "--shards", "3"])
        XCTAssertEqual(local.status, 0, local.errors)
        let run = try distributedRun(["--shards", "3"], workers: [
            ["--name", "remote-data", "--no-shared-memory", "--data", data],
            ["--name", "remote-bare", "--no-shared-memory"],
            ["--name", "near-data", "--data", data],
        ])
        XCTAssertEqual(run.summary["weights_sha256"] as? String, local.sha, run.coordinator.errors)
        XCTAssertEqual(dataPaths(run.summary), ["remote-data": "indices", "remote-bare": "pixels", "near-data": "shared memory"],
                       run.coordinator.errors)
        // Every task of the worker with indices was gathered from its own copy, and it did some.
        let remote = try XCTUnwrap(run.workers["remote-data"]).errors
        let gathered = try XCTUnwrap(remote.range(of: #"(\d+) of (\d+) tasks gathered"#, options: .regularExpression), remote)
        let counts = remote[gathered].split(separator: " ").compactMap { Int($0) }
        XCTAssertEqual(counts.count, 2, remote)
        XCTAssertGreaterThan(counts.first ?? 0, 0, remote)
        XCTAssertEqual(counts.first, counts.last, remote)
        XCTAssertFalse(remote.contains("malformed"), remote)
        // (The worker on this host may gather its first tasks too: until its shared memory is
        // attached, its socket link sends indices.)
    }

    /// A worker whose training set differs (the coordinator uses only the first 600 samples)
    /// is named in one line and gets pixels; one that loads the same 600 gets indices. The
    /// run ends where --local does.
    func testAWorkerWithOtherDataGetsPixelsAndTheRunStaysExact() throws {
        let limit = ["--train-limit", "600"]
        let local = try runCoordinator(common + limit + ["--local", "--shards", "2"])
        XCTAssertEqual(local.status, 0, local.errors)
        let run = try distributedRun(limit + ["--shards", "2"], workers: [
            ["--name", "whole-set", "--no-shared-memory", "--data", data],
            ["--name", "same-600", "--no-shared-memory", "--data", data, "--train-limit", "600"],
        ])
        XCTAssertEqual(run.summary["weights_sha256"] as? String, local.sha, run.coordinator.errors)
        XCTAssertEqual(dataPaths(run.summary), ["whole-set": "pixels", "same-600": "indices"], run.coordinator.errors)
        let log = run.coordinator.errors
        XCTAssertEqual(log.components(separatedBy: "worker whole-set's training set differs from this coordinator's").count - 1, 1, log)
        XCTAssertFalse(log.contains("same-600's training set differs"), log)
        let whole = run.workers["whole-set"]?.errors ?? ""
        XCTAssertNotNil(whole.range(of: #"\s0 of [1-9]\d* tasks gathered"#, options: .regularExpression), whole)
    }
}
