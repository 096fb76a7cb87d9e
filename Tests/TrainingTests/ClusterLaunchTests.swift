import Foundation
import XCTest

/// scripts/cluster.sh under a real `mpirun` (Debian's openmpi-bin), and under Slurm's
/// environment variables set by hand: rank 0 coordinates, the other ranks work, and the
/// result is the same run as `--local` with as many shards. SlurmClusterTests runs it under
/// a real Slurm.
final class ClusterLaunchTests: XCTestCase {
    private var data = ""
    private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    override func setUpWithError() throws { data = try makeSyntheticData(trainCount: 600, testCount: 100) }
    override func tearDown() { try? FileManager.default.removeItem(atPath: data) }

    private var training: [String] {
        ["--data", data, "--hidden", "16", "--batch-size", "60", "--epochs", "2", "--seed", "5", "--quiet"]
    }

    private var script: URL { repository.appendingPathComponent("scripts/cluster.sh") }
    private var binaries: String { try! executable("coordinator").deletingLastPathComponent().path }

    /// Rank 0 coordinates, ranks 1 and 2 work; rank 2's worker is killed mid-run. Open MPI
    /// would abort the whole job if a rank died: cluster.sh outlives its worker, so the job
    /// ends as the coordinator does, with the weights of the undisturbed run.
    func testMpirunJobOutlivesAKilledWorker() throws {
        guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("mpirun is not installed (Debian: openmpi-bin; scripts/setup.sh installs it)")
        }
        let long = ["--data", data, "--hidden", "16", "--batch-size", "60", "--epochs", "400", "--max-steps", "3000", "--seed", "5"]
        let local = try runCoordinator(long + ["--local", "--shards", "2", "--quiet"])
        XCTAssertEqual(local.status, 0, local.errors)

        let summary = scratchFolder + "cluster-\(UUID().uuidString.prefix(8)).json"
        let checkpoint = scratchFolder + "cluster-progress-\(UUID().uuidString.prefix(8))"
        defer { unlink(summary); unlink(checkpoint) }
        // Not --quiet: the progress lines must come out plain although Open MPI gives each
        // rank a terminal.
        let job = try Child(executable: URL(fileURLWithPath: mpirun),
                            ["--oversubscribe", "-np", "3", script.path, "--bin", binaries, "--"] + long
                            + ["--summary", summary, "--log-level", "notice", "--worker-timeout", "1",
                               "--checkpoint", checkpoint, "--checkpoint-every", "100"],
                            // CI runs as root, which Open MPI refuses unless told.
                            environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        let victim = try XCTUnwrap(waitForWorkerPID("rank-2", in: job), job.errors)
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: checkpoint) && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(kill(victim, SIGKILL), 0)

