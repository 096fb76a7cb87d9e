import NeuralNet
import Wire
import XCTest

/// The parameter service's messages: each round-trips, and each refuses what does not fit
/// (ranges outside the model, wrong sizes, truncation, random bytes) with an error, no trap.
final class ParameterServiceMessageTests: XCTestCase {
    private func envelope(_ frames: [[UInt8]]) throws -> Envelope {
        try Envelope(frames: frames.map { bytes in bytes.withUnsafeBytes { ZMQMessage(copying: $0) } }[...])
    }



    private let settings = RangeOptimizerSettings(kind: .adam, learningRate: 0.01, decay: 1e-3, momentum: 0.9,
                                                  beta1: 0.9, beta2: 0.999, epsilon: 1e-8, l2: 1e-4)

    func testAssignmentAndSnapshotRoundTrip() throws {
        let state = RangeState(range: ParameterRange(lower: 16, count: 3), iteration: 7, parameters: [1, -2, 3],
                               optimizerState: [[0.1, 0.2, 0.3], [4, 5, 6]])
        let assignment = ServeAssignment(generation: 2, step: 9, state: state, shardCount: 5, precision: .fp16, optimizer: settings)
        XCTAssertEqual(try ServeAssignment(envelope(bytes(assignment.encode())), parameterCount: 19), assignment)
        // A range past the model's end, and a bulk of the wrong size, are refused.
        XCTAssertThrowsError(try ServeAssignment(envelope(bytes(assignment.encode())), parameterCount: 18))
        var frames = bytes(assignment.encode())
        frames[2].removeLast(4)
        patch(&frames[0], at: 16, UInt64(frames[1].count + frames[2].count))
        XCTAssertThrowsError(try ServeAssignment(envelope(frames), parameterCount: 19))
        // A NaN value is refused.
        var nan = bytes(assignment.encode())
        patch(&nan[2], at: 4, Float.nan.bitPattern)
        XCTAssertThrowsError(try ServeAssignment(envelope(nan), parameterCount: 19))
        let answer = SnapshotAnswer(generation: 2, step: 11, state: state)
        XCTAssertEqual(try SnapshotAnswer(envelope(bytes(answer.encode())), parameterCount: 19), answer)
    }

    func testServerMapMustCoverTheModelInOrder() throws {
        let map = ServerMap(generation: 1, entries: [
            .init(endpoint: "tcp://10.0.0.1:7000", range: ParameterRange(lower: 0, count: 32)),
            .init(endpoint: "tcp://10.0.0.2:7000", range: ParameterRange(lower: 32, count: 8), curvePublicKey: String(repeating: "a", count: 40)),
        ])
        XCTAssertEqual(try ServerMap(envelope(bytes(map.encode())), parameterCount: 40), map)
        XCTAssertThrowsError(try ServerMap(envelope(bytes(map.encode())), parameterCount: 41))  // a gap at the end
        var gap = map
        gap.entries[1] = .init(endpoint: "tcp://10.0.0.2:7000", range: ParameterRange(lower: 33, count: 7))
        XCTAssertThrowsError(try ServerMap(envelope(bytes(gap.encode())), parameterCount: 40))
        var hostile = map
        hostile.entries[0].endpoint = "ipc:///tmp/x\n"
        XCTAssertThrowsError(try ServerMap(envelope(bytes(hostile.encode())), parameterCount: 40))
    }

