#if canImport(Glibc)
import Glibc
#endif
import NeuralNet
import Wire
import XCTest

/// Every integer from a peer is range-checked before it becomes an `Int` or a size: values
/// that trapped or allocated without bound are refused with an error naming the field.
final class CheckedDecodingTests: XCTestCase {
    /// An envelope from raw frames, as a socket would hand them over.
    private func envelope(_ frames: [[UInt8]]) throws -> Envelope {
        let messages = frames.map { bytes in bytes.withUnsafeBytes { ZMQMessage(copying: $0) } }
        return try Envelope(frames: messages[...])
    }



    func testStepsBeyondInt64AreRefusedInTheHeader() throws {
        let spec = try ModelSpec.mlp(inputSize: 4, hidden: [3], classes: 2)
        let result = ResultHeader(shard: 0, sampleCount: 1, lossSum: 1, correctCount: 0,
                                  parameterCount: UInt32(spec.parameterCount), computeMicroseconds: 1, sharedSlot: 0)
        for step in [UInt64(1) << 63, .max] {
            var frames = bytes(result.encodeShared(step: 0))
            patch(&frames[0], at: 8, step)
            XCTAssertThrowsError(try envelope(frames)) { error in
                XCTAssertEqual(error as? ProtocolError, .outOfRange(field: "step", value: step, range: 0...Int(Int64.max)))
            }
        }
        var frames = bytes(result.encodeShared(step: 0))
        patch(&frames[0], at: 8, UInt64(Int64.max))
        XCTAssertEqual(try envelope(frames).step, UInt64(Int64.max))
    }

    func testAWelcomeForAModelTooBigToSendIsRefused() throws {
        // 2^24 inputs into 2^20 units: 2^44 parameters, which the old check let through.
        var meta = ByteWriter()
        meta.write(UInt32(0)); meta.write(UInt32(1000)); meta.write(UInt8(0)); meta.write(Float(0)); meta.write(UInt64(0))
        // The model in `ModelCodec`'s bytes: a 1×1×2^24 input, two dense layers.
        meta.write(UInt32(1)); meta.write(UInt32(1)); meta.write(UInt32(1 << 24)); meta.write(UInt16(2))
        meta.write(ModelCodec.Kind.dense.rawValue); meta.write(UInt32(1 << 20)); meta.write(Activation.relu.rawValue)
        meta.write(ModelCodec.Kind.dense.rawValue); meta.write(UInt32(10)); meta.write(Activation.softmax.rawValue)
        meta.write(segment: nil); meta.write(segment: nil)
        XCTAssertThrowsError(try Welcome(try envelope(bytes(encodeMessage(.welcome, step: 0, meta: meta))))) { error in
            XCTAssertTrue("\(error)".contains("past \(WireLimits.maximumParameters) parameters"), "\(error)")
        }
        // A model that fits still decodes.
        let spec = try ModelSpec.mlp(inputSize: 784, hidden: [128], classes: 10)
        let welcome = Welcome(workerIndex: 0, heartbeatMilliseconds: 1000, spec: spec)
        XCTAssertEqual(try Welcome(try envelope(bytes(welcome.encode()))), welcome)
    }

    func testHeartbeatOutsideItsRangeIsRefused() throws {
        let spec = try ModelSpec.mlp(inputSize: 4, hidden: [3], classes: 2)
        let welcome = Welcome(workerIndex: 0, heartbeatMilliseconds: UInt32.max, spec: spec)
        XCTAssertThrowsError(try Welcome(try envelope(bytes(welcome.encode())))) { error in
            XCTAssertTrue("\(error)".contains("heartbeat ms 4294967295 is outside"), "\(error)")
        }
    }

    func testSegmentSizesBeyondInt64AreRefused() throws {
        let info = SharedSegmentInfo(name: "/zmqt-1-abc", nonce: Array(repeating: 7, count: 16), slotCount: 2, slotBytes: 64)
        var frames = bytes(AttachMessage(segment: info).encode())
        // name (4 + 11 bytes), nonce (16), slot count (4), then the slot size.
        patch(&frames[1], at: 35, UInt64.max)
        XCTAssertThrowsError(try AttachMessage(try envelope(frames))) { error in
            XCTAssertTrue("\(error)".contains("segment slot size 18446744073709551615 is outside"), "\(error)")
        }
    }

