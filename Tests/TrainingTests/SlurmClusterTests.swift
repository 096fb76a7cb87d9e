import Foundation
import XCTest

/// scripts/cluster.sh under a real Slurm: munged, slurmctld and slurmd (Debian's slurm-wlm
/// and munge) started by the test on this one node, with a minimal slurm.conf, a munge key
/// and ports of their own in a temporary folder, and stopped afterwards. Needs root (CI
/// runs as root); skipped otherwise.
final class SlurmClusterTests: XCTestCase {
    private var folder = ""
    private var data = ""
    private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    private var script: String { repository.appendingPathComponent("scripts/cluster.sh").path }
    private var binaries: String { try! executable("coordinator").deletingLastPathComponent().path }
    private var slurm: [String: String] { ["SLURM_CONF": folder + "/slurm.conf"] }

    /// Long enough (1,000 steps) to kill a worker in the middle.
    private var training: [String] {
        ["--data", data, "--hidden", "16", "--batch-size", "60", "--epochs", "400", "--max-steps", "1000", "--seed", "5"]
    }

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("a Slurm of its own needs root; run the tests as root to include this one") }
        for tool in ["munged", "slurmctld", "slurmd"] where !FileManager.default.isExecutableFile(atPath: "/usr/sbin/" + tool) {
            throw XCTSkip("/usr/sbin/\(tool) is missing (Debian: slurm-wlm, munge; scripts/setup.sh installs them)")
        }
        folder = scratchFolder + "slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder + "/state", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: folder + "/spool", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: folder + "/munge", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        data = try makeSyntheticData(trainCount: 600, testCount: 100)
        try startSlurm()
    }

    override func tearDown() {
        // slurmd first, so that no step outlives its controller.
        for name in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
            guard let text = try? String(contentsOfFile: "\(folder)/\(name)", encoding: .utf8),
                  let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else { continue }
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while kill(pid, 0) == 0 && Date() < deadline { usleep(20_000) }
        }
        if !folder.isEmpty { try? FileManager.default.removeItem(atPath: folder) }
        if !data.isEmpty { try? FileManager.default.removeItem(atPath: data) }
    }

    /// One `srun` job, and a job whose rank 0 cannot start: the other rank stops at once
    /// with its error instead of waiting 120 s.
    func testSrunJobsOfClusterScript() throws {
        let reference = try runCoordinator(training + ["--local", "--shards", "2", "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.errors)
        let summary = folder + "/srun.json"
        // 3 tasks on a node of 2 CPUs: without --overcommit the job would wait for CPUs forever.
        let job = try srun(["--ntasks", "3", "--overcommit", script, "--bin", binaries, "--"] + training
                           + ["--quiet", "--summary", summary])
        XCTAssertEqual(job.wait(seconds: 120), 0, job.output + job.errors)
        XCTAssertEqual(readSummary(summary)["weights_sha256"] as? String, reference.sha, job.errors)

        // A parameter service of two ranges, served by the worker ranks (worker --serve
        // auto), each of which computes on two processes: 2 x 2 shards, `--local`'s weights.
        let short = ["--data", data, "--hidden", "16", "--batch-size", "60", "--epochs", "1", "--max-steps", "6", "--seed", "5"]
        let served = try runCoordinator(short + ["--local", "--shards", "4", "--quiet"])
        XCTAssertEqual(served.status, 0, served.errors)
        let serviceSummary = folder + "/srun-service.json"
        let service = try srun(["--ntasks", "3", "--overcommit", script, "--bin", binaries, "--parameter-servers", "2",
                                "--processes", "2", "--"] + short + ["--quiet", "--summary", serviceSummary])
        XCTAssertEqual(service.wait(seconds: 120), 0, service.output + service.errors)
        let result = readSummary(serviceSummary)
        XCTAssertEqual(result["weights_sha256"] as? String, served.sha, service.errors)
        XCTAssertEqual(((result["parameter_service"] as? [String: Any])?["servers"] as? [Any])?.count, 2, service.errors)
        XCTAssertEqual((result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["slots"] as? Int }, [2, 2])

        let start = Date()
        let failing = try srun(["--ntasks", "2", "--overcommit", script, "--bin", binaries, "--",
                                "--data", folder + "/missing", "--quiet"])
        XCTAssertNotEqual(failing.wait(seconds: 60), 0)
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, failing.errors)
        XCTAssertTrue(failing.errors.contains("rank 1: rank 0 failed"), failing.errors)
        XCTAssertTrue(failing.errors.contains("missing"), failing.errors)
    }

    /// A batch job with two steps in one allocation (each with a rendezvous of its own); in
    /// the second, a worker is killed mid-run. Both steps end with the fault-free weights,
    /// and the job succeeds.
    func testBatchJobWithTwoStepsOneWithAKilledWorker() throws {
        let reference = try runCoordinator(training + ["--local", "--shards", "2", "--quiet"])
        XCTAssertEqual(reference.status, 0, reference.errors)
        let step = { (index: Int) -> String in
            let options = (self.training + ["--log-level", "notice", "--worker-timeout", "1",
                                            "--summary", "\(self.folder)/step\(index).json",
                                            "--checkpoint", "\(self.folder)/step\(index).checkpoint",
                                            "--checkpoint-every", "100"]).joined(separator: " ")
            return "srun --overcommit --output \(self.folder)/step\(index).out --error \(self.folder)/step\(index).err "
                + "\(self.script) --bin \(self.binaries) -- \(options)"
        }
        try """
        #!/bin/bash
        #SBATCH --ntasks=3 --overcommit
        \(step(0))
        \(step(1))

        """.write(toFile: folder + "/job.sh", atomically: true, encoding: .utf8)
        let job = try Child(executable: URL(fileURLWithPath: "/usr/bin/sbatch"),
                            ["--wait", "--chdir", folder, "--output", folder + "/job.out", folder + "/job.sh"],
                            environment: slurm)

        // In the second step: rank 2's worker, once training is under way.
        let deadline = Date().addingTimeInterval(120)
        var victim: Int32?
        while victim == nil && Date() < deadline && job.process.isRunning {
            let log = (try? String(contentsOfFile: folder + "/step1.err", encoding: .utf8)) ?? ""
            if FileManager.default.fileExists(atPath: folder + "/step1.checkpoint"),
               let range = log.range(of: "worker rank-2 (pid ") {
                victim = Int32(log[range.upperBound...].prefix { $0.isNumber })
            }
            usleep(20_000)
        }
        let pid = try XCTUnwrap(victim, "the second step never got under way: \(job.errors)")
        XCTAssertEqual(kill(pid, SIGKILL), 0)

        XCTAssertEqual(job.wait(seconds: 180), 0, job.errors + stepLogs())
        for index in 0...1 {
            let result = readSummary("\(folder)/step\(index).json")
            XCTAssertEqual(result["weights_sha256"] as? String, reference.sha, "step \(index): " + stepLogs())
            XCTAssertEqual(result["lost_workers"] as? Int, index, "step \(index): " + stepLogs())
        }
        let step1 = (try? String(contentsOfFile: folder + "/step1.err", encoding: .utf8)) ?? ""
        XCTAssertTrue(step1.contains("rank 2: the worker was killed by signal 9"), step1)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix(".zmqt-endpoint") }
        XCTAssertEqual(leftovers, [], "rank 0 removes each step's rendezvous")
    }

    // MARK: - The cluster

    private func startSlurm() throws {
        let key = (0..<1024).map { _ in UInt8.random(in: 0...255) }
        FileManager.default.createFile(atPath: folder + "/munge/munge.key", contents: Data(key),
                                       attributes: [.posixPermissions: 0o600])
        let socket = folder + "/munge/socket"
        XCTAssertEqual(runDetached("/usr/sbin/munged", ["--force", "--socket=" + socket, "--key-file=\(folder)/munge/munge.key",
                                                        "--pid-file=\(folder)/munge/munged.pid", "--log-file=\(folder)/munge/munged.log",
                                                        "--seed-file=\(folder)/munge/seed"]), 0, "munged did not start")
        // Ports of its own, so that a Slurm already on this machine is left alone.
        try """
        ClusterName=zmqtest
        SlurmctldHost=localhost
        SlurmctldPort=\(freePort())
        SlurmdPort=\(freePort())
        AuthType=auth/munge
        AuthInfo=socket=\(socket)
        CredType=cred/munge
        NodeName=localhost CPUs=\(ProcessInfo.processInfo.activeProcessorCount) State=UNKNOWN
        PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_CPU
        SlurmUser=root
        SlurmdUser=root
        MpiDefault=none
        JobAcctGatherType=jobacct_gather/none
        ReturnToService=2
        StateSaveLocation=\(folder)/state
        SlurmdSpoolDir=\(folder)/spool
        SlurmctldPidFile=\(folder)/slurmctld.pid
        SlurmdPidFile=\(folder)/slurmd.pid
        SlurmctldLogFile=\(folder)/slurmctld.log
        SlurmdLogFile=\(folder)/slurmd.log

        """.write(toFile: folder + "/slurm.conf", atomically: true, encoding: .utf8)
        XCTAssertEqual(runDetached("/usr/sbin/slurmctld", ["-f", folder + "/slurm.conf"], environment: slurm), 0)
        XCTAssertEqual(runDetached("/usr/sbin/slurmd", ["-N", "localhost", "-f", folder + "/slurm.conf"], environment: slurm), 0)
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let sinfo = try Child(executable: URL(fileURLWithPath: "/usr/bin/sinfo"), ["-h", "-o", "%T"], environment: slurm)
            if sinfo.wait(seconds: 10) == 0, sinfo.output.contains("idle") { return }
            usleep(200_000)
        }
        throw SlurmNotReady(log: (try? String(contentsOfFile: folder + "/slurmctld.log", encoding: .utf8)) ?? "")
    }

    private struct SlurmNotReady: Error, CustomStringConvertible {
        let log: String
        var description: String { "the Slurm node never became idle; slurmctld.log:\n" + log }
    }

    private func srun(_ arguments: [String]) throws -> Child {
        try Child(executable: URL(fileURLWithPath: "/usr/bin/srun"), arguments, environment: slurm)
    }

    private func stepLogs() -> String {
        (0...1).map { "\n--- step \($0):\n" + ((try? String(contentsOfFile: "\(folder)/step\($0).err", encoding: .utf8)) ?? "") }
            .joined()
    }
}
