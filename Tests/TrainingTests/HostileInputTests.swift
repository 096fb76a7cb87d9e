import Foundation
import NeuralNet
import Wire
import XCTest

/// Garbage on the coordinator's port during training: it must refuse and count every bad
/// message, never apply one, and end with the weights of an undisturbed run.
final class HostileInputTests: XCTestCase {
    func testThousandsOfRandomAndMutatedMessagesChangeNothing() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let settings = ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200",
                        "--max-steps", "3000", "--shards", "2", "--seed", "5", "--quiet", "--worker-timeout", "1"]
        let reference = try runCoordinator(settings + ["--local"])

        let port = freePort()
        let endpoint = "tcp://127.0.0.1:\(port)"
        let summaryPath = scratchFolder + "fuzz-summary-\(getpid()).json"
        defer { unlink(summaryPath) }
        let checkpoint = scratchFolder + "fuzz-progress-\(getpid())"
        defer { unlink(checkpoint) }
        let coordinator = try Child("coordinator", settings + [
            "--spawn-workers", "2", "--bind", endpoint, "--summary", summaryPath,
            "--checkpoint", checkpoint, "--checkpoint-every", "100"])
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: checkpoint) && Date() < deadline { usleep(10_000) }

        let context = try ZMQContext()
        let peers = try (0..<3).map { index -> ZMQSocket in
            let socket = try ZMQSocket(context: context, type: .dealer)
            try socket.setRoutingID(Array("fuzzer-\(index)".utf8))
            try socket.setSendHighWaterMark(100_000)
            try socket.connect(endpoint)
            return socket
        }
        var generator = SeededGenerator(seed: 99)
        let spec = try ModelSpec.mlp(inputSize: 784, hidden: [32], classes: 10)
        var sent = 0
        for round in 0..<3000 {
            let frames = hostileMessage(round, spec: spec, generator: &generator)
            if try peers[round % peers.count].send(frames.map { .bytes($0) }, dontWait: true) { sent += 1 }
            if round % 300 == 299 { usleep(30_000) }  // spread over the run
        }
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, reference.sha)
        let rejected = summary["rejected_messages"] as? Int ?? 0
        XCTAssertGreaterThan(rejected, sent / 2, "sent \(sent), rejected \(rejected)")
        // One log line per peer, not one per message.
        let warnings = coordinator.errors.components(separatedBy: "rejected a message from fuzzer-").count - 1
        XCTAssertLessThanOrEqual(warnings, 3, coordinator.errors)
        XCTAssertGreaterThan(warnings, 0, coordinator.errors)
    }

    /// A process on the coordinator's host that joins properly, offers shared memory and pipes,
    /// and then writes garbage into its pipe: bad messages are refused and counted, broken
    /// framing ends that worker (it is lost, its shards go to the others), and the run ends
    /// with the weights of an undisturbed run.
    func testGarbageThroughAPipeChangesNothing() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let settings = ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200",
                        "--max-steps", "4000", "--shards", "2", "--seed", "8", "--quiet", "--worker-timeout", "1"]
        let reference = try runCoordinator(settings + ["--local"])
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summaryPath = scratchFolder + "pipe-fuzz-summary-\(getpid()).json"
        defer { unlink(summaryPath) }
        let checkpoint = scratchFolder + "pipe-fuzz-progress-\(getpid())"
        defer { unlink(checkpoint) }
        let coordinator = try Child("coordinator", settings + ["--spawn-workers", "2", "--min-workers", "2",
                                                               "--bind", endpoint, "--summary", summaryPath, "--log-level", "info",
                                                               "--checkpoint", checkpoint, "--checkpoint-every", "100"])
        // Training is under way with the two real workers; then the rogue joins like a worker
        // on this host and gets shards from the next step on.
        let started = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: checkpoint) && Date() < started { usleep(10_000) }
        let context = try ZMQContext()
        let socket = try ZMQSocket(context: context, type: .dealer)
        try socket.connect(endpoint)
        let welcome = try joinAsWorker(socket, endpoint: endpoint, name: "rogue")
        let spec = try XCTUnwrap(welcome, coordinator.errors).spec
        let segment = try SharedSegment(slotCount: 4, slotBytes: spec.parameterCount * 4)
        let fromCoordinator = try PipeChannel(forWriting: false)
        let toCoordinator = try PipeChannel(forWriting: true)
        try socket.send(AttachMessage(segment: segment.info, toWorkerPipe: fromCoordinator.path,
                                      toCoordinatorPipe: toCoordinator.path).encode())
        // Once the coordinator writes to us through the pipe, it reads ours.
        var item = pollfd(fd: fromCoordinator.descriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&item, 1, 20_000), 1, coordinator.errors)
        var generator = SeededGenerator(seed: 3)
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
        let result = ResultHeader(shard: 1, sampleCount: 30, lossSum: 1, correctCount: 1,
                                  parameterCount: UInt32(spec.parameterCount), computeMicroseconds: 1, sharedSlot: 3)
        for round in 0..<200 {
            let frames: [OutgoingFrame] = switch round % 4 {
            case 0: [.bytes(random(24)), .bytes(random(generator.nextIndex(below: 40)))]
            case 1: result.encodeShared(step: UInt64(generator.nextIndex(below: 3000)))
            case 2: AttachMessage(segment: SharedSegmentInfo(name: "/zmqt-nope", nonce: random(16), slotCount: 1, slotBytes: 8)).encode()
            default: [.bytes(random(3))]
            }
            _ = try toCoordinator.send(frames)
        }
        // Then a length no pipe message may have: the framing is gone.
        var broken = UInt32(1 << 30).littleEndian
        XCTAssertEqual(write(toCoordinator.descriptor, &broken, 4), 4)

        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, reference.sha, coordinator.errors)
        XCTAssertGreaterThan(summary["rejected_messages"] as? Int ?? 0, 100, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("rogue's pipe broke") || coordinator.errors.contains("worker rogue is lost: its pipe broke"),
                      coordinator.errors)
    }

    /// A worker on this host that answers its tasks properly, except that the gradient it
    /// leaves in its sealed segment holds a NaN. The coordinator reads such gradients in
    /// place, unchecked one by one: the sum shows the NaN, the shard is checked on a copy and
    /// recomputed by the coordinator, and the run ends with the weights of an undisturbed run.
    func testNaNGradientReadInPlaceIsRecomputed() throws {
        try runWorkerLeavingNonFiniteValuesInPlace(gradientHoldsNaN: true, lossSum: 1)
    }

    /// The same with a finite gradient but a NaN loss: read from shared memory, it gets the
    /// socket's treatment (recomputed by the coordinator), instead of ending the run as a
    /// diverged loss.
    func testNaNLossFromSharedMemoryIsRecomputed() throws {
        try runWorkerLeavingNonFiniteValuesInPlace(gradientHoldsNaN: false, lossSum: .nan)
    }

    private func runWorkerLeavingNonFiniteValuesInPlace(gradientHoldsNaN: Bool, lossSum: Double) throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let settings = ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200",
                        "--max-steps", "150", "--shards", "2", "--seed", "4", "--quiet"]
        let reference = try runCoordinator(settings + ["--local"])
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summaryPath = scratchFolder + "nan-in-place-summary-\(getpid()).json"
        defer { unlink(summaryPath) }
        let coordinator = try Child("coordinator", settings + ["--workers", "2", "--min-workers", "2", "--bind", endpoint,
                                                               "--summary", summaryPath, "--log-level", "info"])
        let context = try ZMQContext()
        let socket = try ZMQSocket(context: context, type: .dealer)
        try socket.connect(endpoint)
        let welcome = try joinAsWorker(socket, endpoint: endpoint, name: "nan-worker")
        let spec = try XCTUnwrap(welcome, coordinator.errors).spec
        let segment = try SharedSegment(slotCount: 4, slotBytes: spec.parameterCount * 4, sealed: true)
        XCTAssertTrue(segment.cannotShrink)
        let gradient = segment.slot(0).bindMemory(to: Float.self, capacity: spec.parameterCount)
        gradient.update(repeating: 0.5, count: spec.parameterCount)
        if gradientHoldsNaN { gradient[spec.parameterCount / 2] = .nan }
        let fromCoordinator = try PipeChannel(forWriting: false)
        let toCoordinator = try PipeChannel(forWriting: true)
        try socket.send(AttachMessage(segment: segment.info, toWorkerPipe: fromCoordinator.path,
                                      toCoordinatorPipe: toCoordinator.path).encode())
        let worker = try Child("worker", ["--connect", endpoint])

        // Answer every task once its step's weights are here, from slot 0, until told to stop.
        var weightsStep: UInt64?
        var tasks: [(step: UInt64, header: TaskHeader)] = []
        var answered = 0
        var stopped = false
        while !stopped && coordinator.process.isRunning {
            // Step messages come through the pipe, and through the socket when they do not fit.
            let ready = try socket.waitForInput(timeoutMilliseconds: 100, alsoWatching: [fromCoordinator.descriptor])
            var messages = ready.descriptors.isEmpty ? [] : fromCoordinator.receive()
            while ready.socket, let frames = try socket.receive(timeoutMilliseconds: 0) { messages.append(frames) }
            for frames in messages {
                let envelope = try Envelope(frames: frames[...])
                switch envelope.type {
                case .weights: weightsStep = envelope.step
                case .task: tasks.append((envelope.step, try TaskHeader.decode(envelope, featureCount: spec.inputSize).0))
                case .shutdown: stopped = true
                default: break
                }
            }
            for task in tasks where task.step == weightsStep {
                let result = ResultHeader(shard: task.header.shard, sampleCount: task.header.sampleCount, lossSum: lossSum,
                                          correctCount: 0, parameterCount: UInt32(spec.parameterCount),
                                          computeMicroseconds: 1, sharedSlot: 0)
                _ = try toCoordinator.send(result.encodeShared(step: task.step))
                answered += 1
            }
            tasks.removeAll { $0.step <= weightsStep ?? 0 }
            if fromCoordinator.isClosed { break }
        }
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        XCTAssertGreaterThan(answered, 50, coordinator.errors)
        let summary = readSummary(summaryPath)
        XCTAssertEqual(summary["weights_sha256"] as? String, reference.sha, coordinator.errors)
        XCTAssertGreaterThanOrEqual(summary["rejected_messages"] as? Int ?? 0, answered, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("rejected a message from nan-worker: non-finite gradient or loss"), coordinator.errors)
    }

    /// A message from a mix of random bytes, protocol messages with broken fields, results
    /// for shards and steps that were never given, NaN gradients, wrong versions, and offers
    /// of shared memory that does not exist or is not ours.
    private func hostileMessage(_ round: Int, spec: ModelSpec, generator: inout SeededGenerator) -> [[UInt8]] {
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
        let gradient = SharedBuffer(byteCount: spec.parameterCount * 4)
        let floats = gradient.floats(count: spec.parameterCount)
        for i in 0..<spec.parameterCount { floats[i] = round % 7 == 0 ? .nan : 1e3 }
        let result = ResultHeader(shard: UInt32(generator.nextIndex(below: 4)), sampleCount: 30, lossSum: 1,
                                  correctCount: 1, parameterCount: UInt32(spec.parameterCount), computeMicroseconds: 1)
        var message: [[UInt8]]
        switch round % 8 {
        case 0: message = (0..<(1 + generator.nextIndex(below: 4))).map { _ in random(generator.nextIndex(below: 80)) }
        case 1: message = bytes(result.encode(step: UInt64(generator.nextIndex(below: 4000)), gradient: gradient))
        case 2: message = bytes(Heartbeat.encode())
        case 3: message = bytes(Hello(modelHash: random(32), pid: 1, name: "intruder").encode())
        case 4: message = bytes(TaskHeader(shard: 0, sampleCount: 1, featureCount: 784).encode(step: 1, samples: .bytes(random(785))))
        case 5: message = bytes(Notice(reason: "x").encode(.shutdown))
        case 6:
            let names = ["/zmqt-nope", "/../etc/passwd", "/zmqt-\(getpid())-00", "not-ours"]
            let segment = SharedSegmentInfo(name: names[generator.nextIndex(below: names.count)], nonce: random(16),
                                            slotCount: 4, slotBytes: spec.parameterCount * 4)
            message = bytes(AttachMessage(segment: segment).encode())
        default:
            var shared = result
            shared.sharedSlot = generator.nextIndex(below: 4)
            message = bytes(shared.encodeShared(step: UInt64(generator.nextIndex(below: 4000))))
        }
        // Then break some of them further.
        if round % 3 == 1, let frame = message.indices.randomElement(using: &generator), !message[frame].isEmpty {
            let index = generator.nextIndex(below: message[frame].count)
            switch generator.nextIndex(below: 3) {
            case 0: message[frame][index] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            case 1: message[frame] = Array(message[frame].prefix(index))
            default: message[frame][min(5, message[frame].count - 1)] = 9  // version or type
            }
        }
        return message
    }
}
