import Logging
import NeuralNet
import Wire
import XCTest
@testable import Training

/// A parameter server on its coordinator's host, alone: messages handed to it as its worker
/// would, segments of this process standing for a worker's. What it reads from shared memory
/// is checked as a message would be, and its weights go into its own sealed segment.
final class ParameterServerSharedMemoryTests: XCTestCase {
    private var server: ParameterServer!
    private var spec: ModelSpec!
    private var count: Int { spec.parameterCount }
    private let report = { (shard: Int) in
        ShardReport(shard: shard, worker: 3, sampleCount: 10, lossSum: 2, correctCount: 4, computeMicroseconds: 1)
    }

    override func setUpWithError() throws {
        spec = try ModelSpec.mlp(inputSize: 20, hidden: [7], classes: 3)
        server = try ParameterServer(context: ZMQContext(), bindEndpoint: "tcp://127.0.0.1:0", curve: false,
                                     maximumMessageBytes: try XCTUnwrap(ParameterServer.maximumMessageBytes(for: spec)),
                                     logger: Logger(label: "test"))
        server.spec = spec
        server.sharesHost = true
    }

    private func deliver(_ frames: [OutgoingFrame]) throws {
        let bytes = frames.map { frame -> [UInt8] in
            switch frame {
            case let .bytes(bytes): bytes
            case let .shared(buffer, offset, count): Array(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count))
            }
        }
        try server.handleFromCoordinator(Envelope(frames: bytes.map { b in b.withUnsafeBytes { ZMQMessage(copying: $0) } }[...]))
    }

    private func sentTypes() throws -> [MessageType] {
        try server.takeOutbox().map(messageType)
    }

    private func messageType(_ frames: [OutgoingFrame]) throws -> MessageType {
        guard case let .bytes(header) = frames[0] else { throw ProtocolError.badMagic }
        return try XCTUnwrap(MessageType(rawValue: UInt16(header[6]) | UInt16(header[7]) << 8))
    }

    private func bytes(_ frames: [OutgoingFrame]) -> [ZMQMessage] {
        frames.map { frame in
            guard case let .bytes(bytes) = frame else { return ZMQMessage(copying: UnsafeRawBufferPointer(start: nil, count: 0)) }
            return bytes.withUnsafeBytes { ZMQMessage(copying: $0) }
        }
    }

    private func assign(generation: UInt32, parameters: [Float]) throws {
        let settings = RangeOptimizerSettings(kind: .sgd, learningRate: 0.1, decay: 0, momentum: 0.9,
                                              beta1: 0.9, beta2: 0.999, epsilon: 1e-8, l2: 0)
        let state = RangeState(range: ParameterRange(lower: 0, count: count), iteration: 0, parameters: parameters,
                               optimizerState: [Array(repeating: 0, count: count)])
        try deliver(ServeAssignment(generation: generation, step: 0, state: state, shardCount: 2, precision: .fp32, optimizer: settings).encode())
    }

    /// A worker's sealed gradient segment with `values` in slot 1.
    private func gradientSegment(_ values: [Float], slotBytes: Int? = nil, sealed: Bool = true) throws -> SharedSegment {
        let segment = try SharedSegment(slotCount: 4, slotBytes: slotBytes ?? count * 4, sealed: sealed)
        values.withUnsafeBytes { segment.slot(1).copyMemory(from: $0.baseAddress!, byteCount: min($0.count, segment.info.slotBytes)) }
        return segment
    }

    /// One result's notice of step 0 of generation 1: its gradient in slot 1 of `segment`.
    private func notice(_ report: ShardReport, _ segment: SharedSegment) -> [OutgoingFrame] {
        ShardsInSegments(generation: 1, step: 0, entries: [.init(report: report, segment: segment.info, slot: 1)]).encode()
    }

    func testGradientsAreReadWhereTheyLieAndTheWeightsGoIntoTheServersSegment() throws {
        let seed = (0..<count).map { Float($0 % 13) / 13 }
        try assign(generation: 1, parameters: seed)
        XCTAssertEqual(try sentTypes(), [.rangeSegment])
        let weights = try XCTUnwrap(server.weightsSegment)
        XCTAssertTrue(weights.cannotShrink)
        let seeded = Array(UnsafeBufferPointer(start: weights.slot(0).assumingMemoryBound(to: Float.self), count: count))
        XCTAssertEqual(seeded, seed, "the seed's weights in the slot of step 0")

        let gradients = [(0..<count).map { Float($0 % 5) }, (0..<count).map { -Float($0 % 3) }]
        let first = try gradientSegment(gradients[0])
        try deliver(notice(report(0), first))
        XCTAssertEqual(try sentTypes(), [.receipt])
        try deliver(StepPlan(generation: 1, step: 0, sampleCount: 20, nonEmpty: [true, true]).encode())
        let second = try gradientSegment(gradients[1])
        try deliver(notice(report(1), second))
        XCTAssertEqual(try sentTypes(), [.receipt, .applied])
        // The same update as the range's own, in the slot of step 1.
        let expected = RangeUpdate(state: RangeState(range: ParameterRange(lower: 0, count: count), iteration: 0, parameters: seed,
                                                     optimizerState: [Array(repeating: 0, count: count)]),
                                   settings: RangeOptimizerSettings(kind: .sgd, learningRate: 0.1, decay: 0, momentum: 0.9,
                                                                    beta1: 0.9, beta2: 0.999, epsilon: 1e-8, l2: 0),
                                   spec: spec, shardCount: 2)
        gradients[0].withUnsafeBufferPointer { g0 in
            gradients[1].withUnsafeBufferPointer { g1 in expected.apply(sampleCount: 20) { $0 == 0 ? g0.baseAddress! : g1.baseAddress! } }
        }
        let written = Array(UnsafeBufferPointer(start: weights.slot(1).assumingMemoryBound(to: Float.self), count: count))
        XCTAssertEqual(written, expected.parameters)
        XCTAssertNotEqual(written, seed)
        XCTAssertEqual(server.rejectedMessages, 0)
    }

    /// One message for a round's results: every entry taken in order, and an entry after the
    /// one that completed the step (a re-run) acknowledged as stale, not taken for the next.
    func testOneMessageCarriesARoundsResults() throws {
        try assign(generation: 1, parameters: Array(repeating: 0.5, count: count))
        _ = server.takeOutbox()
        try deliver(StepPlan(generation: 1, step: 0, sampleCount: 20, nonEmpty: [true, true]).encode())
        let first = try gradientSegment(Array(repeating: 1, count: count))
        let second = try gradientSegment(Array(repeating: -2, count: count))
        let entries = [ShardsInSegments.Entry(report: report(0), segment: first.info, slot: 1),
                       ShardsInSegments.Entry(report: report(1), segment: second.info, slot: 1),
                       ShardsInSegments.Entry(report: report(0), segment: second.info, slot: 1)]
        try deliver(ShardsInSegments(generation: 1, step: 0, entries: entries).encode())
        // The two taken: one receipts message, before `applied`; the late copy's on its own.
        let sent = server.takeOutbox()
        XCTAssertEqual(try sent.map(messageType), [.receipts, .applied, .receipt])
        let receipts = try ShardReceipts(Envelope(frames: bytes(sent[0])[...]))
        XCTAssertEqual(receipts.reports.map(\.shard), [0, 1])
        XCTAssertEqual(receipts.step, 0)
        XCTAssertEqual(server.stepsApplied, 1)
        XCTAssertEqual(server.staleMessages, 1)
        XCTAssertEqual(server.rejectedMessages, 0)
    }

    /// A segment no entry named for more than `maximumIdleSegmentSteps` steps (a lost
    /// worker's, or one a respawned worker replaced) is closed; the one in use stays open.
    func testIdleGradientSegmentsAreClosed() throws {
        try assign(generation: 1, parameters: Array(repeating: 0.5, count: count))
        let gone = try gradientSegment(Array(repeating: 1, count: count))
        let live = try gradientSegment(Array(repeating: -1, count: count))
        let idle = Int(ParameterServer.maximumIdleSegmentSteps)
        for step in 0...(idle + 1) {
            try deliver(StepPlan(generation: 1, step: UInt64(step), sampleCount: 20, nonEmpty: [true, true]).encode())
            try deliver(ShardsInSegments(generation: 1, step: UInt64(step), entries: [
                .init(report: report(0), segment: (step == 0 ? gone : live).info, slot: 1),
                .init(report: report(1), segment: live.info, slot: 1),
            ]).encode())
            XCTAssertEqual(server.stepsApplied, step + 1)
            XCTAssertEqual(server.gradientSegments[gone.info.name] != nil, step <= idle, "after step \(step)")
        }
        XCTAssertNotNil(server.gradientSegments[live.info.name])
        XCTAssertEqual(server.rejectedMessages, 0)
    }

    /// A segment of the wrong size, one that can shrink, and NaN in a gradient with a finite
    /// loss: each refused back to the coordinator (which gives the shard to another) and
    /// counted; a good one after them is taken.
    func testSegmentsThatDoNotFitAreRefused() throws {
        try assign(generation: 1, parameters: Array(repeating: 0.5, count: count))
        _ = server.takeOutbox()
        let values = Array(repeating: Float(1), count: count)
        let oversized = try gradientSegment(values, slotBytes: count * 4 + 64)
        let unsealed = try gradientSegment(values, sealed: false)
        var poisoned = values
        poisoned[count / 2] = .nan
        let nan = try gradientSegment(poisoned)
        for segment in [oversized, unsealed, nan] {
            try deliver(notice(report(0), segment))
            XCTAssertEqual(try sentTypes(), [.rangeRefused], segment.info.name)
        }
        XCTAssertEqual(server.rejectedMessages, 3)
        // A slot past the segment's end never reaches the mapping: the decoder refuses it.
        var outside = ShardsInSegments.Entry(report: report(0), segment: nan.info, slot: 3)
        outside.segment.slotCount = 3
        XCTAssertThrowsError(try deliver(ShardsInSegments(generation: 1, step: 0, entries: [outside]).encode()))
        let good = try gradientSegment(values)
        try deliver(notice(report(0), good))
        XCTAssertEqual(try sentTypes(), [.receipt])
    }

    /// The coordinator's side: a server's weights segment is taken only with exactly its
    /// range's layout and sealed; otherwise refused with an error naming the segment.
    func testTheCoordinatorTakesOnlyAWeightsSegmentThatFits() throws {
        let (coordinator, service) = try coordinatorWithOneServer()
        let range = ParameterRange(lower: 0, count: count)
        service.ranges = [range]
        func offer(_ segment: SharedSegment, range offered: ParameterRange? = nil) -> String {
            let message = RangeSegmentMessage(generation: 1, step: 0, range: offered ?? range, segment: segment.info)
            do { try coordinator.takeRangeSegment(message, server: 0, service: service) } catch { return "\(error)" }
            return "taken"
        }
        let wrongSize = try SharedSegment(slotCount: 2, slotBytes: count * 4 + 4, sealed: true)
        XCTAssertTrue(offer(wrongSize).contains(wrongSize.info.name), offer(wrongSize))
        XCTAssertTrue(offer(try SharedSegment(slotCount: 2, slotBytes: count * 4)).contains("not sealed"))
        let fits = try SharedSegment(slotCount: 2, slotBytes: count * 4, sealed: true)
        XCTAssertTrue(offer(fits, range: ParameterRange(lower: 16, count: count - 16)).contains("range"))
        XCTAssertNil(service.rangeSegments[0])
        XCTAssertEqual(offer(fits), "taken")
        XCTAssertEqual(service.rangeSegments[0]?.generation, 1)
    }

    /// While a step waits to start (the coordinator may still wait for a new generation's
    /// weights segments), a receipt of it waits for the start instead of being judged by a
    /// scheduler that has not started the step; once started, it is judged.
    func testAReceiptOfAStepNotYetStartedWaitsForTheStart() throws {
        let (coordinator, service) = try coordinatorWithOneServer()
        coordinator.currentStep = 3
        let receipt = ShardVerdictMessage(generation: 0, step: 3, report: report(0))
        coordinator.take(receipt, fromServer: 0, service: service)
        XCTAssertEqual(service.early.count, 1)
        XCTAssertEqual(coordinator.counters.staleResults, 0)
        service.startedStep = 3
        coordinator.take(receipt, fromServer: 0, service: service)
        XCTAssertEqual(service.early.count, 1)
        XCTAssertEqual(coordinator.counters.staleResults, 1, "judged once started (this coordinator has no results: stale)")
    }

    private func coordinatorWithOneServer() throws -> (CoordinatorServer, ParameterServiceState) {
        var options = CoordinatorOptions()
        options.bindEndpoint = "tcp://127.0.0.1:*"
        options.parameterServers = 1
        let coordinator = try CoordinatorServer(options: options, spec: spec, logger: Logger(label: "test"))
        return (coordinator, try XCTUnwrap(coordinator.service))
    }

    /// On one host the assignment (large) takes the socket and what follows it the pipe: a
    /// plan and a gradient of the new generation that overtook it wait for it.
    func testMessagesThatOvertakeTheirAssignmentWaitForIt() throws {
        let values = Array(repeating: Float(1), count: count)
        let segment = try gradientSegment(values)
        try deliver(StepPlan(generation: 1, step: 0, sampleCount: 10, nonEmpty: [true, false]).encode())
        try deliver(notice(report(0), segment))
        XCTAssertEqual(try sentTypes(), [])
        try assign(generation: 1, parameters: Array(repeating: 0.5, count: count))
        XCTAssertEqual(try sentTypes(), [.rangeSegment, .receipt, .applied])
        XCTAssertEqual(server.stepsApplied, 1)
    }
}
