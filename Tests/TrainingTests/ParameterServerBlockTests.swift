import Foundation
import Logging
import NeuralNet
import Wire
import XCTest
@testable import Training

/// A parameter server's intake of a host's blocks (`worker --processes K`), over a real
/// socket from a peer that proved the run secret: a block counts for each of its shards, a
/// block replaces shards of it that came first (their re-runs won the race there), a shard a
/// block holds already is a stale copy, and a block that does not fit the step is refused and
/// counted. The update is the one of the shards one by one, bit for bit.
final class ParameterServerBlockTests: XCTestCase {
    private let spec = try! ModelSpec.mlp(inputSize: 6, hidden: [5], classes: 3)
    private let settings = TrainingConfig().rangeOptimizerSettings
    private var count: Int { spec.parameterCount }
    private var whole: ParameterRange { ParameterRange(lower: 0, count: count) }

    private func envelope(_ frames: [OutgoingFrame]) throws -> Envelope {
        try Envelope(frames: bytes(frames).map { bytes in bytes.withUnsafeBytes { ZMQMessage(copying: $0) } }[...])
    }

    /// A gradient range of the whole model for step 5 of generation 1.
    private func gradientRange(_ report: ShardReport, _ values: [Float], _ precision: WirePrecision) -> [OutgoingFrame] {
        let buffer = SharedBuffer(byteCount: values.count * precision.bytesPerValue)
        values.withUnsafeBufferPointer { precision.encode($0.baseAddress!, count: $0.count, into: buffer.pointer) }
        return RangeValuesHeader(generation: 1, report: report, range: whole, precision: precision)
            .encode(step: 5, values: buffer, offset: 0)
    }

    private func report(_ shard: Int, blockCount: Int = 1) -> ShardReport {
        ShardReport(shard: shard, worker: 3, sampleCount: 10 * blockCount, lossSum: 1, correctCount: 1, computeMicroseconds: 1,
                    blockCount: blockCount)
    }

    func testABlockCountsForItsShardsAndBadBlocksAreRefused() throws {
        let context = try ZMQContext()
        let server = try ParameterServer(context: context, bindEndpoint: "tcp://127.0.0.1:0", curve: false,
                                         maximumMessageBytes: try XCTUnwrap(ParameterServer.maximumMessageBytes(for: spec)),
                                         logger: Logger(label: "test"))
        let secret = RunSecret.generate()
        server.spec = spec
        server.runSecret = secret
        var generator = SeededGenerator(seed: 9)
        let initial = RangeState(range: whole, iteration: 0, parameters: (0..<count).map { _ in Float.random(in: -1...1, using: &generator) },
                                 optimizerState: [Array(repeating: 0, count: count)])
        try server.handleFromCoordinator(envelope(ServeAssignment(generation: 1, step: 5, state: initial, shardCount: 4,
                                                                  precision: .fp16, optimizer: settings).encode()))
        try server.handleFromCoordinator(envelope(StepPlan(generation: 1, step: 5, sampleCount: 30,
                                                           nonEmpty: [true, true, true, false]).encode()))
        _ = server.takeOutbox()

        // A peer proves the secret and gets step 5's weights.
        let peer = try ZMQSocket(context: context, type: .dealer)
        try peer.connect(server.endpoint)
        try peer.send(Hello(pid: 4, name: "host").encode())
        let challenge = try Challenge(Envelope(frames: XCTUnwrap(receive(on: peer, serving: server))[...]))
        try peer.send(Hello(pid: 4, name: "host", proof: secret.proof(nonce: challenge.nonce, pid: 4, name: "host")).encode())
        XCTAssertEqual(try Envelope(frames: XCTUnwrap(receive(on: peer, serving: server))[...]).type, .weightsRange)

        // Shard gradients as fp16 gives them (shard 3 has no samples), and the block 0..<2's sum.
        let shards = (0..<3).map { _ in
            (0..<count).map { _ in HalfFloat.decode(HalfFloat.encode(Float.random(in: -4...4, using: &generator))) }
        }
        let block = zip(shards[0], shards[1]).map { $0 + $1 }
        // Shard 0 by itself, then the block that holds it (it replaces it), then shard 1 (stale).
        try peer.send(gradientRange(report(0), shards[0], .fp16))
        try peer.send(gradientRange(report(0, blockCount: 2), block, .fp32))
        try peer.send(gradientRange(report(1), shards[1], .fp16))
        // Refused: a block with an empty shard, a block in the run's fp16, a block past the
        // step's shards, a misaligned block, a block whose values are short.
        try peer.send(gradientRange(report(2, blockCount: 2), block, .fp32))
        try peer.send(gradientRange(report(0, blockCount: 2), block, .fp16))
        try peer.send(gradientRange(report(0, blockCount: 8), block, .fp32))
        var misaligned = bytes(gradientRange(report(0, blockCount: 2), block, .fp32))
        withUnsafeBytes(of: UInt32(1).littleEndian) { misaligned[1].replaceSubrange(4..<8, with: $0) }
        try peer.send(misaligned.map { .bytes($0) })
        var short = bytes(gradientRange(report(0, blockCount: 2), block, .fp32))
        short[2].removeLast(4)
        withUnsafeBytes(of: UInt64(short[1].count + short[2].count).littleEndian) { short[0].replaceSubrange(16..<24, with: $0) }
        try peer.send(short.map { .bytes($0) })
        // Shard 2 completes the step.
        try peer.send(gradientRange(report(2), shards[2], .fp16))

        let deadline = Date().addingTimeInterval(10)
        while server.stepsApplied == 0 || server.rejectedMessages < 5, Date() < deadline {
            server.drain()
            usleep(2000)
        }
        XCTAssertEqual(server.stepsApplied, 1)
        XCTAssertEqual(server.rejectedMessages, 5)
        XCTAssertEqual(server.staleMessages, 1)
        XCTAssertEqual(server.rangesAccepted, 3)
        let outbox = try server.takeOutbox().map(envelope)
        // Receipts, one by one or several taken in one drain in one message, then `applied`.
        XCTAssertEqual(outbox.last?.type, .applied)
        let receipts = try outbox.dropLast().flatMap { message in
            message.type == .receipts ? try ShardReceipts(message).reports : [try ShardVerdictMessage(message).report]
        }
        XCTAssertEqual(receipts.map(\.shards), [0..<1, 0..<2, 1..<2, 2..<3])

        // The range's new parameters: those of the shards added one by one.
        let expected = RangeUpdate(state: initial, settings: settings, spec: spec, shardCount: 4)
        shards[0].withUnsafeBufferPointer { s0 in
            shards[1].withUnsafeBufferPointer { s1 in
                shards[2].withUnsafeBufferPointer { s2 in
                    expected.apply(sampleCount: 30) { [s0.baseAddress!, s1.baseAddress!, s2.baseAddress!, nil][$0] }
                }
            }
        }
        try server.handleFromCoordinator(envelope(GenerationMessage.encode(.snapshotRequest, step: 6, generation: 1)))
        let answer = try SnapshotAnswer(XCTUnwrap(server.takeOutbox().map(envelope).first), parameterCount: count)
        XCTAssertEqual(answer.step, 6)
        XCTAssertEqual(answer.state.parameters.map(\.bitPattern), expected.parameters.map(\.bitPattern))
    }

    /// The next message on `socket`, the server drained meanwhile.
    private func receive(on socket: ZMQSocket, serving server: ParameterServer) throws -> [ZMQMessage]? {
        for _ in 0..<500 {
            server.drain()
            if let frames = try socket.receive(timeoutMilliseconds: 10) { return frames }
        }
        return nil
    }
}
