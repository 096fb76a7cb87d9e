import Foundation
import XCTest

/// A coordinator and two workers on three hosts of their own: network namespaces joined by
/// veth pairs. One worker's link is cut in the middle of the run for longer than its
/// --coordinator-timeout, then restored: the worker rejoins, and the run finishes with the
/// weights of an undisturbed run. Needs root (and `ip` from iproute2); skipped otherwise.
final class NetworkNamespaceTests: XCTestCase {
    private var namespaces: [String] = []

    override func tearDown() {
        for namespace in namespaces { _ = try? ip(["netns", "del", namespace]) }
    }

    @discardableResult
    private func ip(_ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    private func setUpHosts() throws -> (coordinator: String, workers: [(namespace: String, coordinatorAddress: String)], links: [(String, String)]) {
        guard getuid() == 0 else { throw XCTSkip("network namespaces need root; run the tests as root to include this one") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { throw XCTSkip("no /usr/sbin/ip (install iproute2)") }
        let tag = String(getpid() % 100_000)
        let coordinator = "zt\(tag)c"
        guard try ip(["netns", "add", coordinator]) == 0 else {
            throw XCTSkip("cannot create network namespaces here (ip netns add failed)")
        }
        namespaces.append(coordinator)
        try ip(["-n", coordinator, "link", "set", "lo", "up"])
        var workers: [(String, String)] = []
        var links: [(String, String)] = []
        for (index, name) in ["a", "b"].enumerated() {
            let namespace = "zt\(tag)\(name)"
            guard try ip(["netns", "add", namespace]) == 0 else { throw XCTSkip("ip netns add \(namespace) failed") }
            namespaces.append(namespace)
            let near = "zt\(tag)c\(name)", far = "zt\(tag)\(name)c"
            let subnet = "10.201.\(index + 1)"
            for command in [["link", "add", near, "type", "veth", "peer", "name", far],
                            ["link", "set", near, "netns", coordinator],
                            ["link", "set", far, "netns", namespace],
                            ["-n", coordinator, "addr", "add", "\(subnet).1/24", "dev", near],
                            ["-n", namespace, "addr", "add", "\(subnet).2/24", "dev", far],
                            ["-n", coordinator, "link", "set", near, "up"],
                            ["-n", namespace, "link", "set", far, "up"],
                            ["-n", namespace, "link", "set", "lo", "up"]] {
                guard try ip(command) == 0 else {
                    throw XCTSkip("cannot build the test network here: `ip \(command.joined(separator: " "))` failed")
                }
            }
            workers.append((namespace, "\(subnet).1"))
            links.append((coordinator, near))
        }
        return (coordinator, workers, links)
    }

    func testAWorkerCutOffLongerThanItsTimeoutRejoinsWhenItsLinkIsBack() throws {
        let hosts = try setUpHosts()
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let settings = ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200", "--max-steps", "3000",
                        "--shards", "2", "--seed", "21", "--quiet", "--worker-timeout", "1"]
        let reference = try runCoordinator(settings + ["--local"])
        XCTAssertEqual(reference.status, 0, reference.errors)

        let ipPath = URL(fileURLWithPath: "/usr/sbin/ip")
        let summary = scratchFolder + "netns-summary-\(getpid()).json"
        let checkpoint = scratchFolder + "netns-progress-\(getpid())"
        defer { unlink(summary); unlink(checkpoint) }
        let coordinator = try Child(executable: ipPath, ["netns", "exec", hosts.coordinator, try executable("coordinator").path]
            + settings + ["--workers", "2", "--bind", "tcp://0.0.0.0:5555", "--insecure", "--summary", summary,
                          "--checkpoint", checkpoint, "--checkpoint-every", "200", "--log-level", "notice",
                          // Training waits for the cut-off worker, so it can only end if it rejoins.
                          "--min-workers", "2"])
        // Namespaces share /dev/shm; hosts do not: no shared memory or pipes past the link.
        let workers = try hosts.workers.map { host in
            try Child(executable: ipPath, ["netns", "exec", host.namespace, try executable("worker").path,
                                           "--connect", "tcp://\(host.coordinatorAddress):5555", "--name", host.namespace,
                                           "--coordinator-timeout", "3", "--no-shared-memory"])
        }
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: checkpoint) && Date() < deadline { usleep(10_000) }
        XCTAssertTrue(FileManager.default.fileExists(atPath: checkpoint), coordinator.errors)

        let (namespace, link) = hosts.links[1]
        XCTAssertEqual(try ip(["-n", namespace, "link", "set", link, "down"]), 0)
        // Past its 3 s --coordinator-timeout the worker keeps saying hello instead of exiting.
        XCTAssertTrue(workers[1].waitFor("saying hello again", seconds: 20), workers[1].errors)
        usleep(1_000_000)
        XCTAssertTrue(isRunning(workers[1].pid), workers[1].errors)
        XCTAssertEqual(try ip(["-n", namespace, "link", "set", link, "up"]), 0)
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, reference.sha, coordinator.errors)
        XCTAssertGreaterThanOrEqual(result["lost_workers"] as? Int ?? 0, 1)
        let cutOff = (result["worker_stats"] as? [[String: Any]] ?? []).first { $0["name"] as? String == hosts.workers[1].namespace }
        XCTAssertGreaterThanOrEqual(cutOff?["times_rejoined"] as? Int ?? 0, 1, coordinator.errors)
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
    }
}
