import NeuralNet
import Wire
import XCTest

/// A ROUTER and a DEALER over inproc:// in one process: the wire code is tried here before
/// it is tried across processes.
final class ProtocolTests: XCTestCase {
    var context: ZMQContext!
    var router: ZMQSocket!
    var dealer: ZMQSocket!

    override func setUpWithError() throws {
        context = try ZMQContext()
        router = try ZMQSocket(context: context, type: .router)
        try router.setRouterMandatory(true)
        let endpoint = "inproc://protocol-\(UUID().uuidString)"
        try router.bind(endpoint)
        dealer = try ZMQSocket(context: context, type: .dealer)
        try dealer.setRoutingID(Array("worker-a".utf8))
        try dealer.connect(endpoint)
    }

    override func tearDown() {
        dealer = nil
        router = nil
        context = nil
    }

    /// Sends from the dealer, returns the envelope the router decodes (routing id checked).
    private func roundTripToRouter(_ frames: [OutgoingFrame]) throws -> Envelope {
        try dealer.send(frames)
        let received = try XCTUnwrap(try router.receive(timeoutMilliseconds: 1000))
        XCTAssertEqual(received[0].bytes, Array("worker-a".utf8))
        return try Envelope(frames: received[1...])
    }

    private func roundTripToDealer(_ frames: [OutgoingFrame]) throws -> Envelope {
        try router.send([.bytes(Array("worker-a".utf8))] + frames)
        let received = try XCTUnwrap(try dealer.receive(timeoutMilliseconds: 1000))
        return try Envelope(frames: received[...])
    }

