import Foundation
import XCTest

/// The parameter service on one host, through shared memory, with real processes: beside
/// workers that use sockets, and when a spawned server is killed. (`ParameterServiceTests`
/// covers the hashes of served runs with and without shared memory.)
final class OneHostServiceTests: SyntheticDataTestCase {
    private var common: [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--max-steps", "40", "--epochs", "50",
         "--quiet", "--seed", "7", "--shards", "3"]
    }

    /// For runs whose log lines a test waits for (`--quiet` keeps only warnings).
    private var logged: [String] { common.filter { $0 != "--quiet" } }

    /// Mixed: two servers and a worker on the coordinator's host (shared memory), and a
    /// worker as if on another host (`--no-shared-memory`: sockets, to the servers too).
    /// The same hash as `--local`, every step through shared memory on this host.
    func testSharedMemoryAndSocketWorkersTogether() throws {
        let local = try runCoordinator(common + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        let port = freePort()
        let summary = scratchFolder + "ps-mixed-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let coordinator = try Child("coordinator", common + [
            "--workers", "3", "--parameter-servers", "2", "--bind", "tcp://127.0.0.1:\(port)", "--summary", summary])
        let workers = try ["--serve", "--serve", "--no-shared-memory"].enumerated().map { index, role in
            try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "m\(index)"]
                + (role == "--serve" ? ["--serve", "tcp://127.0.0.1:0"] : [role]))
        }
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, coordinator.errors)
        let service = result["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertEqual(service["shared_memory_steps"] as? Int, 40, coordinator.errors)
        // The socket worker computed its share (its gradients reached the servers by socket).
        let stats = result["worker_stats"] as? [[String: Any]] ?? []
        let remote = try XCTUnwrap(stats.first { $0["name"] as? String == "m2" })
        XCTAssertGreaterThan(remote["shards_done"] as? Int ?? 0, 0, "\(stats)")
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
    }

    /// Spawned workers, so the service goes through shared memory: a serving worker killed
    /// with SIGKILL is started again by the coordinator, which seeds its range from the last
    /// snapshot and replays the steps since, again through shared memory; the hash stays.
    func testAKilledSpawnedServerIsStartedAgainAndTheHashStays() throws {
        let steps = ["--max-steps", "400"]
        let local = try runCoordinator(common + steps + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        let summary = scratchFolder + "ps-spawn-kill-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let coordinator = try Child("coordinator", logged + steps + [
            "--spawn-workers", "3", "--parameter-servers", "2", "--bind", "tcp://127.0.0.1:*", "--snapshot-every", "10",
            "--worker-timeout", "2", "--log-level", "info", "--summary", summary])
        XCTAssertTrue(coordinator.waitFor(": through shared memory on this host", seconds: 60), coordinator.errors)
        // "parameter service generation 1 from step 0: worker-1 12736, worker-0 12714 parameters"
        let lines = coordinator.errors.components(separatedBy: "\n")
        let map = try XCTUnwrap(lines.first { $0.contains("generation 1 from step 0: worker-") })
        let server = try XCTUnwrap(map.components(separatedBy: "from step 0: ").last?.prefix { $0 != " " }).description
        let joined = try XCTUnwrap(lines.first { $0.contains("worker \(server) (pid ") })
        let pid = try XCTUnwrap(Int32(joined.components(separatedBy: "(pid ").last?.prefix { $0.isNumber } ?? ""))
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output)
        kill(pid, SIGKILL)
        XCTAssertEqual(coordinator.wait(seconds: 240), 0, coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, coordinator.errors)
        let service = result["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertGreaterThanOrEqual(service["rollbacks"] as? Int ?? 0, 1, coordinator.errors)
        XCTAssertGreaterThanOrEqual(service["generation"] as? Int ?? 0, 2)
        XCTAssertTrue(coordinator.errors.contains("restarted a spawned serving worker"), coordinator.errors)
        // The new generation through shared memory too, the replayed steps included.
        let generations = coordinator.errors.components(separatedBy: "\n").filter { $0.contains(": through shared memory on this host") }
        XCTAssertTrue(generations.contains { !$0.contains("generation 1 from") }, coordinator.errors)
        XCTAssertGreaterThanOrEqual(service["shared_memory_steps"] as? Int ?? 0, 400, coordinator.errors)
    }
}
