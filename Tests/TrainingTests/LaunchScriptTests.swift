import Foundation
import XCTest

/// scripts/launch.sh with a real ssh: the coordinator's host and a worker host are network
/// namespaces joined by a veth pair, with sshd (Debian's openssh-server, started by the
/// test) in the worker's. The namespace test needs root; CI runs as root.
final class LaunchScriptTests: XCTestCase {
    private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    private var script: URL { repository.appendingPathComponent("scripts/launch.sh") }
    private var binaries: String { try! executable("coordinator").deletingLastPathComponent().path }
    private var namespaces: [String] = []
    /// Pid files of daemons started here.
    private var daemons: [String] = []
    private var folders: [String] = []

    override func tearDown() {
        for pidFile in daemons {
            if let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
               let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 {
                kill(pid, SIGTERM)
            }
        }
        for namespace in namespaces { _ = try? run("/usr/sbin/ip", ["netns", "del", namespace]) }
        for folder in folders { try? FileManager.default.removeItem(atPath: folder) }
    }

    /// ssh fails (nothing listens on its port): the run stops at once with ssh's error
    /// instead of waiting for a worker that never comes.
    func testAHostSshCannotReachStopsTheRunAtOnce() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/ssh") else {
            throw XCTSkip("no ssh client (Debian: openssh-client; scripts/setup.sh installs it)")
        }
        let data = try makeSyntheticData(trainCount: 300, testCount: 50)
        folders.append(data)
        let start = Date()
        let launch = try Child(executable: script, ["--hosts", "127.0.0.1", "--ssh-option", "Port=\(freePort())",
                                                    "--port", "\(freePort())", "--bin", binaries,
                                                    "--", "--data", data, "--hidden", "16"])
        XCTAssertEqual(launch.wait(seconds: 60), 1, launch.errors)
        XCTAssertLessThan(Date().timeIntervalSince(start), 20, "it waited for the worker: \(launch.errors)")
        XCTAssertTrue(launch.errors.contains("could not start worker 127.0.0.1-1 (ssh exit 255)"), launch.errors)
        XCTAssertTrue(launch.errors.contains("Connection refused"), launch.errors)
    }

    /// Two workers over ssh train with per-run CURVE keys (never on a command line) to the
    /// weights of the local run; workers the coordinator refuses stop the run at once; and
    /// when a coordinator is killed, its remote workers are stopped at once, instead of
    /// lingering to join the next run.
    func testWorkersOverSshTrainSecurelyAndStopWithTheCoordinator() throws {
        let (coordinatorHost, workerHost, sshOptions) = try startHosts()
        let data = try makeSyntheticData(trainCount: 600, testCount: 100)
        folders.append(data)
        let settings = ["--data", data, "--hidden", "16", "--batch-size", "60", "--seed", "5", "--shards", "2"]
        let reference = try runCoordinator(settings + ["--epochs", "20", "--local", "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.errors)

        let summary = scratchFolder + "launch-\(UUID().uuidString.prefix(8)).json"
        defer { unlink(summary) }
        let launch = try startLaunch(in: coordinatorHost, host: workerHost, sshOptions: sshOptions,
                                     settings + ["--epochs", "20", "--summary", summary, "--log-level", "notice"])
        XCTAssertTrue(launch.waitFor("2 live", seconds: 60), launch.errors)
        assertSecretKeysStayOffCommandLines()
        XCTAssertEqual(launch.wait(seconds: 120), 0, launch.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, reference.sha, launch.errors)
        let names = (result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertEqual(Set(names), ["\(workerHost)-1", "\(workerHost)-2"])
        for pid in remoteWorkerPIDs(launch) { XCTAssertFalse(isRunning(pid), "worker pid \(pid) outlived the run") }

        // Workers the coordinator refuses (started for another model): the run stops at once
        // with their reason, instead of waiting 120 s for them.
        let start = Date()
        let refused = try startLaunch(in: coordinatorHost, host: workerHost, sshOptions: sshOptions,
                                      settings + ["--epochs", "20"], workerOptions: ["--hidden", "99"])
        XCTAssertEqual(refused.wait(seconds: 60), 1, refused.errors)
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, refused.errors)
        XCTAssertTrue(refused.errors.contains("could not start worker \(workerHost)-"), refused.errors)
        XCTAssertTrue(refused.errors.contains("model mismatch"), refused.errors)

        // The coordinator dies mid-run: launch.sh exits with its status and stops the workers,
        // which on their own would wait 10 s and then 120 s more for a coordinator.
        let killed = try startLaunch(in: coordinatorHost, host: workerHost, sshOptions: sshOptions,
                                     settings + ["--epochs", "100000", "--log-level", "notice"])
        XCTAssertTrue(killed.waitFor("2 live", seconds: 60), killed.errors)
        let coordinator = try XCTUnwrap(childPIDs(of: killed.pid).first { processName($0) == "coordinator" })
        kill(coordinator, SIGKILL)
        XCTAssertEqual(killed.wait(seconds: 20), 128 + SIGKILL, killed.errors)
        XCTAssertTrue(killed.errors.contains("the coordinator was killed by signal 9"), killed.errors)
        let workers = remoteWorkerPIDs(killed)
        XCTAssertEqual(workers.count, 2, killed.errors)
        let deadline = Date().addingTimeInterval(5)
        while workers.contains(where: isRunning) && Date() < deadline { usleep(50_000) }
        for pid in workers { XCTAssertFalse(isRunning(pid), "worker pid \(pid) outlived its coordinator") }
    }

    /// Over ssh, `--parameter-servers 2`: both workers on the other host serve at that
    /// host's address (worker --serve auto picks the one on the route to the coordinator,
    /// not loopback), encrypted with keys each server makes; then `--processes 2`: each
    /// worker computes on two processes, and the coordinator gets 2 x 2 shards. Both end
    /// with `--local`'s weights for their shard count.
    func testWorkersOverSshServeAParameterServiceAndRunHostProcesses() throws {
        let (coordinatorHost, workerHost, sshOptions) = try startHosts()
        let data = try makeSyntheticData(trainCount: 600, testCount: 100)
        folders.append(data)
        let settings = ["--data", data, "--hidden", "16", "--batch-size", "60", "--seed", "5", "--epochs", "1",
                        "--max-steps", "6"]
        for (launcherOptions, shards) in [(["--parameter-servers", "2"], 2), (["--processes", "2"], 4)] {
            let reference = try runCoordinator(settings + ["--shards", "\(shards)", "--local", "--quiet"])
            XCTAssertEqual(reference.status, 0, reference.errors)
            let summary = scratchFolder + "launch-service-\(UUID().uuidString.prefix(8)).json"
            defer { unlink(summary) }
            let launch = try startLaunch(in: coordinatorHost, host: workerHost, sshOptions: sshOptions,
                                         settings + ["--summary", summary, "--log-level", "info"],
                                         launcherOptions: launcherOptions)
            XCTAssertEqual(launch.wait(seconds: 120), 0, "\(launcherOptions): " + launch.errors)
            let result = readSummary(summary)
            XCTAssertEqual(result["weights_sha256"] as? String, reference.sha, "\(launcherOptions): " + launch.errors)
            XCTAssertEqual(result["shards"] as? Int, shards, launch.errors)
            if launcherOptions[0] == "--parameter-servers" {
                let servers = (result["parameter_service"] as? [String: Any])?["servers"] as? [Any]
                XCTAssertEqual(servers?.count, 2, launch.errors)
                XCTAssertTrue(launch.errors.contains("serving a parameter range at tcp://\(workerHost):"), launch.errors)
            } else {
                let slots = (result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["slots"] as? Int }
                XCTAssertEqual(slots, [2, 2], launch.errors)
            }
        }
    }

    // MARK: - Hosts

    /// Namespaces for the coordinator's host and the worker host, and sshd in the latter
    /// with a host key and an authorised client key made for this test.
    private func startHosts() throws -> (coordinatorHost: String, workerHost: String, sshOptions: [String]) {
        guard getuid() == 0 else { throw XCTSkip("network namespaces and sshd need root; run the tests as root to include this one") }
        for tool in ["/usr/sbin/ip", "/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            throw XCTSkip("\(tool) is missing (Debian: iproute2, openssh-server, openssh-client; scripts/setup.sh installs them)")
        }
        let tag = "zl\(getpid() % 100_000)"
        let (here, there) = (tag + "c", tag + "w")
        let subnet = "10.204.\(getpid() % 250)"
        for namespace in [here, there] {
            guard try run("/usr/sbin/ip", ["netns", "add", namespace]) == 0 else {
                throw XCTSkip("cannot create network namespaces here (ip netns add failed)")
            }
            namespaces.append(namespace)
        }
        for command in [["link", "add", here + "e", "type", "veth", "peer", "name", there + "e"],
                        ["link", "set", here + "e", "netns", here], ["link", "set", there + "e", "netns", there],
                        ["-n", here, "addr", "add", subnet + ".1/24", "dev", here + "e"],
                        ["-n", there, "addr", "add", subnet + ".2/24", "dev", there + "e"],
                        ["-n", here, "link", "set", here + "e", "up"], ["-n", there, "link", "set", there + "e", "up"],
                        ["-n", here, "link", "set", "lo", "up"], ["-n", there, "link", "set", "lo", "up"]] {
            XCTAssertEqual(try run("/usr/sbin/ip", command), 0, "ip \(command.joined(separator: " "))")
        }

        let folder = scratchFolder + "ssh-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        folders.append(folder)
        for key in ["host", "client"] {
            XCTAssertEqual(try run("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(folder)/\(key)"]), 0)
        }
        try FileManager.default.copyItem(atPath: folder + "/client.pub", toPath: folder + "/authorized_keys")
        try """
        ListenAddress \(subnet).2
        HostKey \(folder)/host
        AuthorizedKeysFile \(folder)/authorized_keys
        PidFile \(folder)/sshd.pid
        StrictModes no
        UsePAM no
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin prohibit-password

        """.write(toFile: folder + "/sshd_config", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)  // privilege separation
        // As a daemon: sshd closes every inherited descriptor, which Foundation's Process
        // takes for an exit, and then blocks its monitor thread waiting for it.
        daemons.append(folder + "/sshd.pid")
        XCTAssertEqual(try run("/usr/sbin/ip", ["netns", "exec", there, "/usr/sbin/sshd", "-f", folder + "/sshd_config",
                                                "-E", folder + "/sshd.log"]), 0)
        let deadline = Date().addingTimeInterval(20)
        func log() -> String { (try? String(contentsOfFile: folder + "/sshd.log", encoding: .utf8)) ?? "" }
        while !log().contains("Server listening") && Date() < deadline { usleep(20_000) }
        XCTAssertTrue(log().contains("Server listening"), log())
        let options = ["IdentityFile=\(folder)/client", "UserKnownHostsFile=\(folder)/known_hosts",
                       "StrictHostKeyChecking=accept-new"]
        return (here, subnet + ".2", options)
    }

    private func startLaunch(in namespace: String, host: String, sshOptions: [String], _ coordinatorOptions: [String],
                             workerOptions: [String] = [], launcherOptions: [String] = []) throws -> Child {
        // Namespaces share /dev/shm; hosts do not.
        var arguments = ["netns", "exec", namespace, script.path, "--hosts", host, "--workers-per-host", "2",
                         "--bin", binaries, "--worker-option", "--no-shared-memory"] + launcherOptions
        for option in sshOptions { arguments += ["--ssh-option", option] }
        for option in workerOptions { arguments += ["--worker-option", option] }
        return try Child(executable: URL(fileURLWithPath: "/usr/sbin/ip"), arguments + ["--"] + coordinatorOptions)
    }

    // MARK: - Processes

    /// While the workers run: each secret key file is private, and its key is on no
    /// process's command line (the keys went through ssh's standard input).
    private func assertSecretKeysStayOffCommandLines() {
        // This build's processes only: other test runs may share the machine.
        let commandLines = allCommandLines().filter { $0.first?.hasPrefix(binaries) ?? false }
        let keyFiles = commandLines.compactMap { arguments in
            arguments.firstIndex(of: "--curve-secret-key").flatMap { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : nil }
        }
        XCTAssertEqual(keyFiles.count, 3, "the coordinator and two workers, each with a key file")
        for path in keyFiles {
            XCTAssertTrue(path.hasPrefix("/"), "a key on a command line instead of a file: \(path)")
            let mode = (try? FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
            XCTAssertEqual(mode & 0o077, 0, "\(path) is readable by others")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                  let key = text.split(separator: "\n").first(where: { !$0.hasPrefix("#") }) else { continue }
            XCTAssertFalse(commandLines.contains { $0.joined(separator: " ").contains(key) }, "a secret key on a command line")
        }
    }

    private func allCommandLines() -> [[String]] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { $0.allSatisfy(\.isNumber) }.compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
            return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        }
    }

    /// The pids the remote side reported in "launch.sh: worker NAME started on HOST (pid N)".
    private func remoteWorkerPIDs(_ launch: Child) -> [Int32] {
        launch.errors.split(separator: "\n").filter { $0.hasPrefix("launch.sh: worker ") && $0.contains(" started on ") }
            .compactMap { line in line.split(separator: " ").last.flatMap { Int32($0.dropLast()) } }
    }

    private func childPIDs(of pid: Int32) -> [Int32] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return text.split(separator: " ").compactMap { Int32($0) }
    }

    private func processName(_ pid: Int32) -> String {
        ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