    func testEveryMessageRoundTrips() throws {
        let spec = try ModelSpec.mlp(inputSize: 6, hidden: [5, 4], classes: 3)
        let hello = Hello(modelHash: ModelSpecCoding.hash(spec), pid: 42, name: "w-1")
        XCTAssertEqual(try Hello(try roundTripToRouter(hello.encode())), hello)
        XCTAssertFalse(hello.acceptsAnyModel)
        XCTAssertTrue(Hello(pid: 1, name: "x").acceptsAnyModel)
        let host = Hello(pid: 7, name: "host", slots: 4)
        XCTAssertEqual(try Hello(try roundTripToRouter(host.encode())).slots, 4)
        for bad: UInt16 in [0, 3, 512] {
            XCTAssertThrowsError(try Hello(try roundTripToRouter(Hello(pid: 7, name: "host", slots: bad).encode())), "\(bad) slots")
        }

        let welcome = Welcome(workerIndex: 3, heartbeatMilliseconds: 1000, precision: .fp16, spec: spec)
        XCTAssertEqual(try Welcome(try roundTripToDealer(welcome.encode())), welcome)
        let withDropout = Welcome(workerIndex: 1, heartbeatMilliseconds: 500, spec: spec, dropout: Dropout(rate: 0.25, seed: 42))
        XCTAssertEqual(try Welcome(try roundTripToDealer(withDropout.encode())), withDropout)
        let conv = try Conv2D(input: ImageShape(height: 6, width: 6, channels: 1), outputChannels: 2, kernelSize: 3,
                              padding: 1, activation: .relu)
        let pool = try MaxPool2D(input: conv.output, size: 2)
        let convnet = try ModelSpec(input: conv.input, layers: [
            .conv(conv), .maxPool(pool), .flatten(pool.output),
            .dense(Dense(inputSize: pool.outputSize, outputSize: 3, activation: .softmax)),
        ])
        let convWelcome = Welcome(workerIndex: 0, heartbeatMilliseconds: 100, spec: convnet)
        XCTAssertEqual(try Welcome(try roundTripToDealer(convWelcome.encode())), convWelcome)

        let notice = Notice(reason: "training finished ✓")
        let shutdown = try roundTripToDealer(notice.encode(.shutdown))
        XCTAssertEqual(shutdown.type, .shutdown)
        XCTAssertEqual(try Notice(shutdown), notice)

        let weights = SharedBuffer(byteCount: spec.parameterCount * 4)
        for i in 0..<spec.parameterCount { weights.floats(count: spec.parameterCount)[i] = Float(i) * 0.5 }
        let weightsEnvelope = try roundTripToDealer(WeightsMessage.encode(step: 77, parameters: weights, count: spec.parameterCount, precision: .fp32))
        XCTAssertEqual(weightsEnvelope.step, 77)
        var decoded = [Float](repeating: 0, count: spec.parameterCount)
        try WeightsMessage.decode(weightsEnvelope, expectedCount: spec.parameterCount, into: &decoded)
        XCTAssertEqual(decoded, (0..<spec.parameterCount).map { Float($0) * 0.5 })
        XCTAssertThrowsError(try WeightsMessage.decode(weightsEnvelope, expectedCount: 3, into: &decoded))

        // Weights waiting in a shared slot: no data frame, read from the segment.
        let segment = try SharedSegment(slotCount: 2, slotBytes: spec.parameterCount * 4)
        segment.slot(1).copyMemory(from: weights.pointer, byteCount: spec.parameterCount * 4)
        let sharedEnvelope = try roundTripToDealer(WeightsMessage.encodeShared(step: 78, slot: 1, count: spec.parameterCount, precision: .fp32))
        XCTAssertNil(sharedEnvelope.bulk)
        decoded = Array(repeating: 0, count: spec.parameterCount)
        var scratch: [UInt8] = []
        let slot = try WeightsMessage.decode(sharedEnvelope, expectedCount: spec.parameterCount, into: &decoded,
                                             shared: try SharedSegment(opening: segment.info), scratch: &scratch)
        XCTAssertEqual(slot, 1)
        XCTAssertEqual(decoded, (0..<spec.parameterCount).map { Float($0) * 0.5 })
        XCTAssertThrowsError(try WeightsMessage.decode(sharedEnvelope, expectedCount: spec.parameterCount, into: &decoded)) {
            XCTAssertTrue("\($0)".contains("no segment is open"), "\($0)")
        }
        let attach = AttachMessage(segment: segment.info)
        XCTAssertEqual(try AttachMessage(try roundTripToRouter(attach.encode())), attach)
        let withPipes = AttachMessage(segment: segment.info, toWorkerPipe: "/dev/shm/zmqt-1-ap", toCoordinatorPipe: "/dev/shm/zmqt-1-bp", cpu: 1)
        XCTAssertEqual(try AttachMessage(try roundTripToRouter(withPipes.encode())), withPipes)
        XCTAssertThrowsError(try AttachMessage(try roundTripToRouter(AttachMessage(segment: segment.info, toWorkerPipe: "/dev/shm/zmqt-1-ap").encode()))) {
            XCTAssertTrue("\($0)".contains("one pipe without the other"), "\($0)")
        }
        let batches = try SharedSegment(slotCount: 2, slotBytes: 64)
        let welcomeShared = Welcome(workerIndex: 2, heartbeatMilliseconds: 100, spec: spec, sharedWeights: segment.info, sharedBatches: batches.info)
        XCTAssertEqual(try Welcome(try roundTripToDealer(welcomeShared.encode())), welcomeShared)

        let samples = SharedBuffer(byteCount: 2 * 7)
        for i in 0..<14 { samples.pointer.storeBytes(of: UInt8(i), toByteOffset: i, as: UInt8.self) }
        let task = TaskHeader(shard: 1, sampleCount: 2, featureCount: 6)
        let taskEnvelope = try roundTripToDealer(task.encode(step: 5, samples: .shared(samples, offset: 0, count: 14)))
        let (decodedTask, samplesIn) = try TaskHeader.decode(taskEnvelope, featureCount: 6)
        XCTAssertEqual(decodedTask, task)
        guard case let .frame(bulk) = samplesIn else { return XCTFail("samples should be in the frame") }
        XCTAssertEqual(bulk.bytes, Array(0..<14))
        XCTAssertThrowsError(try TaskHeader.decode(taskEnvelope, featureCount: 784))
        // Samples waiting in a batch slot: no data frame, the slot and offset instead.
        let sharedTask = try roundTripToDealer(task.encodeShared(step: 6, slot: 1, offset: 28))
        XCTAssertNil(sharedTask.bulk)
        let (decodedSharedTask, where_) = try TaskHeader.decode(sharedTask, featureCount: 6)
        XCTAssertEqual(decodedSharedTask, task)
        guard case .shared(slot: 1, offset: 28) = where_ else { return XCTFail("\(where_)") }

        let gradient = SharedBuffer(byteCount: spec.parameterCount * 4)
        for i in 0..<spec.parameterCount { gradient.floats(count: spec.parameterCount)[i] = -Float(i) }
        let result = ResultHeader(shard: 1, sampleCount: 2, lossSum: 1.25, correctCount: 1,
                                  parameterCount: UInt32(spec.parameterCount), computeMicroseconds: 99)
        let resultEnvelope = try roundTripToRouter(result.encode(step: 5, gradient: gradient))
        let (decodedResult, gradientFrame) = try ResultHeader.decode(resultEnvelope, parameterCount: spec.parameterCount)
        XCTAssertEqual(decodedResult, result)
        var values = [Float](repeating: 0, count: spec.parameterCount)
        XCTAssertTrue(gradientFrame!.withUnsafeBytes { WirePrecision.fp32.decode($0.baseAddress!, count: spec.parameterCount, into: &values) })
        XCTAssertEqual(values, (0..<spec.parameterCount).map { -Float($0) })
        XCTAssertThrowsError(try ResultHeader.decode(resultEnvelope, parameterCount: spec.parameterCount + 1))

        var shared = result
        shared.sharedSlot = 3
        let sharedResult = try roundTripToRouter(shared.encodeShared(step: 6))
        let (decodedShared, noFrame) = try ResultHeader.decode(sharedResult, parameterCount: spec.parameterCount)
        XCTAssertEqual(decodedShared, shared)
        XCTAssertNil(noFrame)
    }

