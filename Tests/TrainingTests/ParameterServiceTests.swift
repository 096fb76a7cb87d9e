import Foundation
import NeuralNet
@testable import Training
import Wire
import XCTest

/// `coordinator --parameter-servers R` with real processes over real sockets: servers own
/// ranges of the parameters and the optimizer, and the result is `--local`'s, bit for bit.
final class ParameterServiceTests: SyntheticDataTestCase {
    private var common: [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--max-steps", "40", "--epochs", "50",
         "--quiet", "--seed", "7", "--shards", "3"]
    }

    /// For runs whose log lines a test waits for (`--quiet` keeps only warnings).
    private var logged: [String] { common.filter { $0 != "--quiet" } }

    private func spawned(_ workers: Int, servers: Int, _ extra: [String] = []) throws -> RunResult {
        try runCoordinator(common + extra + ["--spawn-workers", "\(workers)", "--parameter-servers", "\(servers)",
                                             "--bind", "tcp://127.0.0.1:*", "--snapshot-every", "7"])
    }

    /// One and two servers, plain, fp16 on the wire, and Adam with L2: `--local`'s hash, with
    /// the bulk values in shared memory (spawned workers share the coordinator's host) and,
    /// with `--no-shared-memory`, through the servers' sockets.
    func testServedRunsReproduceTheLocalRunBitForBit() throws {
        for extra in [[], ["--wire-precision", "fp16"], ["--optimizer", "adam", "--learning-rate", "0.002", "--l2", "1e-4"]] {
            let local = try runCoordinator(common + extra + ["--local"])
            XCTAssertEqual(local.status, 0, local.errors)
            for (workers, servers, shared) in [(2, 1, true), (2, 1, false), (3, 2, true), (3, 2, false)]
            where extra.isEmpty || servers == 2 {
                let run = try spawned(workers, servers: servers, extra + (shared ? [] : ["--no-shared-memory"]))
                XCTAssertEqual(run.status, 0, run.errors)
                XCTAssertEqual(run.sha, local.sha, "\(workers) workers, \(servers) servers, \(extra), shared \(shared):\n\(run.errors)")
                let service = run.summary["parameter_service"] as? [String: Any] ?? [:]
                // Every step through shared memory (a server offers to serve once it attached),
                // or none.
                XCTAssertEqual(service["shared_memory_steps"] as? Int, shared ? 40 : 0, run.errors)
                let served = (service["servers"] as? [[String: Any]] ?? []).compactMap { $0["parameters"] as? Int }
                XCTAssertEqual(served.count, servers)
                XCTAssertEqual(served.reduce(0, +), run.summary["parameters"] as? Int)
                // Every non-empty shard of every step, once per server.
                XCTAssertEqual(service["receipts"] as? Int, 40 * 3 * servers)
                XCTAssertEqual(service["rollbacks"] as? Int, 0)
            }
        }
        // Without servers nothing changes, and the summary has no section for them.
        let plain = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*"])
        XCTAssertNil(plain.summary["parameter_service"])
    }

    /// A step of many shards: a server sends the coordinator a receipt for each, more than a
    /// worker's usual queue to it holds at once. None may be lost (a lost receipt once made
    /// the coordinator declare its server lost, with no spare to take over).
    func testEveryReceiptOfAStepWithManyShardsArrives() throws {
        let many = ["--batch-size", "480", "--shards", "96", "--max-steps", "12"]
        let local = try runCoordinator(common + many + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        let run = try spawned(6, servers: 1, many)
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.sha, local.sha, run.errors)
        let service = run.summary["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertEqual(service["receipts"] as? Int, 12 * 96)
        XCTAssertEqual(service["rollbacks"] as? Int, 0)
        // 16 shards a worker and step, 4 gradient slots each: the rest through the
        // coordinator's overflow segments, in shared memory as well.
        XCTAssertEqual(service["shared_memory_steps"] as? Int, 12, run.errors)
    }

    /// CURVE on every link, the servers' too (each with a fresh key pair): the same hash.
    /// Without shared memory, so that the workers' links to the servers carry the values, as
    /// between hosts (on one host they are dropped once the weights come through memory).
    func testCurveRunWithTwoServers() throws {
        let folder = scratchFolder + "ps-keys-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let keygen = try Child("coordinator", ["keygen", "--name", "coordinator", "--output", folder])
        XCTAssertEqual(keygen.wait(seconds: 30), 0, keygen.errors)
        let keys = try Child("coordinator", ["keygen", "--name", "nobody", "--output", folder + "/authorised"])
        XCTAssertEqual(keys.wait(seconds: 30), 0, keys.errors)
        let local = try runCoordinator(common + ["--local"])
        let run = try spawned(3, servers: 2, ["--curve-secret-key", folder + "/coordinator.key",
                                              "--authorized-keys", folder + "/authorised", "--log-level", "info",
                                              "--no-shared-memory"])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.sha, local.sha, run.errors)
        XCTAssertGreaterThanOrEqual(run.errors.components(separatedBy: "parameter server: admitted").count - 1, 6, run.errors)
    }

    /// A serving worker killed with SIGKILL mid-run: a spare serving worker takes its range
    /// from the last snapshot, the steps since are replayed, and the hash is `--local`'s.
    func testALostServerIsRebuiltFromTheSnapshotAndTheHashStays() throws {
        try loseAServer { kill($0, SIGKILL) }
    }

    /// A serving worker stopped (SIGSTOP) for longer than the worker timeout holds every
    /// worker up: the server is blamed, not the workers, and the run goes on as above; the
    /// stopped one, continued, is back as a worker.
    func testAStalledServerIsReplacedAndTheHashStays() throws {
        try loseAServer { pid in
            kill(pid, SIGSTOP)
            usleep(4_000_000)
            kill(pid, SIGCONT)
        }
    }

    private func loseAServer(_ disturb: (Int32) -> Void) throws {
        let steps = ["--max-steps", "400"]
        let local = try runCoordinator(common + steps + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        let port = freePort()
        let summary = scratchFolder + "ps-kill-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let coordinator = try Child("coordinator", logged + steps + [
            "--workers", "3", "--parameter-servers", "2", "--bind", "tcp://127.0.0.1:\(port)", "--snapshot-every", "10",
            "--worker-timeout", "2", "--summary", summary])
        let workers = try (0..<3).map { index in
            try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "s\(index)", "--serve", "tcp://127.0.0.1:0"])
        }
        XCTAssertTrue(coordinator.waitFor("parameter service generation 1", seconds: 60), coordinator.errors)
        let line = try XCTUnwrap(coordinator.errors.components(separatedBy: "\n").first { $0.contains("generation 1 from step") })
        let server = try XCTUnwrap((0..<3).first { line.contains(": s\($0) ") || line.contains(", s\($0) ") })
        // Mid-run: two epochs (and snapshots) done, more than twenty to go.
        XCTAssertTrue(coordinator.waitFor("epoch  2/", seconds: 120), coordinator.output)
        disturb(workers[server].pid)
        XCTAssertEqual(coordinator.wait(seconds: 240), 0, coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, coordinator.errors)
        let service = result["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertGreaterThanOrEqual(service["rollbacks"] as? Int ?? 0, 1, coordinator.errors)
        XCTAssertGreaterThanOrEqual(service["generation"] as? Int ?? 0, 2)
        XCTAssertFalse((service["servers"] as? [[String: Any]] ?? []).contains { $0["name"] as? String == "s\(server)" })
        XCTAssertTrue(coordinator.errors.contains("rolling back to the last snapshot"), coordinator.errors)
        for (index, worker) in workers.enumerated() where index != server { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
    }

    /// A worker that dies between its sends to the servers (one has its range and applied
    /// the step, the other never will; it sends them by socket, as from another host): no
    /// server is blamed, the run rolls back with both and replays, and ends with `--local`'s
    /// hash. Before, the second server was declared lost, and with no spare the run stopped.
    func testAWorkerLostBetweenItsSendsToTheServersLosesNoServer() throws {
        let local = try runCoordinator(common + ["--local"])
        XCTAssertEqual(local.status, 0, local.errors)
        let port = freePort()
        let summary = scratchFolder + "ps-midsend-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let coordinator = try Child("coordinator", logged + [
            "--workers", "3", "--parameter-servers", "2", "--bind", "tcp://127.0.0.1:\(port)", "--worker-timeout", "2",
            "--summary", summary])
        let servers = try (0..<2).map { index in
            try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "s\(index)", "--serve", "tcp://127.0.0.1:0"])
        }
        let dying = try Child(executable: try executable("worker"), ["--connect", "tcp://127.0.0.1:\(port)", "--name", "dies", "--no-shared-memory"],
                              environment: ["ZMQT_EXIT_AFTER_GRADIENT_RANGES": "1"])
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        XCTAssertNotEqual(dying.wait(seconds: 10), 0)
        XCTAssertTrue(coordinator.errors.contains("reached only some parameter servers: rolling back"), coordinator.errors)
        let result = readSummary(summary)
        XCTAssertEqual(result["weights_sha256"] as? String, local.sha, coordinator.errors)
        let service = result["parameter_service"] as? [String: Any] ?? [:]
        XCTAssertEqual(service["rollbacks"] as? Int, 1, coordinator.errors)
        XCTAssertEqual((service["servers"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }.sorted(), ["s0", "s1"])
        for server in servers { XCTAssertEqual(server.wait(seconds: 30), 0, server.errors) }
    }

    /// A coordinator with one serving worker and one plain worker, sharing the run secret in
    /// `ps-TAG-secret-PID` (summary: the same path + `.json`), for hostile peers to knock at
    /// the server: the processes, and the server's log line from its endpoint on, once the
    /// service's first generation started.
    private func servedRunToAttack(steps: Int, tag: String) throws -> (Child, Child, Child, String) {
        let port = freePort()
        let secretPath = scratchFolder + "ps-\(tag)-secret-\(getpid())"
        // Sockets only, as between hosts: the gradient ranges under attack take the server's socket.
        let coordinator = try Child("coordinator", logged + ["--max-steps", "\(steps)", "--no-shared-memory",
            "--workers", "2", "--parameter-servers", "1", "--bind", "tcp://127.0.0.1:\(port)", "--secret-file", secretPath,
            "--summary", secretPath + ".json"])
        let serving = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "server", "--serve", "tcp://127.0.0.1:0",
                                           "--secret-file", secretPath])
        let plain = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "plain", "--secret-file", secretPath])
        XCTAssertTrue(serving.waitFor("serving a parameter range at ", seconds: 60), serving.errors)
        let announced = try XCTUnwrap(serving.errors.components(separatedBy: "serving a parameter range at ").last)
        XCTAssertTrue(coordinator.waitFor("parameter service generation 1", seconds: 60), coordinator.errors)
        return (coordinator, serving, plain, announced)
    }

    /// A peer without the proof is refused; malformed, out-of-range and mutated gradient
    /// ranges from a peer with it are refused and counted; the run is not disturbed.
    func testHostilePeersAreRefusedAndCounted() throws {
        let local = try runCoordinator(common + ["--max-steps", "400", "--local"])
        let (coordinator, serving, plain, announced) = try servedRunToAttack(steps: 400, tag: "hostile")
        let secretPath = scratchFolder + "ps-hostile-secret-\(getpid())", summary = secretPath + ".json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let endpoint = String(announced.prefix { !$0.isWhitespace })

        let context = try ZMQContext()
        // Without the proof: a gradient range, then a hello with a made-up proof.
        let stranger = try ZMQSocket(context: context, type: .dealer)
        try stranger.connect(endpoint)
        let values = SharedBuffer(byteCount: 1 << 20)
        let report = ShardReport(shard: 0, worker: 99, sampleCount: 20, lossSum: 1, correctCount: 1, computeMicroseconds: 1)
        try stranger.send(Hello(pid: 1, name: "stranger", proof: Array(repeating: 7, count: 32)).encode())
        try stranger.send(RangeValuesHeader(generation: 1, report: report, range: ParameterRange(lower: 0, count: 10), precision: .fp32)
            .encode(step: 0, values: values, offset: 0))
        XCTAssertNotNil(try stranger.receive(timeoutMilliseconds: 5000))  // a challenge, nothing else

        // With the proof: admitted, it learns the range and step from the weights it gets.
        let peer = try ZMQSocket(context: context, type: .dealer)
        try peer.connect(endpoint)
        try peer.send(Hello(pid: 2, name: "hostile").encode())
        let challenge = try Challenge(Envelope(frames: try XCTUnwrap(peer.receive(timeoutMilliseconds: 5000))[...]))
        let secret = try RunSecret.read(from: secretPath)
        try peer.send(Hello(pid: 2, name: "hostile", proof: secret.proof(nonce: challenge.nonce, pid: 2, name: "hostile")).encode())
        let weights = try Envelope(frames: try XCTUnwrap(peer.receive(timeoutMilliseconds: 5000))[...])
        let header = try RangeValuesHeader(weights, parameterCount: 784 * 32 + 32 + 32 * 10 + 10)
        let range = header.range
        let bad: [(ParameterRange, WirePrecision, Int, blockCount: Int)] = [
            (ParameterRange(lower: 16, count: range.count - 16), .fp32, 0, 1),  // not its range
            (ParameterRange(lower: 0, count: range.count - 1), .fp32, 0, 1),
            (range, .fp16, 0, 1),  // not the run's precision
            (range, .fp32, 3, 1),  // shard beyond the step's
            (range, .fp32, 60000, 1),
            (range, .fp32, 2, 2),  // a block past the step's three shards
            (range, .fp16, 0, 2),  // a block not in fp32
            (range, .fp32, 1, 2),  // a block that is not aligned
        ]
        for (badRange, precision, shard, blockCount) in bad {
            var mutated = report
            mutated.shard = shard
            mutated.blockCount = blockCount
            try peer.send(RangeValuesHeader(generation: header.generation, report: mutated, range: badRange, precision: precision)
                .encode(step: weights.step, values: values, offset: 0))
        }
        // Truncated, padded and random frames.
        var frames = bytes(RangeValuesHeader(generation: header.generation, report: report, range: range, precision: .fp32)
            .encode(step: weights.step, values: values, offset: 0))
        frames[2].removeLast(8)
        try peer.send(frames.map { .bytes($0) })
        frames[2] += Array(repeating: 0, count: 16)
        try peer.send(frames.map { .bytes($0) })
        try peer.send([.bytes(Array(repeating: 0xAB, count: 24)), .bytes([1, 2, 3])])
        try peer.send([.bytes([0x5A])])

        XCTAssertEqual(coordinator.wait(seconds: 240), 0, coordinator.errors)
        XCTAssertEqual(readSummary(summary)["weights_sha256"] as? String, local.sha)
        XCTAssertEqual(serving.wait(seconds: 30), 0, serving.errors)
        XCTAssertEqual(plain.wait(seconds: 30), 0, plain.errors)
        XCTAssertTrue(serving.errors.contains("does not prove this run's secret"), serving.errors)
        let refused = serving.errors.components(separatedBy: "parameter server: applied ").last?
            .components(separatedBy: "refused ").dropFirst().first?.prefix { $0.isNumber }
        XCTAssertGreaterThanOrEqual(Int(refused ?? "") ?? 0, 2 + bad.count + 4, serving.errors)
    }

    /// A serving worker binds once it knows the model, with messages capped at the largest
    /// it takes (a gradient range of every parameter in fp32). A stranger's message one byte
    /// over the cap is cut off by libzmq before anything is allocated for it, and the server
    /// counts the connection closed; one at the cap arrives and is refused as any malformed
    /// message, and that connection stays (its hello still gets a challenge). Then more
    /// connections without the proof than a server keeps open: those beyond the bound are
    /// refused at their handshake and counted, and one of the first still gets its challenge.
    /// The run ends with `--local`'s weights.
    func testAServersConnectionsWithoutTheProofAreCappedAndBounded() throws {
        let local = try runCoordinator(common + ["--max-steps", "1000", "--local"])
        let (coordinator, serving, plain, announced) = try servedRunToAttack(steps: 1000, tag: "cap")
        let summary = scratchFolder + "ps-cap-secret-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let endpoint = String(announced.prefix { !$0.isWhitespace })
        let cap = try XCTUnwrap(Int(announced.components(separatedBy: "messages up to ").dropFirst().first?.prefix { $0.isNumber } ?? ""))
        XCTAssertEqual(cap, (784 * 32 + 32 + 32 * 10 + 10) * 4 + 4096)

        let context = try ZMQContext()
        let atCap = try ZMQSocket(context: context, type: .dealer)
        try atCap.connect(endpoint)
        try atCap.send([.bytes(Array(repeating: 0xAB, count: cap))])
        let overCap = try ZMQSocket(context: context, type: .dealer)
        try overCap.connect(endpoint)
        try overCap.send([.bytes(Array(repeating: 0xAB, count: cap + 1))])
        XCTAssertTrue(serving.waitFor("a connection closed before its peer proved the run secret", seconds: 30), serving.errors)
        try atCap.send(Hello(pid: 3, name: "at-cap").encode())
        XCTAssertNotNil(try atCap.receive(timeoutMilliseconds: 5000), "the connection at the cap was closed too")

        // One connection in first (it gets a challenge), then more than the bound.
        let first = try ZMQSocket(context: context, type: .dealer)
        try first.connect(endpoint)
        try first.send(Hello(pid: 4, name: "first").encode())
        XCTAssertNotNil(try first.receive(timeoutMilliseconds: 5000))
        let crowd = try (0..<UnprovenConnections.limit).map { _ in
            let socket = try ZMQSocket(context: context, type: .dealer)
            try socket.connect(endpoint)
            return socket
        }
        XCTAssertTrue(serving.waitFor("refusing new connections while \(UnprovenConnections.limit) have not proven", seconds: 30),
                      serving.errors)
        try first.send(Hello(pid: 4, name: "first").encode())
        XCTAssertNotNil(try first.receive(timeoutMilliseconds: 5000), "a connection within the bound was closed")
        XCTAssertEqual(crowd.count, UnprovenConnections.limit)

        XCTAssertEqual(coordinator.wait(seconds: 240), 0, coordinator.errors)
        XCTAssertEqual(readSummary(summary)["weights_sha256"] as? String, local.sha)
        XCTAssertEqual(serving.wait(seconds: 30), 0, serving.errors)
        XCTAssertEqual(plain.wait(seconds: 30), 0, plain.errors)
        let closing = try XCTUnwrap(serving.errors.components(separatedBy: "parameter server: applied ").last)
        let refused = Int(closing.components(separatedBy: "refused ").dropFirst().first?.prefix { $0.isNumber } ?? "") ?? 0
        let closed = Int(closing.components(separatedBy: "stale; ").dropFirst().first?.prefix { $0.isNumber } ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(refused, 1, serving.errors)
        let refusedConnections = Int(closing.components(separatedBy: "(").last?.prefix { $0.isNumber } ?? "") ?? 0
        XCTAssertGreaterThanOrEqual(refusedConnections, 3, serving.errors)
        // The one over the cap, and each refused connection (refusals close it).
        XCTAssertGreaterThanOrEqual(closed, 1 + refusedConnections, serving.errors)
    }

    /// A worker whose gradient ranges hold NaN with a finite loss (a broken worker, from a
    /// raw socket that does everything else right): the server refuses them and tells the
    /// coordinator, which gives the shard to another worker; the hash stays `--local`'s.
    func testANaNGradientRangeSendsTheShardElsewhere() throws {
        let steps = ["--max-steps", "60"]
        let local = try runCoordinator(common + steps + ["--local"])
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summary = scratchFolder + "ps-nan-\(getpid()).json"
        defer { try? FileManager.default.removeItem(atPath: summary) }
        let coordinator = try Child("coordinator", logged + steps + ["--workers", "2", "--parameter-servers", "1",
                                                                     "--bind", endpoint, "--summary", summary])
        let context = try ZMQContext()
        let socket = try ZMQSocket(context: context, type: .dealer)
        try socket.connect(endpoint)
        let welcome = try XCTUnwrap(try joinAsWorker(socket, endpoint: endpoint, name: "nan-worker"), coordinator.errors)
        let serving = try Child("worker", ["--connect", endpoint, "--name", "server", "--serve", "tcp://127.0.0.1:0"])
        let count = welcome.spec.parameterCount
        let nan = SharedBuffer(byteCount: count * 4)
        nan.pointer.bindMemory(to: Float.self, capacity: count).update(repeating: .nan, count: count)
        var link: ZMQSocket?
        var map: ServerMap?
        var weightsStep: UInt64?
        var tasks: [(step: UInt64, header: TaskHeader)] = []
        var sent = 0
        var stopped = false
        while !stopped && coordinator.process.isRunning {
            let ready = try waitForInput(on: [socket] + (link.map { [$0] } ?? []), timeoutMilliseconds: 100)
            while ready.sockets[0], let frames = try socket.receive(timeoutMilliseconds: 0) {
                let envelope = try Envelope(frames: frames[...])
                switch envelope.type {
                case .serverMap:
                    map = try ServerMap(envelope, parameterCount: count)
                    link = try ZMQSocket(context: context, type: .dealer)
                    try link!.connect(map!.entries[0].endpoint)
                    try link!.send(Hello(pid: 9, name: "nan-worker").encode())
                case .task: tasks.append((envelope.step, try TaskHeader.decode(envelope, featureCount: welcome.spec.inputSize).0))
                case .shutdown: stopped = true
                default: break
                }
            }
            while let link, ready.sockets.count > 1, ready.sockets[1], let frames = try link.receive(timeoutMilliseconds: 0) {
                let envelope = try Envelope(frames: frames[...])
                if envelope.type == .challenge {
                    let secret = try RunSecret.read(from: try XCTUnwrap(RunSecret.defaultPath(forEndpoint: endpoint)))
                    try link.send(Hello(pid: 9, name: "nan-worker",
                                        proof: secret.proof(nonce: try Challenge(envelope).nonce, pid: 9, name: "nan-worker")).encode())
                } else if envelope.type == .weightsRange {
                    weightsStep = envelope.step
                }
            }
            for task in tasks where task.step == weightsStep {
                let report = ShardReport(shard: Int(task.header.shard), worker: Int(welcome.workerIndex),
                                         sampleCount: Int(task.header.sampleCount), lossSum: 1, correctCount: 0, computeMicroseconds: 1)
                try link?.send(RangeValuesHeader(generation: map!.generation, report: report, range: map!.entries[0].range,
                                                 precision: .fp32).encode(step: task.step, values: nan, offset: 0))
                sent += 1
            }
            if let weightsStep { tasks.removeAll { $0.step <= weightsStep } }
        }
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        XCTAssertEqual(serving.wait(seconds: 30), 0, serving.errors)
        XCTAssertGreaterThan(sent, 0, coordinator.errors)
        XCTAssertEqual(readSummary(summary)["weights_sha256"] as? String, local.sha, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("refused its gradient of shard"), coordinator.errors)
        XCTAssertTrue(serving.errors.contains("NaN or infinite gradient"), serving.errors)
    }

    /// Checkpoints bring the servers' state home: a served run stopped at step 23 and resumed
    /// (servers seeded from the checkpoint) ends where an uninterrupted `--local` run does.
    func testAServedRunCheckpointsAndResumes() throws {
        let local = try runCoordinator(common + ["--local"])
        let checkpoint = scratchFolder + "ps-checkpoint-\(getpid()).bin"
        defer { try? FileManager.default.removeItem(atPath: checkpoint) }
        let first = try spawned(3, servers: 2, ["--max-steps", "23", "--checkpoint", checkpoint, "--checkpoint-every", "5"])
        XCTAssertEqual(first.status, 0, first.errors)
        XCTAssertEqual(first.summary["steps"] as? Int, 23)
        let resumed = try spawned(3, servers: 2, ["--resume", checkpoint])
        XCTAssertEqual(resumed.status, 0, resumed.errors)
        XCTAssertEqual(resumed.sha, local.sha, resumed.errors)
    }
}