    func testTaskSampleCountsAreBoundedByWhatTheReceiverCanHold() throws {
        let task = TaskHeader(shard: 0, sampleCount: UInt32.max, featureCount: 784)
        let frames = bytes(task.encodeShared(step: 1, slot: 0, offset: 0))
        XCTAssertThrowsError(try TaskHeader.decode(try envelope(frames), featureCount: 784)) { error in
            XCTAssertTrue("\(error)".contains("task sample count 4294967295 is outside"), "\(error)")
        }
        // Wide enough that its activations, not the message size, bound a task.
        let spec = try ModelSpec.mlp(inputSize: 784, hidden: [20_000], classes: 10)
        let limit = WireLimits.maximumSamples(for: spec)
        XCTAssertLessThan(limit, WireProtocol.maximumMessageBytes / 785)
        let fits = TaskHeader(shard: 0, sampleCount: UInt32(limit), featureCount: 784)
        XCTAssertNoThrow(try TaskHeader.decode(try envelope(bytes(fits.encodeShared(step: 1, slot: 0, offset: 0))),
                                               featureCount: 784, maximumSamples: limit))
        let tooMany = TaskHeader(shard: 0, sampleCount: UInt32(limit + 1), featureCount: 784)
        XCTAssertThrowsError(try TaskHeader.decode(try envelope(bytes(tooMany.encodeShared(step: 1, slot: 0, offset: 0))),
                                                   featureCount: 784, maximumSamples: limit))
    }

    func testConvnetTasksAreBoundedByTheirWorkspaceWithTheIm2colScratch() throws {
        let convnet = try ModelSpec.parse("conv5x32,pool2,conv5x64,pool2,dense128,dense10",
                                          input: ImageShape(height: 28, width: 28, channels: 1), classes: 10)
        let limit = WireLimits.maximumSamples(for: convnet)
        let scratch = convnet.convolutionScratchCount
        XCTAssertGreaterThan(scratch, 0)
        // The most samples whose buffers and the scratch fit the workspace, and not one more.
        XCTAssertLessThanOrEqual(limit * convnet.workspaceValuesPerSample + scratch, WireLimits.maximumWorkspaceFloats)
        XCTAssertGreaterThan((limit + 1) * convnet.workspaceValuesPerSample + scratch, WireLimits.maximumWorkspaceFloats)
        for (count, fits) in [(limit, true), (limit + 1, false)] {
            let task = TaskHeader(shard: 0, sampleCount: UInt32(count), featureCount: 784)
            let frames = try envelope(bytes(task.encodeShared(step: 1, slot: 0, offset: 0)))
            if fits {
                XCTAssertNoThrow(try TaskHeader.decode(frames, featureCount: 784, maximumSamples: limit))
            } else {
                XCTAssertThrowsError(try TaskHeader.decode(frames, featureCount: 784, maximumSamples: limit))
            }
        }

        // A model a coordinator can send (every layer within the codec's limits) of which not
        // one sample fits: its welcome is refused, and so would be any task for it.
        var shape = ImageShape(height: 2048, width: 2048, channels: 2)
        var layers: [Layer] = []
        for _ in 0..<64 {
            let conv = try Conv2D(input: shape, outputChannels: 2, kernelSize: 1, activation: .relu)
            layers.append(.conv(conv))
            shape = conv.output
        }
        let pool = try MaxPool2D(input: shape, size: 2048)
        layers += [.maxPool(pool), .flatten(pool.output), .dense(Dense(inputSize: pool.outputSize, outputSize: 10, activation: .softmax))]
        let huge = try ModelSpec(input: ImageShape(height: 2048, width: 2048, channels: 2), layers: layers)
        XCTAssertEqual(WireLimits.maximumSamples(for: huge), 0)
        let welcome = Welcome(workerIndex: 0, heartbeatMilliseconds: 1000, spec: huge)
        XCTAssertThrowsError(try Welcome(try envelope(bytes(welcome.encode())))) { error in
            XCTAssertTrue("\(error)".contains("one sample needs more than a worker's 4 GiB workspace"), "\(error)")
        }
        let task = TaskHeader(shard: 0, sampleCount: 1, featureCount: UInt32(huge.inputSize))
        XCTAssertThrowsError(try TaskHeader.decode(try envelope(bytes(task.encodeShared(step: 1, slot: 0, offset: 0))),
                                                   featureCount: huge.inputSize, maximumSamples: 0)) { error in
            XCTAssertTrue("\(error)".contains("not one sample of this model fits"), "\(error)")
        }
    }