    /// A host's block result: an aligned power-of-two range inside the step, fp32 in its
    /// frame, a gradient of the model's length; anything else is refused with a reason.
    func testBlockResultsAreCheckedForAlignmentRangePrecisionAndLength() throws {
        let gradient = SharedBuffer(byteCount: 16)
        for i in 0..<4 { gradient.floats(count: 4)[i] = Float(i) }
        var block = ResultHeader(shard: 4, sampleCount: 8, lossSum: 2, correctCount: 3, parameterCount: 4, computeMicroseconds: 7)
        block.blockCount = 4
        let (decoded, frame) = try ResultHeader.decode(try roundTripToRouter(block.encode(step: 2, gradient: gradient)),
                                                       parameterCount: 4, shardCount: 8)
        XCTAssertEqual(decoded, block)
        XCTAssertEqual(decoded.shards, 4..<8)
        XCTAssertEqual(frame?.count, 16)
        func refused(_ header: ResultHeader, shardCount: Int? = 8, parameterCount: Int = 4, bytes: Int = 16,
                     _ expected: String, line: UInt = #line) throws {
            let frames = header.encode(step: 2, gradient: SharedBuffer(byteCount: bytes))
            XCTAssertThrowsError(try ResultHeader.decode(try roundTripToRouter(frames), parameterCount: parameterCount,
                                                         shardCount: shardCount), line: line) { error in
                XCTAssertTrue("\(error)".contains(expected), "\(error)", line: line)
            }
        }
        var misaligned = block
        misaligned.shard = 2
        try refused(misaligned, "not an aligned power of two")
        var notPowerOfTwo = block
        notPowerOfTwo.shard = 0
        notPowerOfTwo.blockCount = 3
        try refused(notPowerOfTwo, "not an aligned power of two")
        var empty = block
        empty.blockCount = 0
        try refused(empty, "not an aligned power of two")
        var huge = block
        huge.shard = 0
        huge.blockCount = 1 << 31
        try refused(huge, "not an aligned power of two")
        try refused(block, shardCount: 6, "a step has 6")
        var sixteen = block
        sixteen.blockCount = 16
        sixteen.shard = 0xFFFF_FFF0
        try refused(sixteen, "a step has 8")  // no overflow near UInt32.max
        var half = block
        half.precision = .fp16
        try refused(half, bytes: 8, "fp32")
        try refused(block, parameterCount: 5, "the model has 5")
        // A data frame shorter than the gradient the header declares.
        var frames = block.encode(step: 2, gradient: gradient)
        frames[frames.count - 1] = .bytes(Array(repeating: 0, count: 12))
        XCTAssertThrowsError(try ResultHeader.decode(try roundTripToRouter(frames), parameterCount: 4, shardCount: 8))
    }

    func testNonFiniteGradientsAreDetected() throws {
        for bad in [Float.nan, .infinity, -.infinity] {
            let gradient = SharedBuffer(byteCount: 16)
            let floats = gradient.floats(count: 4)
            for i in 0..<4 { floats[i] = 1 }
            floats[2] = bad
            let result = ResultHeader(shard: 0, sampleCount: 1, lossSum: 0.5, correctCount: 0, parameterCount: 4, computeMicroseconds: 0)
            let (_, frame) = try ResultHeader.decode(try roundTripToRouter(result.encode(step: 1, gradient: gradient)), parameterCount: 4)
            var values = [Float](repeating: 0, count: 4)
            XCTAssertFalse(frame!.withUnsafeBytes { WirePrecision.fp32.decode($0.baseAddress!, count: 4, into: &values) }, "\(bad)")
        }
    }