    func testStepPlanAndVerdictsRoundTrip() throws {
        let plan = StepPlan(generation: 3, step: 4, sampleCount: 60, nonEmpty: [true, false, true, true, false, false, false, false, true])
        XCTAssertEqual(try StepPlan(envelope(bytes(plan.encode())), shardCount: 9), plan)
        XCTAssertThrowsError(try StepPlan(envelope(bytes(plan.encode())), shardCount: 8))
        let report = ShardReport(shard: 2, worker: 5, sampleCount: 20, lossSum: 3.5, correctCount: 17, computeMicroseconds: 900)
        for refusal in ["", "NaN or infinite gradient range"] {
            let message = ShardVerdictMessage(generation: 3, step: 4, report: report, refusal: refusal)
            XCTAssertEqual(try ShardVerdictMessage(envelope(bytes(message.encode()))), message)
        }
        var impossible = bytes(ShardVerdictMessage(generation: 3, step: 4, report: report).encode())
        patch(&impossible[1], at: 4 + 16 + 8, UInt32(21))  // more correct than samples
        XCTAssertThrowsError(try ShardVerdictMessage(envelope(impossible)))
        XCTAssertEqual(try GenerationMessage.decode(envelope(bytes(GenerationMessage.encode(.applied, step: 4, generation: 3)))), 3)
    }

    func testGradientRangesAreCheckedAgainstTheModel() throws {
        let values = SharedBuffer(byteCount: 64 * 2)
        let floats = (0..<64).map { Float($0) / 8 }
        floats.withUnsafeBufferPointer { WirePrecision.fp16.encode($0.baseAddress!, count: 64, into: values.pointer) }
        let report = ShardReport(shard: 1, worker: 0, sampleCount: 10, lossSum: 1, correctCount: 3, computeMicroseconds: 5)
        let header = RangeValuesHeader(generation: 1, report: report, range: ParameterRange(lower: 32, count: 16), precision: .fp16)
        let frames = bytes(header.encode(step: 2, values: values, offset: 64))
        let decoded = try RangeValuesHeader(envelope(frames), parameterCount: 64)
        XCTAssertEqual(decoded, header)
        var out = [Float](repeating: 0, count: 16)
        XCTAssertTrue(try out.withUnsafeMutableBufferPointer { try decoded.decodeValues(envelope(frames), into: $0.baseAddress!) })
        XCTAssertEqual(out, Array(floats[32..<48]))
        // Out of the model, empty, oversized, an unknown precision: refused.
        for (offset, value) in [(40, UInt32(64)), (44, UInt32(0)), (44, UInt32(33)), (44, UInt32.max)] {
            var bad = frames
            patch(&bad[1], at: offset, value)
            XCTAssertThrowsError(try RangeValuesHeader(envelope(bad), parameterCount: 64), "offset \(offset) value \(value)")
        }
        var precision = frames
        precision[1][48] = 9
        XCTAssertThrowsError(try RangeValuesHeader(envelope(precision), parameterCount: 64))
        var short = frames
        short[2].removeLast(2)
        patch(&short[0], at: 16, UInt64(short[1].count + short[2].count))
        XCTAssertThrowsError(try RangeValuesHeader(envelope(short), parameterCount: 64))
    }

    /// A host's block (`worker --processes K`) in a gradient range and its receipt: it
    /// round-trips; a block that is not aligned (a power of two of shards from a multiple of
    /// it), empty, or past the largest shard count is refused by the codec, in any message.
    func testBlockReportsRoundTripAndOnlyAlignedBlocksDecode() throws {
        let block = ShardReport(shard: 4, worker: 1, sampleCount: 40, lossSum: 7, correctCount: 30, computeMicroseconds: 80,
                                blockCount: 4)
        XCTAssertEqual(block.shards, 4..<8)
        let receipt = ShardVerdictMessage(generation: 2, step: 3, report: block)
        XCTAssertEqual(try ShardVerdictMessage(envelope(bytes(receipt.encode()))), receipt)
        let values = SharedBuffer(byteCount: 16 * 4)
        let range = RangeValuesHeader(generation: 2, report: block, range: ParameterRange(lower: 0, count: 16), precision: .fp32)
        XCTAssertEqual(try RangeValuesHeader(envelope(bytes(range.encode(step: 3, values: values, offset: 0))), parameterCount: 16), range)
        // Meta: generation (4), then the report: shard (4), block count (4), …
        let maximum = UInt32(ParameterServiceLimits.maximumShards)
        let bad: [(shard: UInt32, count: UInt32)] = [(2, 4), (4, 3), (6, 0), (0, maximum * 2), (maximum - 1, 2), (4, 12)]
        for (shard, count) in bad {
            for var frames in [bytes(receipt.encode()), bytes(range.encode(step: 3, values: values, offset: 0))] {
                patch(&frames[1], at: 4, shard)
                patch(&frames[1], at: 8, count)
                XCTAssertThrowsError(try decodeReport(envelope(frames)), "shards \(shard) + \(count)")
            }
        }
        // One shard is a block of one; the largest aligned block decodes.
        for (shard, count) in [(UInt32(5), UInt32(1)), (0, maximum)] {
            var frames = bytes(receipt.encode())
            patch(&frames[1], at: 4, shard)
            patch(&frames[1], at: 8, count)
            XCTAssertEqual(try ShardVerdictMessage(envelope(frames)).report.shards, Int(shard)..<Int(shard + count))
        }
    }

