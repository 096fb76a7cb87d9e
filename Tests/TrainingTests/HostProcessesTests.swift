import Foundation
import XCTest

/// `worker --processes K` with real processes over real sockets: hosts started by hand, each
/// one link upstream with K compute processes behind it, give `--local`'s hash, one
/// gradient per host per step, and survive a killed process or a killed host.
final class HostProcessesTests: SyntheticDataTestCase {
    private func common(steps: Int, seed: Int = 7) -> [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "64", "--max-steps", "\(steps)", "--epochs", "500",
         "--seed", "\(seed)", "--shards", "4"]
    }

    /// A coordinator for `workers` hand-started workers on a free port, and its summary's path.
    private func coordinator(_ arguments: [String], workers: Int) throws -> (Child, port: Int, summary: String) {
        let port = freePort()
        let summary = scratchFolder + "hosts-\(UUID().uuidString.prefix(8)).json"
        let child = try Child("coordinator", arguments + ["--workers", "\(workers)", "--bind", "tcp://127.0.0.1:\(port)",
                                                          "--summary", summary])
        return (child, port, summary)
    }

    private func host(_ name: String, port: Int, processes: Int = 2, _ extra: [String] = []) throws -> Child {
        try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", name, "--processes", "\(processes)",
                             "--log-level", "info"] + extra)
    }

    /// Two hosts of two processes, four shards: each host gets an aligned block of two and
    /// answers it with one fp32 sum; the hash is `--local --shards 4`'s, plain and with fp16
    /// on the wire and dropout (masks keyed on the run's shard numbers).
    func testTwoHostsOfTwoProcessesReproduceTheLocalRun() throws {
        let steps = 30
        for extra in [[], ["--wire-precision", "fp16", "--dropout", "0.2"]] {
            let local = try runCoordinator(common(steps: steps) + extra + ["--local", "--quiet"])
            XCTAssertEqual(local.status, 0, local.errors)
            let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + extra + ["--quiet"], workers: 2)
            let hosts = try ["host-a", "host-b"].map { try host($0, port: port) }
            XCTAssertEqual(coordinator.wait(), 0, coordinator.errors)
            for host in hosts { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
            let summary = readSummary(summaryPath)
            XCTAssertEqual(summary["weights_sha256"] as? String, local.sha, "\(extra)\n\(coordinator.errors)")
            XCTAssertEqual(summary["gradients_received"] as? Int, 2 * steps, "one gradient per host per step")
            let workers = summary["worker_stats"] as? [[String: Any]] ?? []
            XCTAssertEqual(workers.compactMap { $0["slots"] as? Int }, [2, 2])
            XCTAssertEqual(workers.compactMap { $0["results"] as? Int }, [steps, steps])
            XCTAssertEqual(workers.compactMap { $0["shards_done"] as? Int }, [2 * steps, 2 * steps])
            for host in hosts {
                XCTAssertTrue(host.errors.contains("2 compute processes on this host behind one link"), host.errors)
            }
        }
    }

    /// The same two hosts, each also serving a range of a two-server parameter service:
    /// `--local`'s hash.
    func testTwoHostsServingAParameterServiceReproduceTheLocalRun() throws {
        let steps = 20
        let local = try runCoordinator(common(steps: steps) + ["--local", "--quiet"])
        let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + ["--quiet", "--parameter-servers", "2"],
                                                               workers: 2)
        let hosts = try ["host-a", "host-b"].map { try host($0, port: port, ["--serve", "tcp://127.0.0.1:0"]) }
        XCTAssertEqual(coordinator.wait(), 0, coordinator.errors)
        for host in hosts { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
        XCTAssertEqual(readSummary(summaryPath)["weights_sha256"] as? String, local.sha,
                       coordinator.errors + hosts.map(\.errors).joined())
    }

    /// A compute process killed with SIGKILL mid-run is replaced on its host; a whole host
    /// (agent and processes) killed with SIGKILL loses its block's shards to the others,
    /// shard by shard. The hash stays `--local`'s.
    func testAKilledProcessIsReplacedAndAKilledHostsShardsMove() throws {
        let steps = 600
        let local = try runCoordinator(common(steps: steps) + ["--local", "--quiet"])
        XCTAssertEqual(local.status, 0, local.errors)
        let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + ["--worker-timeout", "2"], workers: 3)
        let hostA = try host("host-a", port: port)
        let hostB = try host("host-b", port: port)
        let plain = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "plain"])
        let childOfA = try XCTUnwrap(waitForWorkerPID("worker-0", in: hostA), hostA.errors)
        let childOfB = try XCTUnwrap(waitForWorkerPID("worker-1", in: hostB), hostB.errors)
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output + coordinator.errors)
        kill(childOfA, SIGKILL)
        XCTAssertTrue(hostA.waitFor("restarted a compute process of this host", seconds: 30), hostA.errors)
        kill(childOfB, SIGKILL)
        kill(hostB.pid, SIGKILL)
        XCTAssertTrue(coordinator.waitFor("host-b is lost", seconds: 30), coordinator.errors)
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        for worker in [hostA, plain] { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, local.sha, coordinator.errors)
        XCTAssertGreaterThanOrEqual(summary["lost_workers"] as? Int ?? 0, 1)
        // The plain worker computed host-b's shards once it was gone.
        let plainStats = (summary["worker_stats"] as? [[String: Any]] ?? []).first { $0["name"] as? String == "plain" }
        XCTAssertGreaterThan(plainStats?["shards_done"] as? Int ?? 0, 0)
    }

    /// A coordinator SIGKILLed mid-run and another started at the same endpoint with other
    /// weights (another seed): the hosts join it with the same processes, and no process
    /// computes with weights of the first run for a step number both runs have.
    func testHostsJoinANewCoordinatorAndComputeWithItsWeights() throws {
        let local = try runCoordinator(common(steps: 40, seed: 11) + ["--local", "--quiet"])
        XCTAssertEqual(local.status, 0, local.errors)
        let (first, port, _) = try coordinator(common(steps: 5000), workers: 2)
        let hosts = try ["host-a", "host-b"].map { try host($0, port: port, ["--coordinator-timeout", "1"]) }
        XCTAssertTrue(first.waitFor("epoch  1/", seconds: 120), first.output + first.errors)
        kill(first.pid, SIGKILL)
        _ = first.wait(seconds: 10)
        let summaryPath = scratchFolder + "hosts-second-\(UUID().uuidString.prefix(8)).json"
        let second = try Child("coordinator", common(steps: 40, seed: 11) + ["--quiet", "--workers", "2",
                                                                   "--bind", "tcp://127.0.0.1:\(port)", "--summary", summaryPath])
        XCTAssertEqual(second.wait(), 0, second.errors)
        for host in hosts { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
        XCTAssertEqual(readSummary(summaryPath)["weights_sha256"] as? String, local.sha, second.errors)
        for host in hosts {
            XCTAssertEqual(host.errors.components(separatedBy: "compute processes on this host behind one link").count, 2,
                           "the same processes serve the second session:\n\(host.errors)")
        }
    }
}