    func testMalformedMessagesAreRefusedWithAReason() throws {
        let good = Hello(pid: 1, name: "w").encode()
        func bytes(_ frame: OutgoingFrame) -> [UInt8] {
            if case let .bytes(b) = frame { return b }
            return []
        }
        var header = bytes(good[0])
        let meta = bytes(good[1])

        func refusal(_ frames: [[UInt8]]) throws -> ProtocolError? {
            do {
                _ = try roundTripToRouter(frames.map { .bytes($0) })
                return nil
            } catch let error as ProtocolError {
                return error
            }
        }
        XCTAssertEqual(try refusal([header]), .wrongFrameCount(1))
        XCTAssertEqual(try refusal([Array(header.prefix(10)), meta]), .shortHeader(10))
        var badMagic = header
        badMagic[0] = UInt8(ascii: "X")
        XCTAssertEqual(try refusal([badMagic, meta]), .badMagic)
        var badVersion = header
        badVersion[4] = UInt8(WireProtocol.version - 1)
        XCTAssertEqual(try refusal([badVersion, meta]), .unsupportedVersion(WireProtocol.version - 1))
        var badType = header
        badType[6] = 200
        XCTAssertEqual(try refusal([badType, meta]), .unknownType(200))
        XCTAssertEqual(try refusal([header, Array(meta.dropLast())]),
                       .lengthMismatch(declared: UInt64(meta.count), actual: meta.count - 1))
        // A consistent header over a truncated body: the typed decoder refuses it.
        header[16] = UInt8(meta.count - 3)
        let truncated = try roundTripToRouter([.bytes(header), .bytes(Array(meta.dropLast(3)))])
        XCTAssertThrowsError(try Hello(truncated)) { error in
            XCTAssertTrue("\(error)".hasPrefix("malformed hello"), "\(error)")
        }
    }

    /// The welcome's model goes through the model codec, capped by what a message can carry.
    func testAWelcomeWithAModelTooLargeToSendIsRefused() throws {
        let spec = try ModelSpec.mlp(inputSize: 1 << 14, hidden: [1 << 13], classes: 10)
        XCTAssertGreaterThan(spec.parameterCount, WireProtocol.maximumMessageBytes / 4)
        let welcome = try roundTripToDealer(Welcome(workerIndex: 0, heartbeatMilliseconds: 100, spec: spec).encode())
        XCTAssertThrowsError(try Welcome(welcome)) { error in
            XCTAssertTrue("\(error)".hasPrefix("malformed welcome") && "\(error)".contains("past \(WireProtocol.maximumMessageBytes / 4) parameters"), "\(error)")
        }
    }

