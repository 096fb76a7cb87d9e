import Foundation
import NeuralNet
import Training
import XCTest

/// Real coordinator and worker processes over real TCP sockets on loopback.
final class DistributedTests: SyntheticDataTestCase {
    private var common: [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--max-steps", "100", "--epochs", "50",
         "--quiet", "--seed", "7"]
    }

    /// `--local --shards 3` and 1, 2 and 3 workers with `--shards 3` end bit for bit equal.
    func testWorkersReproduceTheLocalRunBitForBit() throws {
        let local = try runCoordinator(common + ["--local", "--shards", "3"])
        XCTAssertEqual(local.status, 0, local.errors)
        XCTAssertEqual(local.summary["steps"] as? Int, 100)
        XCTAssertEqual(local.sha.count, 64)
        for workers in 1...3 {
            let run = try runCoordinator(common + ["--spawn-workers", "\(workers)", "--shards", "3",
                                                   "--bind", "tcp://127.0.0.1:*"])
            XCTAssertEqual(run.status, 0, run.errors)
            XCTAssertEqual(run.summary["workers"] as? Int, workers)
            XCTAssertEqual(run.summary["mode"] as? String, "distributed")
            XCTAssertEqual(run.sha, local.sha, "\(workers) workers:\n\(run.errors)")
            // Listed by name, whatever order the spawned workers joined in.
            let names = (run.summary["worker_stats"] as? [[String: Any]] ?? []).map { $0["name"] as? String ?? "?" }
            XCTAssertEqual(names, (0..<workers).map { "worker-\($0)" })
        }
    }

    /// Adam, L2 and dropout: workers draw the same dropout masks as `--local`.
    func testRegularisedAdamRunsMatchTheLocalRun() throws {
        let options = ["--optimizer", "adam", "--learning-rate", "0.002", "--l2", "1e-4", "--dropout", "0.3"]
        let local = try runCoordinator(common + options + ["--local", "--shards", "3"])
        XCTAssertEqual(local.status, 0, local.errors)
        XCTAssertEqual(local.summary["optimizer"] as? String, "adam")
        XCTAssertEqual(local.summary["dropout"] as? Double ?? 0, 0.3, accuracy: 1e-6)
        let run = try runCoordinator(common + options + ["--spawn-workers", "2", "--shards", "3", "--bind", "tcp://127.0.0.1:*"])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.sha, local.sha, run.errors)
        XCTAssertGreaterThan(run.summary["test_accuracy"] as? Double ?? 0, 0.9)
    }

    /// Workers on the coordinator's host move weights and gradients through shared memory by
    /// default; with --no-shared-memory everything goes through the socket. Same bits.
    func testSharedMemoryAndSocketOnlyRunsAgree() throws {
        let local = try runCoordinator(common + ["--local", "--shards", "2"])
        let shared = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*", "--log-level", "info"])
        XCTAssertEqual(shared.status, 0, shared.errors)
        XCTAssertEqual(shared.errors.components(separatedBy: "sharing memory with the coordinator").count - 1, 2, shared.errors)
        let socketOnly = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*", "--log-level", "info",
                                                      "--no-shared-memory"])
        XCTAssertEqual(socketOnly.status, 0, socketOnly.errors)
        XCTAssertFalse(socketOnly.errors.contains("sharing memory"), socketOnly.errors)
        XCTAssertEqual(shared.sha, local.sha)
        XCTAssertEqual(socketOnly.sha, local.sha)
        // Mixed: one worker through shared memory, one (as if on another host) by socket.
        let port = freePort()
        let coordinator = try Child("coordinator", common + ["--workers", "2", "--bind", "tcp://127.0.0.1:\(port)",
                                                             "--summary", scratchFolder + "mixed-\(getpid()).json"])
        let near = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--log-level", "info"])
        let far = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--log-level", "info", "--no-shared-memory"])
        XCTAssertEqual(coordinator.wait(), 0, coordinator.errors)
        XCTAssertEqual(near.wait(), 0, near.errors)
        XCTAssertEqual(far.wait(), 0, far.errors)
        XCTAssertTrue(near.errors.contains("sharing memory with the coordinator"), near.errors)
        XCTAssertFalse(far.errors.contains("sharing memory"), far.errors)
        XCTAssertEqual(readSummary(scratchFolder + "mixed-\(getpid()).json")["weights_sha256"] as? String, local.sha)
        // More shards in a step than a worker's segment has slots: the rest go by socket.
        let manyLocal = try runCoordinator(common + ["--local", "--shards", "6"])
        let many = try runCoordinator(common + ["--spawn-workers", "1", "--shards", "6", "--bind", "tcp://127.0.0.1:*"])
        XCTAssertEqual(many.status, 0, many.errors)
        XCTAssertEqual(many.sha, manyLocal.sha)
        // Every segment is gone once the run is over.
        let left = (try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm"))?.filter { $0.hasPrefix("zmqt-") } ?? []
        XCTAssertEqual(left, [], "segments left behind")
    }

    /// 256 shards over 2 workers: each gets 128 tasks a step and the next step's 128 ahead,
    /// more than the queues held before they were sized from the shard count (a worker was
    /// lost: "its queue is full"). Through pipes and shared memory, and by socket only (as
    /// from another host): no worker lost, `--local`'s weights.
    func testManyShardsPerWorkerLoseNoWorker() throws {
        let many = ["--data", data, "--hidden", "16", "--batch-size", "256", "--shards", "256", "--max-steps", "4",
                    "--epochs", "1", "--seed", "3", "--quiet"]
        let local = try runCoordinator(many + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        for path in [[], ["--no-shared-memory"]] {
            let run = try runCoordinator(many + path + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*"])
            XCTAssertEqual(run.status, 0, "\(path): " + run.errors)
            XCTAssertEqual(run.sha, local.sha, "\(path): " + run.errors)
            XCTAssertEqual(run.summary["lost_workers"] as? Int, 0, "\(path): " + run.errors)
        }
    }

    /// With queues that hold two steps of 256 shards, a worker stopped with SIGSTOP is still
    /// lost at its step deadline (the queue no longer fills first), and the run ends with
    /// the weights of the undisturbed run.
    func testAStoppedWorkerWithManyShardsIsLostAtItsDeadline() throws {
        let many = ["--data", data, "--hidden", "16", "--batch-size", "256", "--shards", "256", "--max-steps", "100",
                    "--epochs", "200", "--seed", "3"]
        let local = try runCoordinator(many + ["--local", "--quiet"])
        XCTAssertEqual(local.status, 0, local.errors)
        let summary = scratchFolder + "many-stopped-\(getpid()).json"
        let checkpoint = scratchFolder + "many-stopped-\(getpid()).checkpoint"
        defer { unlink(summary); unlink(checkpoint) }
        let coordinator = try Child("coordinator", many + ["--spawn-workers", "3", "--bind", "tcp://127.0.0.1:*",
                                                           "--worker-timeout", "1", "--log-level", "notice", "--summary", summary,
                                                           "--checkpoint", checkpoint, "--checkpoint-every", "10"])
        let victim = try XCTUnwrap(waitForWorkerPID("worker-1", in: coordinator), coordinator.errors)
        // Training is under way once the first checkpoint is written.
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: checkpoint) && Date() < deadline { usleep(10_000) }
        kill(victim, SIGSTOP)
        let lost = coordinator.waitFor("worker worker-1 is lost", seconds: 30)
        kill(victim, SIGCONT)
        XCTAssertTrue(lost, coordinator.errors)
        XCTAssertEqual(coordinator.wait(seconds: 180), 0, coordinator.errors)
        let reason = coordinator.errors.components(separatedBy: "worker worker-1 is lost: ").dropFirst().first?.prefix { $0 != "\n" }
        XCTAssertTrue(reason?.contains("unanswered after") ?? false, "lost at its deadline: " + coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, coordinator.errors)
    }

    /// `worker --cpu N` pins the worker's main thread and libzmq's threads, which it starts
    /// afterwards. (OpenBLAS's pool, made at load time, is not: the spawner sets
    /// OPENBLAS_NUM_THREADS=1 so that workers have none.)
    func testWorkerPinsItselfToACPU() throws {
        let worker = try Child("worker", ["--cpu", "0", "--connect", "tcp://127.0.0.1:\(freePort())", "--connect-timeout", "5"])
        defer { kill(worker.pid, SIGTERM); worker.wait() }
        func read(_ task: String, _ file: String) -> String {
            (try? String(contentsOfFile: "/proc/\(worker.pid)/task/\(task)/\(file)", encoding: .utf8)) ?? ""
        }
        var allowed: [String: String] = [:]
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && !allowed.keys.contains(where: { $0.hasPrefix("ZMQbg/IO") }) {
            usleep(20_000)
            for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker.pid)/task")) ?? [] {
                let name = read(task, "comm").trimmingCharacters(in: .whitespacesAndNewlines)
                guard task == String(worker.pid) || name.hasPrefix("ZMQbg") else { continue }
                let line = read(task, "status").split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
                allowed[task == String(worker.pid) ? "main" : name] = line?.split(separator: "\t").last.map(String.init)
            }
        }
        XCTAssertNotNil(allowed["main"])
        XCTAssertNotNil(allowed["ZMQbg/IO/0"], "\(allowed)")
        XCTAssertTrue(allowed.values.allSatisfy { $0 == "0" }, "\(allowed)")
    }

    /// A CPU the kernel cannot have (beyond its CPU set size) is a warning, and the worker
    /// goes on unpinned; it must not write outside the CPU set.
    func testAnImpossibleCPUIsAWarning() throws {
        let worker = try Child("worker", ["--cpu", "5000", "--connect", "tcp://127.0.0.1:\(freePort())", "--connect-timeout", "1"])
        XCTAssertEqual(worker.wait(seconds: 30), 2, worker.errors)
        XCTAssertTrue(worker.errors.contains("could not pin to CPU 5000"), worker.errors)
        XCTAssertTrue(worker.errors.contains("no coordinator answered"), worker.errors)
    }

    /// With 16-bit weights and gradients on the wire, `--local` rounds the same way.
    func testSixteenBitWireRunsMatchTheLocalRun() throws {
        for precision in ["fp16", "bf16"] {
            let local = try runCoordinator(common + ["--local", "--shards", "2", "--wire-precision", precision])
            let run = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*",
                                                   "--wire-precision", precision])
            XCTAssertEqual(run.status, 0, run.errors)
            XCTAssertEqual(run.sha, local.sha, precision)
            XCTAssertGreaterThan(run.summary["test_accuracy"] as? Double ?? 0, 0.9, precision)
        }
    }

    /// Runs with other shard counts stay within 1e-4 (relative) of `--local --shards 1`.
    func testOtherShardCountsAgreeWithinRounding() throws {
        let folder = scratchFolder
        let reference = folder + "reference-\(getpid()).bin", other = folder + "other-\(getpid()).bin"
        defer { unlink(reference); unlink(other) }
        XCTAssertEqual(try runCoordinator(common + ["--local", "--shards", "1", "--save-model", reference]).status, 0)
        let run = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*", "--save-model", other])
        XCTAssertEqual(run.status, 0, run.errors)
        let a = try loadParameters(reference), b = try loadParameters(other)
        let norm = sqrt(a.reduce(0.0) { $0 + Double($1 * $1) })
        let difference = sqrt(zip(a, b).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) })
        XCTAssertLessThan(difference / norm, 1e-4)
        XCTAssertGreaterThan(run.summary["test_accuracy"] as? Double ?? 0, 0.9)
    }

    /// Pinned workers poll for their weights after each result (here one for up to a second,
    /// one not at all), and the coordinator for the last results of a step on the CPU the
    /// first finished worker freed (up to a second): the run is the same bit for bit, and the
    /// shutdown still reaches both workers.
    func testBusyWaitingWorkersTrainTheSameAndStopAtOnce() throws {
        let reference = try runCoordinator(common + ["--local", "--shards", "2"])
        let port = freePort()
        let summary = scratchFolder + "busy-wait-\(getpid()).json"
        let started = Date()
        let coordinator = try Child("coordinator", common + ["--workers", "2", "--shards", "2", "--busy-wait-us", "1000000",
                                                             "--bind", "tcp://127.0.0.1:\(port)", "--summary", summary])
        let workers = try [(0, 1_000_000), (1, 0)].map { index, microseconds in
            try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--cpu", "\(CPUAffinity.allowedCPU(index))",
                                 "--busy-wait-us", "\(microseconds)"])
        }
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        let stopped = Date()
        // 100 steps; a poll that missed what it waits for would hold each for a second.
        XCTAssertLessThan(stopped.timeIntervalSince(started), 20, "the run took long")
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
        XCTAssertLessThan(Date().timeIntervalSince(stopped), 3, "the workers took long to stop")
        XCTAssertEqual(readSummary(summary)["weights_sha256"] as? String, reference.sha)
    }

    func testAWorkerForAnotherModelIsRefusedWithTheReason() throws {
        let port = freePort()
        let coordinator = try Child("coordinator", common + ["--workers", "1", "--bind", "tcp://127.0.0.1:\(port)"])
        let wrong = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--hidden", "64"])
        XCTAssertEqual(wrong.wait(seconds: 30), 2)
        XCTAssertTrue(wrong.errors.contains("model mismatch"), wrong.errors)
        XCTAssertTrue(wrong.errors.contains("784-32(relu)-10(softmax)"), wrong.errors)
        // A worker for the right model is admitted and the run completes.
        let right = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--hidden", "32"])
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(right.wait(seconds: 30), 0, right.errors)
    }

    func testAWorkerStartedBeforeTheCoordinatorWaitsForIt() throws {
        let port = freePort()
        let worker = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--log-level", "notice"])
        XCTAssertTrue(worker.waitFor("waiting for the coordinator", seconds: 10), worker.errors)
        let coordinator = try Child("coordinator", common + ["--workers", "1", "--bind", "tcp://127.0.0.1:\(port)"])
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
    }

    /// A worker that joins early hears heartbeats while the coordinator waits for the rest,
    /// longer than the early one's --coordinator-timeout; then training runs as usual.
    func testAnEarlyWorkerWaitsForALateOne() throws {
        let reference = try runCoordinator(common + ["--local", "--shards", "2"])
        let port = freePort()
        let summary = scratchFolder + "early-late-\(getpid()).json"
        let coordinator = try Child("coordinator", common + ["--workers", "2", "--shards", "2",
                                                             "--bind", "tcp://127.0.0.1:\(port)", "--summary", summary])
        let early = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "early",
                                         "--coordinator-timeout", "2", "--log-level", "info"])
        XCTAssertTrue(early.waitFor("joined as worker", seconds: 30), early.errors)
        sleep(5)
        let late = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "late"])
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(early.wait(seconds: 30), 0, early.errors)
        XCTAssertEqual(late.wait(seconds: 30), 0, late.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, reference.sha)
        XCTAssertEqual(result["lost_workers"] as? Int, 0)
    }

    func testAWorkerExitsWhenTheCoordinatorNeverComes() throws {
        let worker = try Child("worker", ["--connect", "tcp://127.0.0.1:\(freePort())", "--connect-timeout", "1"])
        XCTAssertEqual(worker.wait(seconds: 20), 2)
        XCTAssertTrue(worker.errors.contains("no coordinator answered"), worker.errors)
    }

    /// Spawned workers never outlive their coordinator, even one killed with SIGKILL.
    func testSpawnedWorkersExitWhenTheCoordinatorIsKilled() throws {
        let coordinator = try Child("coordinator", ["--data", data, "--hidden", "32", "--epochs", "100000",
                                                    "--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*",
                                                    "--log-level", "notice"])
        XCTAssertTrue(coordinator.waitFor("2 live", seconds: 30), coordinator.errors)
        let pids = workerPIDs(in: coordinator.errors)
        XCTAssertEqual(pids.count, 2, coordinator.errors)
        usleep(300_000)
        kill(coordinator.pid, SIGKILL)
        coordinator.wait(seconds: 10)
        let deadline = Date().addingTimeInterval(10)
        while pids.contains(where: isRunning) && Date() < deadline { usleep(50_000) }
        for pid in pids { XCTAssertFalse(isRunning(pid), "worker \(pid) outlived the coordinator") }
    }
}
