import Foundation
import XCTest

/// scripts/cluster.sh under a real `mpirun` (Debian's openmpi-bin), and under Slurm's
/// environment variables set by hand: rank 0 coordinates, the other ranks work, and the
/// result is the same run as `--local` with as many shards.
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

    func testMpirunStartsTheWholeJobByRank() throws {
        guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("mpirun is not installed (Debian: openmpi-bin; scripts/setup.sh installs it)")
        }
        let local = try runCoordinator(training + ["--local", "--shards", "2"])
        XCTAssertEqual(local.status, 0, local.errors)

        let summary = scratchFolder + "cluster-\(UUID().uuidString.prefix(8)).json"
        defer { unlink(summary) }
        let job = try Child(executable: URL(fileURLWithPath: mpirun),
                            ["--oversubscribe", "-np", "3", script.path, "--bin", binaries, "--"] + training + ["--summary", summary],
                            // CI runs as root, which Open MPI refuses unless told.
                            environment: ["OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"])
        XCTAssertEqual(job.wait(seconds: 120), 0, job.output + job.errors)
        let result = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: summary))) as? [String: Any])
        XCTAssertEqual(result["workers"] as? Int, 2)
        let names = (result["worker_stats"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        XCTAssertEqual(Set(names), ["rank-1", "rank-2"])
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha)
    }

    /// What srun gives each task: SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_ID, SLURM_NNODES.
    func testSlurmRanksFromTheEnvironment() throws {
        let local = try runCoordinator(training + ["--local", "--shards", "2"])
        let folder = scratchFolder + "slurm-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let summary = folder + "/summary.json"
        var tasks: [Child] = []
        for rank in [2, 1, 0] {  // workers first: they wait for the rendezvous file
            tasks.append(try Child(executable: script, ["--rendezvous", folder + "/endpoint", "--bin", binaries, "--"]
                                   + training + ["--summary", summary],
                                   environment: ["SLURM_PROCID": "\(rank)", "SLURM_NTASKS": "3", "SLURM_NNODES": "1",
                                                 "SLURM_JOB_ID": "4242"]))
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
}