    private func decodeReport(_ envelope: Envelope) throws {
        if envelope.type == .gradientRange { _ = try RangeValuesHeader(envelope, parameterCount: 16) } else { _ = try ShardVerdictMessage(envelope) }
    }

    /// A server's receipts of one step in one message: they round-trip, stand for the single
    /// receipts they replace, and a count of none, more than the meta holds or the cap, and
    /// every truncation are refused.
    func testReceiptsRoundTripAndAreChecked() throws {
        let reports = [ShardReport(shard: 3, worker: 1, sampleCount: 20, lossSum: 2, correctCount: 5, computeMicroseconds: 7),
                       ShardReport(shard: 4, worker: 2, sampleCount: 40, lossSum: 1, correctCount: 9, computeMicroseconds: 8,
                                   blockCount: 4)]
        let receipts = ShardReceipts(generation: 2, step: 8, reports: reports)
        let frames = bytes(receipts.encode())
        XCTAssertEqual(try ShardReceipts(envelope(frames)), receipts)
        XCTAssertEqual(receipts.verdicts, reports.map { ShardVerdictMessage(generation: 2, step: 8, report: $0) })
        try assertCountsAndCutsAreRefused(frames, maximum: ShardReceipts.maximumReports) { _ = try ShardReceipts($0) }
    }

    /// A counted list's message (count at meta offset 4, after the generation) with a count
    /// of none, more than the meta holds (3), over `maximum`, or whose bytes overflow, and
    /// cut at every length: each refused.
    private func assertCountsAndCutsAreRefused(_ frames: [[UInt8]], maximum: Int,
                                               decode: (Envelope) throws -> Void) throws {
        for count in [0, 3, UInt32(maximum + 1), UInt32.max] {
            var counted = frames
            patch(&counted[1], at: 4, count)
            XCTAssertThrowsError(try decode(envelope(counted)), "count \(count)")
        }
        for cut in 0..<frames[1].count {
            var truncated = frames
            truncated[1] = Array(frames[1].prefix(cut))
            patch(&truncated[0], at: 16, UInt64(cut))
            XCTAssertThrowsError(try decode(envelope(truncated)), "cut at \(cut)")
        }
    }