    /// An index task is checked against the worker's own training set: every index below its
    /// size, the count within what the worker can hold, the data frame exactly that long.
    func testIndexTasksAreCheckedAgainstTheWorkersDataSet() throws {
        let task = IndexTask(shard: 2, featureCount: 784, indices: [0, 41, 99, 7])
        func decode(_ frames: [[UInt8]], maximumSamples: Int = 100, sampleCount: Int = 100) throws -> IndexTask {
            try IndexTask.decode(try envelope(frames), featureCount: 784, maximumSamples: maximumSamples, sampleCount: sampleCount)
        }
        XCTAssertEqual(try decode(bytes(task.encode(step: 3))), task)
        XCTAssertEqual(try envelope(bytes(task.encode(step: 3))).type, .indexTask)
        // An index past the worker's set: refused, naming the field and the allowed range.
        XCTAssertThrowsError(try decode(bytes(task.encode(step: 3)), sampleCount: 99)) { error in
            XCTAssertEqual(error as? ProtocolError, .outOfRange(field: "sample index", value: 99, range: 0...98))
        }
        var frames = bytes(task.encode(step: 3))
        patch(&frames[2], at: 4, UInt32.max)
        XCTAssertThrowsError(try decode(frames)) { error in
            XCTAssertEqual(error as? ProtocolError, .outOfRange(field: "sample index", value: UInt64(UInt32.max), range: 0...99))
        }
        // More samples than the worker can hold, or than a message can carry; none at all.
        XCTAssertThrowsError(try decode(bytes(task.encode(step: 3)), maximumSamples: 3)) { error in
            XCTAssertTrue("\(error)".contains("index task sample count 4 is outside 1…3"), "\(error)")
        }
        XCTAssertThrowsError(try decode(bytes(task.encode(step: 3)), maximumSamples: 0)) { error in
            XCTAssertTrue("\(error)".contains("not one sample of this model fits"), "\(error)")
        }
        for count in [UInt32.max, 0] {
            frames = bytes(task.encode(step: 3))
            patch(&frames[1], at: 4, count)
            XCTAssertThrowsError(try decode(frames)) { error in
                XCTAssertTrue("\(error)".contains("index task sample count \(count) is outside"), "\(error)")
            }
        }
        // A count that the data frame does not hold, either way (header length kept consistent).
        for count in [UInt32(3), 5] {
            frames = bytes(task.encode(step: 3))
            patch(&frames[1], at: 4, count)
            XCTAssertThrowsError(try decode(frames)) { error in
                XCTAssertTrue("\(error)".contains("data frame holds 16 bytes, expected \(count * 4)"), "\(error)")
            }
        }
        frames = bytes(task.encode(step: 3))
        frames[2].removeLast(2)
        patch(&frames[0], at: 16, UInt64(frames[1].count + frames[2].count))
        XCTAssertThrowsError(try decode(frames)) { error in
            XCTAssertTrue("\(error)".contains("data frame holds 14 bytes, expected 16"), "\(error)")
        }
        // Another model's input width, and a worker with no data at all.
        XCTAssertThrowsError(try IndexTask.decode(try envelope(bytes(task.encode(step: 3))), featureCount: 10,
                                                  maximumSamples: 100, sampleCount: 100)) { error in
            XCTAssertTrue("\(error)".contains("784 features per sample, the model takes 10"), "\(error)")
        }
        XCTAssertThrowsError(try decode(bytes(task.encode(step: 3)), sampleCount: 0)) { error in
            XCTAssertTrue("\(error)".contains("holds no training set"), "\(error)")
        }
    }

    /// The hello carries the worker's data digest after its proof; zeros: no data.
    func testTheHelloCarriesTheDataDigest() throws {
        let digest = (0..<32).map { UInt8($0 + 1) }
        let hello = Hello(pid: 9, name: "w", dataDigest: digest)
        let decoded = try Hello(try envelope(bytes(hello.encode())))
        XCTAssertEqual(decoded.dataDigest, digest)
        XCTAssertTrue(decoded.hasData)
        XCTAssertFalse(try Hello(try envelope(bytes(Hello(pid: 9, name: "w").encode()))).hasData)
        // A hello of the previous layout (no digest) is short: refused, not read past its end.
        var frames = bytes(hello.encode())
        frames[1].removeLast(32)
        patch(&frames[0], at: 16, UInt64(frames[1].count))
        XCTAssertThrowsError(try Hello(try envelope(frames))) { error in
            XCTAssertTrue("\(error)".hasPrefix("malformed hello"), "\(error)")
        }
    }

    func testPeerTextIsEscapedForLogs() {
        XCTAssertEqual(escapedForLog("w1\nFAKE: worker lost\u{1B}[31m"), "w1\\u{a}FAKE: worker lost\\u{1b}[31m")
        XCTAssertEqual(escapedForLog("back\\slash \u{202E}rtl"), "back\\\\slash \\u{202e}rtl")
        XCTAssertEqual(escapedForLog("plain-name_01 ü"), "plain-name_01 ü")
        XCTAssertEqual(escapedForLog(String(repeating: "x", count: 500), maximumLength: 10), String(repeating: "x", count: 10) + "…")
    }
}
