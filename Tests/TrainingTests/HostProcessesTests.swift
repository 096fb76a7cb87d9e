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

    /// The same two hosts, each also serving a range of a two-server parameter service,
    /// plain and with fp16 on the wire: `--local`'s hash, and each host sends each server one
    /// range of its block per step (fp32), not one per shard: a server takes two ranges a
    /// step, the coordinator counts two receipts per server a step (four shards: eight if
    /// they came shard by shard; a re-run that reaches a server before its block adds one).
    func testTwoHostsServingAParameterServiceReproduceTheLocalRun() throws {
        let steps = 20
        for extra in [[], ["--wire-precision", "fp16"]] {
            let local = try runCoordinator(common(steps: steps) + extra + ["--local", "--quiet"])
            let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + extra + ["--quiet", "--parameter-servers", "2"],
                                                                   workers: 2)
            let hosts = try ["host-a", "host-b"].map { try host($0, port: port, ["--serve", "tcp://127.0.0.1:0"]) }
            XCTAssertEqual(coordinator.wait(), 0, coordinator.errors)
            for host in hosts { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
            let log = coordinator.errors + hosts.map(\.errors).joined()
            let summary = readSummary(summaryPath)
            XCTAssertEqual(summary["weights_sha256"] as? String, local.sha, "\(extra)\n\(log)")
            let receipts = (summary["parameter_service"] as? [String: Any])?["receipts"] as? Int ?? 0
            XCTAssertGreaterThanOrEqual(receipts, 2 * 2 * steps, log)
            XCTAssertLessThan(receipts, 2 * 2 * steps + steps, "one receipt per host's block and server, \(extra)\n\(log)")
            for host in hosts {
                let ranges = host.errors.components(separatedBy: "steps from ").dropFirst().first?.prefix { $0.isNumber }
                let taken = Int(ranges ?? "") ?? 0
                XCTAssertGreaterThanOrEqual(taken, 2 * steps, host.errors)
                XCTAssertLessThan(taken, 2 * steps + steps / 2, "two ranges a step, one per host:\n\(host.errors)")
            }
        }
    }

    /// Both processes of a host stopped (SIGSTOP) for 2.5 s while they compute its block: the
    /// host's agent goes on sending heartbeats upstream meanwhile, and takes the messages
    /// waiting from the coordinator as word from it (with `--coordinator-timeout 2` it does
    /// not say hello again); the other host re-runs the late shards, whose ranges may reach
    /// the servers before the block (which then replaces them); the hash stays `--local`'s.
    func testAHostWhoseProcessesStallKeepsItsLinkAliveAndTheServiceItsBits() throws {
        let steps = 1000
        let local = try runCoordinator(common(steps: steps) + ["--local", "--quiet"])
        let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + ["--parameter-servers", "2"], workers: 2)
        let hosts = try ["host-a", "host-b"].map {
            try host($0, port: port, ["--serve", "tcp://127.0.0.1:0", "--coordinator-timeout", "2"])
        }
        let children = ["worker-0", "worker-1"].compactMap { waitForWorkerPID($0, in: hosts[0]) }
        XCTAssertEqual(children.count, 2, hosts[0].errors)
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output + coordinator.errors)
        for child in children { kill(child, SIGSTOP) }
        usleep(2_500_000)
        for child in children { kill(child, SIGCONT) }
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        for host in hosts { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
        XCTAssertEqual(readSummary(summaryPath)["weights_sha256"] as? String, local.sha, coordinator.errors)
        let heartbeats = hosts[0].errors.components(separatedBy: " heartbeats sent upstream while").first?
            .split(separator: " ").last.flatMap { Int($0) } ?? 0
        XCTAssertGreaterThanOrEqual(heartbeats, 1, hosts[0].errors)
        XCTAssertFalse(hosts[0].errors.contains("saying hello again"), hosts[0].errors)
    }

    /// With a parameter service: a host's compute process killed (replaced on its host), then
    /// a whole host that serves a range killed (its shards go to the others shard by shard,
    /// its range to the spare serving host, and the run rolls back and replays): the hash
    /// stays `--local`'s.
    func testWithAServiceAKilledProcessHostAndServerLeaveTheHash() throws {
        let steps = 300
        let local = try runCoordinator(common(steps: steps) + ["--local", "--quiet"])
        let (coordinator, port, summaryPath) = try coordinator(common(steps: steps) + ["--parameter-servers", "2",
                                                                                       "--worker-timeout", "2", "--snapshot-every", "10"],
                                                               workers: 3)
        let hosts = try ["host-a", "host-b", "host-c"].map { try host($0, port: port, ["--serve", "tcp://127.0.0.1:0"]) }
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output + coordinator.errors)
        let servers = hosts.filter { $0.errors.contains("parameter server: serving parameters") }
        let spare = try XCTUnwrap(hosts.first { !$0.errors.contains("parameter server: serving parameters") }, coordinator.errors)
        XCTAssertEqual(servers.count, 2, coordinator.errors)
        let child = try XCTUnwrap(waitForWorkerPID("worker-0", in: spare), spare.errors)
        kill(child, SIGKILL)
        XCTAssertTrue(spare.waitFor("restarted a compute process of this host", seconds: 30), spare.errors)
        let victim = servers[0]
        let victimChildren = ["worker-0", "worker-1"].compactMap { waitForWorkerPID($0, in: victim) }
        kill(victim.pid, SIGKILL)
        for pid in victimChildren { kill(pid, SIGKILL) }
        XCTAssertTrue(coordinator.waitFor("rolling back to the last snapshot", seconds: 60), coordinator.errors)
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        for host in hosts where host !== victim { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, local.sha, coordinator.errors)
        XCTAssertGreaterThanOrEqual((summary["parameter_service"] as? [String: Any])?["rollbacks"] as? Int ?? 0, 1)
        XCTAssertTrue(spare.errors.contains("parameter server: serving parameters"), "the spare took the lost range:\n\(spare.errors)")
    }

    /// With a parameter service and eight shards over three hosts of two processes (two of
    /// them serving): the host that does not serve killed with SIGKILL mid-run (agent and
    /// processes) loses its blocks to the others, shard by shard; `--local`'s hash. No server
    /// is lost: the run rolls back only if the kill fell between the host's sends to the two
    /// servers (`testAWorkerLostBetweenItsSendsToTheServersLosesNoServer` forces that case).
    func testWithAServiceAKilledHostsShardsMoveShardByShard() throws {
        let steps = 600
        var arguments = common(steps: steps)
        arguments[arguments.firstIndex(of: "--shards")! + 1] = "8"
        let local = try runCoordinator(arguments + ["--local", "--quiet"])
        let (coordinator, port, summaryPath) = try coordinator(arguments + ["--parameter-servers", "2", "--worker-timeout", "2"],
                                                               workers: 3)
        let servers = try ["host-a", "host-b"].map { try host($0, port: port, ["--serve", "tcp://127.0.0.1:0"]) }
        let plain = try host("host-c", port: port)
        let children = ["worker-0", "worker-1"].compactMap { waitForWorkerPID($0, in: plain) }
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output + coordinator.errors)
        kill(plain.pid, SIGKILL)
        for pid in children { kill(pid, SIGKILL) }
        XCTAssertTrue(coordinator.waitFor("host-c is lost", seconds: 30), coordinator.errors)
        XCTAssertEqual(coordinator.wait(seconds: 300), 0, coordinator.errors)
        for host in servers { XCTAssertEqual(host.wait(seconds: 30), 0, host.errors) }
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, local.sha, coordinator.errors)
        let service = summary["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertLessThanOrEqual(service["rollbacks"] as? Int ?? 99, 1, coordinator.errors)
        XCTAssertEqual(service["generation"] as? Int, 1 + (service["rollbacks"] as? Int ?? 0), coordinator.errors)
        XCTAssertFalse(coordinator.errors.contains("parameter server host-"), coordinator.errors)
        XCTAssertGreaterThanOrEqual(summary["lost_workers"] as? Int ?? 0, 1)
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
