import Foundation
import NeuralNet
import Training
import Wire
import XCTest

/// A worker that says hello again (its coordinator fell silent past --coordinator-timeout)
/// starts a new session with a model that holds no weights. Neither side may act as if it
/// still held the last session's weights or tasks: a shard computed with the fresh model's
/// zeros would be accepted as a proper gradient and change the run's weights.
final class SessionTests: XCTestCase {
    private let spec = try! ModelSpec.mlp(inputSize: 784, hidden: [16], classes: 10)

    /// Five samples of varied pixels and labels.
    private func task(step: UInt64, shard: UInt32) -> [OutgoingFrame] {
        let labels: [UInt8] = [3, 1, 4, 1, 5]
        let pixels = (0..<(5 * 784)).map { UInt8(truncatingIfNeeded: $0 * 37 % 251) }
        return TaskHeader(shard: shard, sampleCount: 5, featureCount: 784).encode(step: step, samples: .bytes(labels + pixels))
    }

    /// Weights that tell the classes apart (equal weights give every class the same score,
    /// the loss of a zero model).
    private func weights(step: UInt64) -> [OutgoingFrame] {
        let buffer = SharedBuffer(byteCount: spec.parameterCount * 4)
        let values = buffer.floats(count: spec.parameterCount)
        for index in 0..<spec.parameterCount { values[index] = Float(sin(Double(index) * 0.7)) * 0.05 }
        return WeightsMessage.encode(step: step, parameters: buffer, count: spec.parameterCount, precision: .fp32)
    }

    /// Receives on a ROUTER until a message of `type` arrives; nil after `seconds`.
    private func next(_ type: MessageType, _ router: ZMQSocket, seconds: Double) throws -> (identity: [UInt8], envelope: Envelope)? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let frames = try router.receive(timeoutMilliseconds: 50) else { continue }
            if let envelope = try? Envelope(frames: frames[1...]), envelope.type == type { return (frames[0].bytes, envelope) }
        }
        return nil
    }

    /// A task of the step whose weights the worker's last session had arrives after it was
    /// welcomed again: it waits for this session's weights, and its result is the one those
    /// weights give, not the zero model's.
    func testARejoinedWorkerComputesNothingBeforeItGetsWeightsAgain() throws {
        let context = try ZMQContext()
        let router = try ZMQSocket(context: context, type: .router)
        try router.bind("tcp://127.0.0.1:*")
        let worker = try Child(executable: try executable("worker"),
                               ["--connect", router.lastEndpoint, "--name", "rejoiner", "--no-shared-memory",
                                "--coordinator-timeout", "1"],
                               environment: [RunSecret.environmentVariable: RunSecret.generate().hex])
        defer { kill(worker.pid, SIGKILL); worker.wait(seconds: 10) }
        let identity = try XCTUnwrap(try next(.hello, router, seconds: 30), worker.errors).identity
        func send(_ frames: [OutgoingFrame]) throws { try router.send([.bytes(identity)] + bytes(frames).map { .bytes($0) }) }
        let welcome = Welcome(workerIndex: 0, heartbeatMilliseconds: 200, spec: spec).encode()
        try send(welcome)
        try send(weights(step: 7))
        try send(task(step: 7, shard: 0))
        let first = try XCTUnwrap(try next(.result, router, seconds: 30), worker.errors)
        let expected = try ResultHeader.decode(first.envelope, parameterCount: spec.parameterCount).0.lossSum

        // Silent past its timeout: it says hello again, and is welcomed to a new session.
        XCTAssertNotNil(try next(.hello, router, seconds: 30), worker.errors)
        try send(welcome)
        try send(task(step: 7, shard: 1))
        // Time to answer, had it kept believing it held step 7's weights.
        var early: (identity: [UInt8], envelope: Envelope)?
        for _ in 0..<8 where early == nil {
            try send(Heartbeat.encode(step: 7))  // not silent: it keeps this session
            early = try next(.result, router, seconds: 0.2)
        }
        try send(weights(step: 7))
        let answer = try XCTUnwrap(early ?? (try next(.result, router, seconds: 30)), worker.errors)
        XCTAssertEqual(answer.envelope.step, 7)
        XCTAssertNil(early, "a task was computed before the new session's weights came")
        XCTAssertEqual(try ResultHeader.decode(answer.envelope, parameterCount: spec.parameterCount).0.lossSum, expected,
                       "the shard was computed with other weights than step 7's")
    }

    /// A raw peer that holds shards of a step says hello again: the coordinator hands it the
    /// step's weights and those shards again at once (its last session took them along),
    /// rather than wait out --worker-timeout for answers that never come.
    func testACoordinatorResendsWeightsAndShardsToAWorkerThatSaysHelloAgain() throws {
        let data = try makeSyntheticData()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coordinator = try Child("coordinator", ["--data", data, "--hidden", "16", "--batch-size", "60", "--max-steps", "5",
                                                    "--shards", "2", "--seed", "3", "--quiet", "--worker-timeout", "60",
                                                    "--workers", "1", "--bind", endpoint, "--log-level", "notice"])
        defer { kill(coordinator.pid, SIGKILL); coordinator.wait(seconds: 10) }
        let context = try ZMQContext()
        let socket = try ZMQSocket(context: context, type: .dealer)
        try socket.connect(endpoint)
        XCTAssertNotNil(try joinAsWorker(socket, endpoint: endpoint, name: "raw"), coordinator.errors)

        /// The steps of the weights and the tasks that come within `seconds`.
        func received(seconds: Double) throws -> (weights: [UInt64], tasks: [UInt64]) {
            var seen: (weights: [UInt64], tasks: [UInt64]) = ([], [])
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                guard let frames = try socket.receive(timeoutMilliseconds: 50),
                      let envelope = try? Envelope(frames: frames[...]) else { continue }
                if envelope.type == .weights { seen.weights.append(envelope.step) }
                if envelope.type == .task { seen.tasks.append(envelope.step) }
            }
            return seen
        }
        // (A hello repeated before its welcome came is a new session too: counts may double.)
        let before = try received(seconds: 3)
        XCTAssertEqual(Set(before.weights), [0], coordinator.errors)
        XCTAssertGreaterThanOrEqual(before.tasks.filter { $0 == 0 }.count, 2, coordinator.errors)

        XCTAssertNotNil(try joinAsWorker(socket, endpoint: endpoint, name: "raw"), coordinator.errors)
        let after = try received(seconds: 5)
        XCTAssertEqual(Set(after.weights), [0], "step 0's weights again, for the new session\n\(coordinator.errors)")
        XCTAssertGreaterThanOrEqual(after.tasks.filter { $0 == 0 }.count, 2, "both shards of step 0 again\n\(coordinator.errors)")
        XCTAssertFalse(coordinator.errors.contains("is lost"), coordinator.errors)
    }
}