    /// Thousands of random and mutated messages: each is refused or decodes to something
    /// well-formed; nothing crashes.
    func testRandomAndMutatedBytesNeverCrashTheDecoders() throws {
        var generator = SeededGenerator(seed: 2024)
        let spec = try ModelSpec.mlp(inputSize: 6, hidden: [4], classes: 3)
        let gradient = SharedBuffer(byteCount: spec.parameterCount * 4)
        let result = ResultHeader(shard: 0, sampleCount: 3, lossSum: 2, correctCount: 1,
                                  parameterCount: UInt32(spec.parameterCount), computeMicroseconds: 1)
        let templates: [[OutgoingFrame]] = [
            Hello(pid: 3, name: "w").encode(), Welcome(workerIndex: 0, heartbeatMilliseconds: 5, spec: spec).encode(),
            result.encode(step: 1, gradient: gradient), Heartbeat.encode(), Notice(reason: "r").encode(.reject),
            IndexTask(shard: 1, featureCount: 6, indices: [0, 49, 7]).encode(step: 2),
        ]
        var refused = 0
        for round in 0..<3000 {
            var frames: [[UInt8]] = templates[round % templates.count].map { frame in
                switch frame {
                case let .bytes(b): b
                case let .shared(buffer, offset, count):
                    Array(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count))
                }
            }
            if round % 3 == 0 {
                frames = (0..<(1 + generator.nextIndex(below: 4))).map { _ in
                    (0..<generator.nextIndex(below: 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                }
            } else {
                for _ in 0..<(1 + generator.nextIndex(below: 4)) {
                    let f = generator.nextIndex(below: frames.count)
                    if frames[f].isEmpty { continue }
                    let i = generator.nextIndex(below: frames[f].count)
                    switch generator.nextIndex(below: 3) {
                    case 0: frames[f][i] = UInt8(truncatingIfNeeded: generator.next())
                    case 1: frames[f] = Array(frames[f].prefix(i))
                    default: frames[f].insert(UInt8(truncatingIfNeeded: generator.next()), at: i)
                    }
                }
            }
            do {
                let envelope = try roundTripToRouter(frames.map { .bytes($0) })
                switch envelope.type {
                case .hello: _ = try Hello(envelope)
                case .welcome: _ = try Welcome(envelope)
                case .reject, .shutdown: _ = try Notice(envelope)
                case .result: _ = try ResultHeader.decode(envelope, parameterCount: spec.parameterCount)
                case .task: _ = try TaskHeader.decode(envelope, featureCount: 6)
                case .indexTask: _ = try IndexTask.decode(envelope, featureCount: 6, maximumSamples: 100, sampleCount: 50)
                case .weights:
                    var values = [Float](repeating: 0, count: spec.parameterCount)
                    try WeightsMessage.decode(envelope, expectedCount: spec.parameterCount, into: &values)
                case .attach: _ = try AttachMessage(envelope)
                case .challenge: _ = try Challenge(envelope)
                case .heartbeat: break
                case .serveOffer: _ = try ServeOffer(envelope)
                case .serverMap: _ = try ServerMap(envelope, parameterCount: spec.parameterCount)
                case .serveAssignment: _ = try ServeAssignment(envelope, parameterCount: spec.parameterCount)
                case .stepPlan: _ = try StepPlan(envelope, shardCount: 3)
                case .weightsRange, .gradientRange: _ = try RangeValuesHeader(envelope, parameterCount: spec.parameterCount)
                case .receipt, .rangeRefused: _ = try ShardVerdictMessage(envelope)
                case .applied, .snapshotRequest: _ = try GenerationMessage.decode(envelope)
                case .snapshotAnswer: _ = try SnapshotAnswer(envelope, parameterCount: spec.parameterCount)
                case .rangeSegment: _ = try RangeSegmentMessage(envelope, parameterCount: spec.parameterCount)
                case .shardsInSegments: _ = try ShardsInSegments(envelope)
                case .receipts: _ = try ShardReceipts(envelope)
                }
            } catch is ProtocolError {
                refused += 1
            }
        }
        XCTAssertGreaterThan(refused, 1000)
    }
}

final class WirePrecisionTests: XCTestCase {
    func testHalfFloatMatchesTheStandardLibraryEverywhere() {
        // Every fp16 bit pattern decodes like Float16 does.
        for bits in 0...UInt16.max {
            let ours = HalfFloat.decode(bits), reference = Float(Float16(bitPattern: bits))
            XCTAssertTrue(ours == reference || (ours.isNaN && reference.isNaN), "\(bits)")
        }
        // Rounding from fp32 agrees with Float16's round-to-nearest-even.
        var generator = SeededGenerator(seed: 16)
        let specials: [Float] = [0, -0, 1e-8, -6e-8, 6.1e-5, 65504, 65520, 1e6, .infinity, -.infinity, 0.1, -2.5e-3]
        let values = specials + (0..<100_000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: generator.next())) }
        for value in values where !value.isNaN {
            XCTAssertEqual(HalfFloat.encode(value), Float16(value).bitPattern, "\(value)")
        }
        XCTAssertTrue(HalfFloat.decode(HalfFloat.encode(.nan)).isNaN)
    }

    func testRoundTripsAndFiniteChecks() {
        let values: [Float] = [1, -2.5, 3.14159, 1e-3, 300]
        for precision in WirePrecision.allCases {
            var encoded = [UInt8](repeating: 0, count: values.count * precision.bytesPerValue)
            encoded.withUnsafeMutableBytes { precision.encode(values, count: values.count, into: $0.baseAddress!) }
            var decoded = [Float](repeating: 0, count: values.count)
            XCTAssertTrue(encoded.withUnsafeBytes { precision.decode($0.baseAddress!, count: values.count, into: &decoded) })
            var rounded = values
            precision.round(&rounded, count: rounded.count)
            XCTAssertEqual(decoded, rounded, "\(precision): decode(encode(x)) is what round(x) gives")
            for (a, b) in zip(values, decoded) {
                XCTAssertEqual(a, b, accuracy: abs(a) * (precision == .bf16 ? 4e-3 : precision == .fp16 ? 5e-4 : 0), "\(precision)")
            }
            var bad = values
            bad[2] = .infinity
            encoded.withUnsafeMutableBytes { precision.encode(bad, count: bad.count, into: $0.baseAddress!) }
            XCTAssertFalse(encoded.withUnsafeBytes { precision.decode($0.baseAddress!, count: bad.count, into: &decoded) })
        }
        XCTAssertEqual(BFloat16.encode(1.00390625), 0x3F80, "ties round to even")
        XCTAssertEqual(WirePrecision(name: "FP16"), .fp16)
    }
}