    /// The two messages of the service on one host round-trip; a range outside the model, a
    /// slot outside the segment, a missing segment and every truncation are refused.
    func testSharedMemoryMessagesRoundTripAndAreChecked() throws {
        let segment = SharedSegmentInfo(name: "/proc/12/fd/7", nonce: Array(0..<16), slotCount: 4, slotBytes: 256)
        let announced = RangeSegmentMessage(generation: 2, step: 8, range: ParameterRange(lower: 16, count: 48), segment: segment)
        XCTAssertEqual(try RangeSegmentMessage(envelope(bytes(announced.encode())), parameterCount: 64), announced)
        XCTAssertThrowsError(try RangeSegmentMessage(envelope(bytes(announced.encode())), parameterCount: 63))
        var none = bytes(announced.encode())
        none[1] = Array(none[1].prefix(12)) + [0, 0, 0, 0]  // an empty name: no segment
        patch(&none[0], at: 16, UInt64(none[1].count))
        XCTAssertThrowsError(try RangeSegmentMessage(envelope(none), parameterCount: 64))
        let report = ShardReport(shard: 3, worker: 1, sampleCount: 20, lossSum: 2, correctCount: 5, computeMicroseconds: 7)
        let other = SharedSegmentInfo(name: "/proc/12/fd/9", nonce: Array(16..<32), slotCount: 2, slotBytes: 256)
        let ready = ShardsInSegments(generation: 2, step: 8, entries: [
            .init(report: report, segment: segment, slot: 3),
            .init(report: ShardReport(shard: 0, worker: 4, sampleCount: 21, lossSum: 1, correctCount: 0, computeMicroseconds: 9),
                  segment: other, slot: 1),
        ])
        let frames = bytes(ready.encode())
        XCTAssertEqual(try ShardsInSegments(envelope(frames)), ready)
        XCTAssertEqual(try envelope(frames).leadingGeneration, 2)
        var outside = frames
        patch(&outside[1], at: outside[1].count - 4, UInt32(2))  // slot 2 of the second entry's 2
        XCTAssertThrowsError(try ShardsInSegments(envelope(outside)))
        try assertCountsAndCutsAreRefused(frames, maximum: ShardsInSegments.maximumEntries) { _ = try ShardsInSegments($0) }
    }

    /// Truncations and random bytes in every message's meta: errors, never a trap.
    func testTruncatedAndRandomMetaIsRefused() throws {
        let state = RangeState(range: ParameterRange(lower: 0, count: 2), iteration: 0, parameters: [1, 2], optimizerState: [[0, 0]])
        let samples: [[OutgoingFrame]] = [
            ServeAssignment(generation: 0, step: 0, state: state, shardCount: 2, precision: .fp32,
                            optimizer: RangeOptimizerSettings(kind: .sgd, learningRate: 0.1, decay: 0, momentum: 0.9,
                                                              beta1: 0.9, beta2: 0.999, epsilon: 1e-8, l2: 0)).encode(),
            ServerMap(generation: 0, entries: [.init(endpoint: "tcp://a:1", range: ParameterRange(lower: 0, count: 2))]).encode(),
            StepPlan(generation: 0, step: 0, sampleCount: 4, nonEmpty: [true, true]).encode(),
            ServeOffer(endpoint: "tcp://a:1").encode(),
            ShardsInSegments(generation: 0, step: 0, entries: [
                .init(report: ShardReport(shard: 1, worker: 0, sampleCount: 2, lossSum: 1, correctCount: 1, computeMicroseconds: 0),
                      segment: SharedSegmentInfo(name: "/s", nonce: Array(0..<16), slotCount: 2, slotBytes: 8), slot: 1),
            ]).encode(),
        ]
        var generator = SystemRandomNumberGenerator()
        for frames in samples {
            let original = bytes(frames)
            for cut in 0..<original[1].count {
                var truncated = original
                truncated[1] = Array(original[1].prefix(cut))
                patch(&truncated[0], at: 16, UInt64(truncated.dropFirst().reduce(0) { $0 + $1.count }))
                XCTAssertThrowsError(try decodeAny(envelope(truncated)))
            }
            for _ in 0..<200 {
                var random = original
                random[1] = random[1].map { _ in UInt8.random(in: 0...255, using: &generator) }
                _ = try? decodeAny(envelope(random))
            }
        }
    }

    private func decodeAny(_ envelope: Envelope) throws {
        switch envelope.type {
        case .serveAssignment: _ = try ServeAssignment(envelope, parameterCount: 2)
        case .serverMap: _ = try ServerMap(envelope, parameterCount: 2)
        case .stepPlan: _ = try StepPlan(envelope, shardCount: 2)
        case .serveOffer: _ = try ServeOffer(envelope)
        case .shardsInSegments: _ = try ShardsInSegments(envelope)
        default: XCTFail("\(envelope.type)")
        }
    }
}
