import Foundation
import MNISTData
import NeuralNet
import Training
import Wire
import XCTest

/// The worker side of hostile input: a coordinator (a ROUTER socket in this test) that
/// welcomes a real worker process and then sends it labels past the class count, random,
/// mutated and truncated messages. The worker must refuse and count them, never trap or
/// hang, still compute a proper task afterwards, and exit cleanly when told to.
final class HostileCoordinatorTests: XCTestCase {
    private let spec = try! ModelSpec.mlp(inputSize: 784, hidden: [16], classes: 10)

    /// A task of `count` samples whose labels are `label`.
    private func task(step: UInt64, shard: UInt32, count: Int, label: UInt8) -> [OutgoingFrame] {
        let samples = [UInt8](repeating: label, count: count) + [UInt8](repeating: 100, count: count * 784)
        return TaskHeader(shard: shard, sampleCount: UInt32(count), featureCount: 784).encode(step: step, samples: .bytes(samples))
    }

    private func weights(step: UInt64) -> [OutgoingFrame] {
        let buffer = SharedBuffer(byteCount: spec.parameterCount * 4)
        buffer.floats(count: spec.parameterCount).update(repeating: 0.01, count: spec.parameterCount)
        return WeightsMessage.encode(step: step, parameters: buffer, count: spec.parameterCount, precision: .fp32)
    }

    /// A ROUTER in this test that has welcomed a real worker process (which proves its run
    /// secret from the environment): where each test that speaks as the coordinator starts.
    private func welcomedWorker(environment extra: [String: String] = [:], arguments: [String] = [],
                                onHello: (Hello) -> Void = { _ in }) throws
        -> (router: ZMQSocket, worker: Child, endpoint: String, send: ([[UInt8]]) throws -> Void) {
        let router = try ZMQSocket(context: try ZMQContext(), type: .router)
        try router.bind("tcp://127.0.0.1:*")
        let endpoint = router.lastEndpoint
        let worker = try Child(executable: try executable("worker"),
                               ["--connect", endpoint, "--name", "target", "--no-shared-memory", "--coordinator-timeout", "30"] + arguments,
                               environment: [RunSecret.environmentVariable: RunSecret.generate().hex].merging(extra) { $1 })
        let helloFrames = try XCTUnwrap(try router.receive(timeoutMilliseconds: 30_000), worker.errors)
        let identity = helloFrames[0].bytes
        let helloEnvelope = try Envelope(frames: helloFrames[1...])
        XCTAssertEqual(helloEnvelope.type, .hello)
        onHello(try Hello(helloEnvelope))
        let send = { (frames: [[UInt8]]) throws -> Void in _ = try router.send([.bytes(identity)] + frames.map { .bytes($0) }) }
        try send(bytes(Welcome(workerIndex: 0, heartbeatMilliseconds: 200, spec: spec).encode()))
        return (router, worker, endpoint, send)
    }