final class SocketTests: XCTestCase {
    func testRouterMandatoryReportsUnknownPeersAndReceiveTimesOut() throws {
        let context = try ZMQContext()
        let router = try ZMQSocket(context: context, type: .router)
        try router.setRouterMandatory(true)
        try router.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(router.lastEndpoint.hasPrefix("tcp://127.0.0.1:"))
        XCTAssertThrowsError(try router.send([.bytes(Array("nobody".utf8)), .bytes([1])])) { error in
            XCTAssertTrue((error as? ZMQError)?.isUnreachable == true, "\(error)")
        }
        let start = Date()
        XCTAssertNil(try router.receive(timeoutMilliseconds: 50))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(start), 0.04)
        XCTAssertThrowsError(try router.bind("nonsense://x")) { error in
            XCTAssertTrue("\(error)".contains("bind nonsense://x"), "\(error)")
        }
    }

    /// A zero-copy buffer stays alive while libzmq holds it and is released after sending.
    func testZeroCopyBufferIsReleasedAfterSend() throws {
        let context = try ZMQContext()
        let a = try ZMQSocket(context: context, type: .pair)
        let b = try ZMQSocket(context: context, type: .pair)
        try a.bind("inproc://zero-copy")
        try b.connect("inproc://zero-copy")
        weak var weakBuffer: SharedBuffer?
        do {
            let buffer = SharedBuffer(byteCount: 1 << 20)
            memset(buffer.pointer, 7, 1 << 20)
            weakBuffer = buffer
            try a.send([.shared(buffer, offset: 0, count: 1 << 20)])
        }
        do {
            let received = try XCTUnwrap(try b.receive(timeoutMilliseconds: 1000))
            XCTAssertEqual(received[0].count, 1 << 20)
            received[0].withUnsafeBytes { XCTAssertTrue($0.allSatisfy { $0 == 7 }) }
        }
        // Over inproc the receiver's frame held the buffer itself; it is closed now.
        let deadline = Date().addingTimeInterval(2)
        while weakBuffer != nil && Date() < deadline { usleep(1000) }
        XCTAssertNil(weakBuffer, "the buffer must be released once libzmq is done with it")
    }

    /// A pooled buffer comes back only once no message holds it any more.
    func testPoolHandsOutABufferOnlyWhenNothingHoldsIt() throws {
        let context = try ZMQContext()
        let a = try ZMQSocket(context: context, type: .pair)
        let b = try ZMQSocket(context: context, type: .pair)
        try a.bind("inproc://pool")
        try b.connect("inproc://pool")
        let pool = SharedBufferPool(byteCount: 64)
        let firstAddress: UnsafeMutableRawPointer
        var received: [ZMQMessage]
        do {
            let first = pool.take()
            XCTAssertEqual(first.byteCount, 64)
            firstAddress = first.pointer
            try a.send([.shared(first, offset: 0, count: 64)])
            received = try XCTUnwrap(try b.receive(timeoutMilliseconds: 1000))
        }
        // The received frame still points into the first buffer: the pool must not hand it out.
        XCTAssertNotEqual(pool.take().pointer, firstAddress)
        XCTAssertEqual(received.count, 1)
        received = []
        let deadline = Date().addingTimeInterval(2)
        while pool.take().pointer != firstAddress && Date() < deadline { usleep(1000) }
        XCTAssertEqual(pool.take().pointer, firstAddress, "once released, the first buffer is reused")
    }
}