        XCTAssertEqual(job.wait(seconds: 120), 0, job.output + job.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["workers"] as? Int, 2)
        let names = (result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertEqual(Set(names), ["rank-1", "rank-2"])
        XCTAssertEqual(result["lost_workers"] as? Int, 1, job.errors)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, job.errors)
        XCTAssertTrue(job.errors.contains("rank 2: the worker was killed by signal 9"), job.errors)
        XCTAssertTrue(job.output.contains("epoch "), job.output)
        XCTAssertFalse(job.output.contains("\u{1B}["), "terminal escape codes in a job's log")
    }

    /// Under a real mpirun, `--parameter-servers 2`: every worker rank offers to serve on
    /// its host's address towards rank 0 (worker --serve auto), two serve; then
    /// `--processes 2`: each worker rank computes on two processes, and the coordinator gets
    /// 2 x 2 shards. Both end with `--local`'s weights for their shard count.
    func testMpirunJobsWithAParameterServiceAndHostProcesses() throws {
        guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("mpirun is not installed (Debian: openmpi-bin; scripts/setup.sh installs it)")
        }
        let short = training + ["--max-steps", "6"]
        for (launcherOptions, shards) in [(["--parameter-servers", "2"], 2), (["--processes", "2"], 4)] {
            let local = try runCoordinator(short + ["--local", "--shards", "\(shards)"])
            XCTAssertEqual(local.status, 0, local.errors)
            let summary = scratchFolder + "cluster-service-\(UUID().uuidString.prefix(8)).json"
            defer { unlink(summary) }
            let job = try Child(executable: URL(fileURLWithPath: mpirun),
                                ["--oversubscribe", "-np", "3", script.path, "--bin", binaries] + launcherOptions
                                + ["--"] + short + ["--summary", summary],
                                environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
            XCTAssertEqual(job.wait(seconds: 120), 0, "\(launcherOptions): " + job.output + job.errors)
            let result = readSummary(summary)
            XCTAssertEqual(result["weights_sha256"] as? String, local.sha, "\(launcherOptions): " + job.errors)
            XCTAssertEqual(result["shards"] as? Int, shards, job.errors)
            if launcherOptions[0] == "--parameter-servers" {
                let service = result["parameter_service"] as? [String: Any] ?? [:]
                XCTAssertEqual((service["servers"] as? [Any])?.count, 2, job.errors)
            } else {
                let slots = (result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["slots"] as? Int }
                XCTAssertEqual(slots, [2, 2], job.errors)
            }
        }
    }

    /// Wrong launcher options stop every rank at once with one line.
    func testLauncherOptionsAreChecked() throws {
        for (options, message) in [(["--processes", "3"], "--processes takes a power of two from 1 to 256 (got '3')"),
                                   (["--parameter-servers", "x"], "--parameter-servers takes a positive integer (got 'x')"),
                                   (["--parameter-servers", "2"], "--parameter-servers 2 needs at least 2 workers")] {
            let rank = try Child(executable: script, ["--bin", binaries] + options + ["--"] + training,
                                 environment: ["SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
                                               "SLURM_JOB_ID": "4246", "SLURM_STEP_ID": "0"])
            XCTAssertEqual(rank.wait(seconds: 30), 2, rank.errors)
            XCTAssertTrue(rank.errors.contains("cluster.sh: " + message), rank.errors)
        }
    }

    /// What srun gives each task: SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_ID, SLURM_NNODES.
    func testSlurmRanksFromTheEnvironment() throws {
        let local = try runCoordinator(training + ["--local", "--shards", "2"])
        let folder = scratchFolder + "slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let summary = folder + "/summary.json"
        // An earlier step's file, as a killed step leaves it: no rank may take it for this one's.
        try "zmqt-rendezvous 1\nrun slurm-4242.0\nendpoint tcp://127.0.0.1:1\n"
            .write(toFile: folder + "/endpoint", atomically: true, encoding: .utf8)
        var tasks: [Child] = []
        for rank in [2, 1, 0] {  // workers first: they wait for the rendezvous file
            tasks.append(try Child(executable: script, ["--rendezvous", folder + "/endpoint", "--bin", binaries, "--"]
                                   + training + ["--summary", summary],
                                   environment: ["SLURM_PROCID": "\(rank)", "SLURM_NTASKS": "3", "SLURM_NNODES": "1",
                                                 "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1"]))
            if rank == 1 { usleep(300_000) }  // the workers are reading the stale file now
        }
        for task in tasks { XCTAssertEqual(task.wait(seconds: 120), 0, task.errors) }
        let result = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: summary))) as? [String: Any])
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha)
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/endpoint"), "rank 0 removes the rendezvous file")

        // Without a rank, the script says how to start it.
        let lone = try Child(executable: script, ["--bin", binaries])
        XCTAssertEqual(lone.wait(), 2)
        XCTAssertTrue(lone.errors.contains("start it with mpirun or srun"), lone.errors)
    }

    /// Rank 0 cannot start (no data): the other ranks stop within seconds with its error,
    /// instead of waiting 120 s for an endpoint.
    func testRanksStopWithRankZerosError() throws {
        let folder = scratchFolder + "slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let start = Date()
        var tasks: [Child] = []
        for rank in [1, 0] {
            tasks.append(try Child(executable: script, ["--rendezvous", folder + "/endpoint", "--bin", binaries, "--",
                                                        "--data", folder + "/missing", "--quiet"],
                                   environment: ["SLURM_PROCID": "\(rank)", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
                                                 "SLURM_JOB_ID": "4243", "SLURM_STEP_ID": "0"]))
        }
        let (worker, coordinator) = (tasks[0], tasks[1])
        XCTAssertNotEqual(coordinator.wait(seconds: 60), 0)
        XCTAssertEqual(worker.wait(seconds: 30), coordinator.process.terminationStatus, worker.errors)
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, "the worker rank waited for an endpoint that never came")
        XCTAssertTrue(worker.errors.contains("rank 1: rank 0 failed"), worker.errors)
        XCTAssertTrue(worker.errors.contains("missing"), "rank 0's error names the missing folder: \(worker.errors)")
    }

    /// A launcher stopping the job may signal rank 0's script only: the coordinator stops
    /// with it, and the other ranks follow with its status. A worker rank's script killed
    /// outright takes its worker with it.
    func testAStoppedRankZeroStopsItsCoordinatorAndTheOtherRanks() throws {
        let folder = scratchFolder + "slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var tasks: [Child] = []
        for rank in [2, 1, 0] {
            tasks.append(try Child(executable: script, ["--rendezvous", folder + "/endpoint", "--bin", binaries, "--",
                                                        "--data", data, "--hidden", "16", "--epochs", "100000",
                                                        "--log-level", "notice"],
                                   environment: ["SLURM_PROCID": "\(rank)", "SLURM_NTASKS": "3", "SLURM_NNODES": "1",
                                                 "SLURM_JOB_ID": "4244", "SLURM_STEP_ID": "0"]))
        }
        let (orphaned, worker, rankZero) = (tasks[0], tasks[1], tasks[2])
        XCTAssertTrue(rankZero.waitFor("2 live", seconds: 60), rankZero.errors)
        let orphan = try XCTUnwrap(waitForWorkerPID("rank-2", in: rankZero), rankZero.errors)
        kill(orphaned.pid, SIGKILL)
        let deadline = Date().addingTimeInterval(5)
        while isRunning(orphan) && Date() < deadline { usleep(50_000) }
        XCTAssertFalse(isRunning(orphan), "a worker outlived its rank's script")

        let children = ((try? String(contentsOfFile: "/proc/\(rankZero.pid)/task/\(rankZero.pid)/children", encoding: .utf8)) ?? "")
            .split(separator: " ").compactMap { Int32($0) }
        let coordinator = try XCTUnwrap(children.first { pid in
            ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").hasPrefix("coordinator")
        })
        kill(rankZero.pid, SIGTERM)
        XCTAssertEqual(rankZero.wait(seconds: 20), 128 + SIGTERM, rankZero.errors)
        XCTAssertFalse(isRunning(coordinator), "the coordinator outlived its rank")
        XCTAssertEqual(worker.wait(seconds: 20), 128 + SIGTERM, worker.errors)
        XCTAssertTrue(worker.errors.contains("rank 0 failed (exit 143): the coordinator was stopped by signal 15"), worker.errors)
    }

    /// Started from another folder without --data, the coordinator reads this checkout's
    /// data/ (where fetch-mnist.sh puts MNIST), not the current folder's.
    func testTheDataFolderDoesNotDependOnTheCurrentFolder() throws {
        let elsewhere = scratchFolder + "elsewhere-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: elsewhere, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: elsewhere) }
        // Rank 0 alone: it loads the data, then gives up waiting for its worker.
        let rankZero = try Child(executable: URL(fileURLWithPath: "/bin/sh"),
                                 ["-c", "cd \"$1\" && exec \"$2\" --bin \"$3\" -- --quiet --startup-timeout 1",
                                  "sh", elsewhere, script.path, binaries],
                                 environment: ["SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_NNODES": "1",
                                               "SLURM_JOB_ID": "4245", "SLURM_STEP_ID": "0"])
        XCTAssertNotEqual(rankZero.wait(seconds: 120), 0)
        let dataFolder = repository.appendingPathComponent("data").path
        if FileManager.default.fileExists(atPath: dataFolder + "/mnist_train.csv") {
            XCTAssertTrue(rankZero.errors.contains("0 of 1 workers connected"), rankZero.errors)
        } else {
            XCTAssertTrue(rankZero.errors.contains(dataFolder), rankZero.errors)
        }
    }
}