    /// Receives until a result arrives (heartbeats and the like skipped); nil after `seconds`.
    private func nextResult(_ router: ZMQSocket, seconds: Double) throws -> (step: UInt64, header: ResultHeader)? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let frames = try router.receive(timeoutMilliseconds: 100) else { continue }
            guard let envelope = try? Envelope(frames: frames[1...]), envelope.type == .result else { continue }
            return (envelope.step, try ResultHeader.decode(envelope, parameterCount: spec.parameterCount).0)
        }
        return nil
    }

    func testAWorkerSurvivesAHostileCoordinator() throws {
        let (router, worker, endpoint, send) = try welcomedWorker()

        // Labels past the class count (the loss would write past its buffer): refused.
        try send(bytes(weights(step: 1)))
        try send(bytes(task(step: 1, shard: 0, count: 5, label: 200)))
        try send(bytes(task(step: 1, shard: 1, count: 5, label: 10)))
        // Then thousands of random, mutated and truncated messages.
        var generator = SeededGenerator(seed: 77)
        var sent = 0
        for round in 0..<3000 {
            let frames = hostileMessage(round, generator: &generator)
            // A well-formed shutdown or reject would end the worker, as it should: skip those.
            let messages = frames.map { bytes in bytes.withUnsafeBytes { ZMQMessage(copying: $0) } }
            if let envelope = try? Envelope(frames: messages[...]), [.shutdown, .reject].contains(envelope.type) { continue }
            try send(frames)
            sent += 1
            if round % 500 == 499 { usleep(20_000) }
        }
        // A proper step afterwards is still computed, and only it: the bad-label shards of
        // step 1 never were.
        try send(bytes(weights(step: 1_000_000)))
        try send(bytes(task(step: 1_000_000, shard: 3, count: 4, label: 7)))
        var answered: (step: UInt64, header: ResultHeader)?
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, let result = try nextResult(router, seconds: 60) {
            XCTAssertFalse(result.step == 1 && result.header.shard < 2, "a task with labels past the class count was computed")
            if result.step == 1_000_000 {
                answered = result
                break
            }
        }
        XCTAssertEqual(answered?.header.shard, 3, worker.errors)
        XCTAssertEqual(answered?.header.sampleCount, 4)
        XCTAssertEqual(answered.map { $0.header.lossSum.isFinite }, true)

        try send(bytes(Notice(reason: "done\n\u{1B}[2Jinjected").encode(.shutdown)))
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        // One line about malformed messages, naming the coordinator, not one per message.
        let warnings = worker.errors.components(separatedBy: "ignored a malformed message from the coordinator at \(endpoint)").count - 1
        XCTAssertEqual(warnings, 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("label 200, but the model has 10 classes") || worker.errors.contains("label"), worker.errors)
        XCTAssertFalse(worker.errors.contains("\u{1B}"), "a raw escape reached the worker's log")
        XCTAssertGreaterThan(sent, 2000)
    }

    /// One bad task among a step's tasks is rejected alone: the worker answers the good
    /// ones, whether the tasks came ahead of their weights (queued, then run together) or
    /// after them.
    func testOneBadTaskDoesNotDropTheStepsOtherTasks() throws {
        let (router, worker, endpoint, send) = try welcomedWorker()

        // Step 5: the tasks come ahead of their weights; the middle one has a label past
        // the class count.
        try send(bytes(task(step: 5, shard: 0, count: 3, label: 1)))
        try send(bytes(task(step: 5, shard: 1, count: 3, label: 200)))
        try send(bytes(task(step: 5, shard: 2, count: 3, label: 2)))
        try send(bytes(weights(step: 5)))
        // Step 6: weights first, then the tasks; the middle one's samples are cut short.
        try send(bytes(weights(step: 6)))
        try send(bytes(task(step: 6, shard: 0, count: 3, label: 3)))
        var truncated = bytes(task(step: 6, shard: 1, count: 3, label: 4))
        truncated[truncated.count - 1].removeLast(100)
        try send(truncated)
        try send(bytes(task(step: 6, shard: 2, count: 3, label: 5)))

        var answered: Set<[UInt64]> = []
        let deadline = Date().addingTimeInterval(60)
        while answered.count < 4, Date() < deadline, let result = try nextResult(router, seconds: 60) {
            XCTAssertEqual(result.header.sampleCount, 3)
            XCTAssertTrue(result.header.lossSum.isFinite)
            answered.insert([result.step, UInt64(result.header.shard)])
        }
        XCTAssertEqual(answered, [[5, 0], [5, 2], [6, 0], [6, 2]], worker.errors)
        // Nothing else comes: the bad shards were refused, not computed late.
        XCTAssertNil(try nextResult(router, seconds: 1))

        try send(bytes(Notice(reason: "done").encode(.shutdown)))
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        let warnings = worker.errors.components(separatedBy: "ignored a malformed message from the coordinator at \(endpoint)").count - 1
        XCTAssertEqual(warnings, 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("label 200, but the model has 10 classes"), worker.errors)
    }

    /// A worker with its own training set (`--data`) says so in its hello, and checks every
    /// index task against it: indices past its set, more samples than it can hold, a count
    /// the data frame does not hold are refused and counted, never trapped on; a proper
    /// index task is computed on exactly the samples it names.
    func testAWorkerRefusesIndexTasksOutsideItsTrainingSet() throws {
        let folder = try makeSyntheticData(trainCount: 100, testCount: 10)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let trainingSet = try DataDirectory.load(.train, from: folder)
        var hello: Hello?
        let (router, worker, endpoint, send) = try welcomedWorker(arguments: ["--data", folder]) { hello = $0 }
        XCTAssertEqual(hello?.dataDigest, trainingSet.contentSHA256)

        try send(bytes(weights(step: 1)))
        // Index 100 of a set of 100.
        try send(bytes(IndexTask(shard: 0, featureCount: 784, indices: [0, 100]).encode(step: 1)))
        // A count of 2^32 - 1 over a frame of 2 indices.
        var oversized = bytes(IndexTask(shard: 1, featureCount: 784, indices: [1, 2]).encode(step: 1))
        withUnsafeBytes(of: UInt32.max.littleEndian) { oversized[1].replaceSubrange(4..<8, with: $0) }
        try send(oversized)
        // More samples than the worker's workspace may hold, each index in range.
        let tooMany = WireLimits.maximumSamples(for: spec) + 1
        try send(bytes(IndexTask(shard: 2, featureCount: 784, indices: [UInt32](repeating: 5, count: tooMany)).encode(step: 1)))
        // A count of 5 over 4 indices (the header's length consistent with the frames).
        var short = bytes(IndexTask(shard: 4, featureCount: 784, indices: [1, 2, 3, 4]).encode(step: 1))
        withUnsafeBytes(of: UInt32(5).littleEndian) { short[1].replaceSubrange(4..<8, with: $0) }
        try send(short)
        // Then a proper one.
        let good: [UInt32] = [0, 99, 42]
        try send(bytes(IndexTask(shard: 3, featureCount: 784, indices: good).encode(step: 1)))

        let result = try XCTUnwrap(try nextResult(router, seconds: 60), worker.errors)
        XCTAssertEqual(result.step, 1)
        XCTAssertEqual(result.header.shard, 3, "a refused index task was computed")
        XCTAssertEqual(result.header.sampleCount, 3)
        // The loss of exactly those samples, computed here from the same files.
        let model = Sequential(spec: spec, parameters: Array(repeating: 0.01, count: spec.parameterCount))
        var pixels = [UInt8](repeating: 0, count: good.count * 784)
        var labels = [UInt8](repeating: 0, count: good.count)
        trainingSet.gather(good.map { Int($0) }[...], pixels: &pixels, labels: &labels)
        var gradient = [Float](repeating: 0, count: spec.parameterCount)
        let expected = model.computeGradientSum(pixels: pixels, labels: labels, rows: good.count, gradient: &gradient)
        XCTAssertEqual(result.header.lossSum, expected.lossSum, accuracy: 1e-9 * max(1, expected.lossSum))
        XCTAssertEqual(Int(result.header.correctCount), expected.correctCount)
        XCTAssertNil(try nextResult(router, seconds: 1))

        // Then a thousand mutated and truncated index tasks: refused or computed, never a trap.
        var generator = SeededGenerator(seed: 17)
        for round in 0..<1000 {
            let indices = (0..<(1 + generator.nextIndex(below: 6))).map { _ in UInt32(generator.nextIndex(below: 120)) }
            var message = bytes(IndexTask(shard: 5, featureCount: 784, indices: indices).encode(step: 2))
            let frame = 1 + generator.nextIndex(below: 2)
            let index = generator.nextIndex(below: message[frame].count)
            switch generator.nextIndex(below: 3) {
            case 0: message[frame][index] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            case 1: message[frame] = Array(message[frame].prefix(index))
            default: message[frame].insert(UInt8(truncatingIfNeeded: generator.next()), at: index)
            }
            withUnsafeBytes(of: UInt64(message[1].count + message[2].count).littleEndian) { message[0].replaceSubrange(16..<24, with: $0) }
            if round == 0 { try send(bytes(weights(step: 2))) }
            try send(message)
            if round % 250 == 249 { usleep(20_000) }
        }
        try send(bytes(weights(step: 3)))
        try send(bytes(IndexTask(shard: 6, featureCount: 784, indices: good).encode(step: 3)))
        var last: (step: UInt64, header: ResultHeader)?
        while let result = try nextResult(router, seconds: 60) {
            XCTAssertTrue(result.header.lossSum.isFinite)
            XCTAssertLessThanOrEqual(result.header.sampleCount, 6)
            if result.step == 3 {
                last = result
                break
            }
        }
        XCTAssertEqual(last?.header.shard, 6, worker.errors)
        XCTAssertEqual(last.map { $0.header.lossSum }, result.header.lossSum, worker.errors)

        try send(bytes(Notice(reason: "done").encode(.shutdown)))
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        let warnings = worker.errors.components(separatedBy: "ignored a malformed message from the coordinator at \(endpoint)").count - 1
        XCTAssertEqual(warnings, 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("sample index 100 is outside 0…99"), worker.errors)
        let refused = worker.errors.range(of: #"(\d+) malformed messages from the coordinator were refused in all"#, options: .regularExpression)
            .map { Int(worker.errors[$0].prefix { $0.isNumber }) ?? 0 } ?? 0
        XCTAssertGreaterThan(refused, 4 + 300, worker.errors)
    }

    /// A worker without `--data` refuses an index task: it has nothing to gather from.
    func testAWorkerWithoutDataRefusesIndexTasks() throws {
        var hello: Hello?
        let (router, worker, _, send) = try welcomedWorker { hello = $0 }
        XCTAssertEqual(hello?.hasData, false)
        try send(bytes(weights(step: 1)))
        try send(bytes(IndexTask(shard: 0, featureCount: 784, indices: [0, 1]).encode(step: 1)))
        try send(bytes(task(step: 1, shard: 1, count: 2, label: 3)))
        let result = try XCTUnwrap(try nextResult(router, seconds: 60), worker.errors)
        XCTAssertEqual(result.header.shard, 1)
        try send(bytes(Notice(reason: "done").encode(.shutdown)))
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        XCTAssertTrue(worker.errors.contains("this worker was started without --data"), worker.errors)
        XCTAssertTrue(worker.errors.contains("1 malformed messages from the coordinator were refused in all"), worker.errors)
    }

    /// A send that fails in the worker is the worker's failure, not a malformed message
    /// from the coordinator: the worker exits 1 with one line naming what failed. (The
    /// failure is injected through a hook that debug builds have.)
    func testTheWorkersOwnSendFailureIsNotBlamedOnTheCoordinator() throws {
        #if !DEBUG
        throw XCTSkip("the send failure hook exists in debug builds only")
        #else
        // Hellos and heartbeats go out; a result (a gradient of the whole model) fails.
        let (router, worker, endpoint, send) = try welcomedWorker(environment: ["ZMQT_FAIL_SENDS_OVER_BYTES": "\(spec.parameterCount)"])
        defer { withExtendedLifetime(router) {} }  // the coordinator's end of the link stays open
        try send(bytes(weights(step: 1)))
        try send(bytes(task(step: 1, shard: 4, count: 3, label: 1)))
        XCTAssertEqual(worker.wait(seconds: 30), 1, worker.errors)
        let lines = worker.errors.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("target: error: sending the result of step 1 shard 4 to the coordinator at \(endpoint) failed: send (failure injected"), worker.errors)
        XCTAssertFalse(worker.errors.contains("malformed"), worker.errors)
        #endif
    }

    /// A worker refused by its coordinator says so in one line and exits 2, with the reason
    /// escaped.
    func testARefusalEndsTheWorkerWithOneLine() throws {
        let context = try ZMQContext()
        let router = try ZMQSocket(context: context, type: .router)
        try router.bind("tcp://127.0.0.1:*")
        let worker = try Child(executable: try executable("worker"), ["--connect", router.lastEndpoint, "--name", "target"],
                               environment: [RunSecret.environmentVariable: RunSecret.generate().hex])
        let hello = try XCTUnwrap(try router.receive(timeoutMilliseconds: 30_000), worker.errors)
        try router.send([.bytes(hello[0].bytes)] + Notice(reason: "go away\nFAKE: all good").encode(.reject))
        XCTAssertEqual(worker.wait(seconds: 30), 2, worker.errors)
        let lines = worker.errors.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("go away\\u{a}FAKE: all good (coordinator \(router.lastEndpoint))"), worker.errors)
    }

    /// Random bytes, then well-formed messages of every kind with broken fields: huge steps,
    /// sample counts and offsets, models too big to hold, shared slots that were never
    /// offered, and mutations of each.
    private func hostileMessage(_ round: Int, generator: inout SeededGenerator) -> [[UInt8]] {
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: generator.next()) } }
        let step = UInt64(generator.nextIndex(below: 5))
        var message: [[UInt8]]
        switch round % 9 {
        case 0: message = (0..<(1 + generator.nextIndex(below: 4))).map { _ in random(generator.nextIndex(below: 80)) }
        case 1: message = bytes(task(step: step, shard: UInt32(generator.nextIndex(below: 4)), count: 3,
                                     label: UInt8(generator.nextIndex(below: 256))))
        case 2: message = bytes(weights(step: step))
        case 3: message = bytes(TaskHeader(shard: 0, sampleCount: UInt32.max, featureCount: 784)
                                    .encodeShared(step: step, slot: 0, offset: Int(UInt32.max)))
        case 4:
            let big = try! ModelSpec(inputSize: 784, layers: [Dense(inputSize: 784, outputSize: 1 << 20, activation: .relu),
                                                              Dense(inputSize: 1 << 20, outputSize: 10, activation: .softmax)])
            message = bytes(Welcome(workerIndex: 1, heartbeatMilliseconds: 100, spec: big).encode())
        case 5: message = bytes(WeightsMessage.encodeShared(step: step, slot: 1, count: spec.parameterCount, precision: .fp32))
        case 6: message = bytes(Challenge(nonce: random(16)).encode())
        case 7:
            message = bytes(task(step: step, shard: 0, count: 2, label: 1))
            withUnsafeBytes(of: (UInt64(1) << 63 | UInt64(generator.nextIndex(below: 1000))).littleEndian) {
                message[0].replaceSubrange(8..<16, with: $0)
            }
        default: message = bytes(Heartbeat.encode(step: step))
        }
        if round % 2 == 1, let frame = message.indices.randomElement(using: &generator), !message[frame].isEmpty {
            let index = generator.nextIndex(below: message[frame].count)
            switch generator.nextIndex(below: 3) {
            case 0: message[frame][index] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            case 1: message[frame] = Array(message[frame].prefix(index))
            default: message[frame].insert(UInt8(truncatingIfNeeded: generator.next()), at: index)
            }
        }
        return message
    }
}
