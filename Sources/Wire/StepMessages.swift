import NeuralNet

/// The typed messages of `WireProtocol` that carry a step: weights out, tasks out, results
/// back; each with its encoder and decoder side by side.

/// The parameters a worker computes the next tasks with.
public enum WeightsMessage {
    /// The slot byte of a message whose values travel in its data frame.
    static let inFrame: UInt8 = 0xFF

    /// `parameters` holds `count` values already encoded in `precision`.
    public static func encode(step: UInt64, parameters: SharedBuffer, count: Int, precision: WirePrecision) -> [OutgoingFrame] {
        encodeMessage(.weights, step: step, meta: meta(count: count, precision: precision, slot: inFrame),
                      bulk: .shared(parameters, offset: 0, count: count * precision.bytesPerValue))
    }

    /// The weights wait in slot `slot` of the segment named in the welcome: no data frame.
    public static func encodeShared(step: UInt64, slot: Int, count: Int, precision: WirePrecision) -> [OutgoingFrame] {
        encodeMessage(.weights, step: step, meta: meta(count: count, precision: precision, slot: UInt8(slot)))
    }

    private static func meta(count: Int, precision: WirePrecision, slot: UInt8) -> ByteWriter {
        var meta = ByteWriter()
        meta.write(UInt32(count))
        meta.write(precision.rawValue)
        meta.write(slot)
        return meta
    }

    /// The precision and, for weights waiting in shared memory, the slot, after checking the
    /// parameter count and the frame layout.
    public static func header(_ envelope: Envelope, expectedCount: Int) throws -> (precision: WirePrecision, slot: Int?) {
        let (count, code, slot) = try envelope.readMeta { reader in
            (try reader.readInt(UInt32.self, "parameter count", in: 0...WireLimits.maximumParameters),
             try reader.read(UInt8.self), try reader.read(UInt8.self))
        }
        guard count == expectedCount else {
            throw ProtocolError.malformed(.weights, "\(count) parameters, the model has \(expectedCount)")
        }
        guard let precision = WirePrecision(rawValue: code) else {
            throw ProtocolError.malformed(.weights, "unknown precision \(code)")
        }
        if slot == inFrame {
            _ = try envelope.requireBulk(count * precision.bytesPerValue)
            return (precision, nil)
        }
        try envelope.requireNoBulk()
        return (precision, Int(slot))
    }

    /// `decode` for a peer without shared memory.
    @discardableResult
    public static func decode(_ envelope: Envelope, expectedCount: Int, into destination: UnsafeMutablePointer<Float>) throws -> Int? {
        var scratch: [UInt8] = []
        return try decode(envelope, expectedCount: expectedCount, into: destination, shared: nil, scratch: &scratch)
    }

    /// Checks the message against the expected parameter count and decodes the values to
    /// fp32, from its data frame or from `shared` (the welcome's segment). Returns the slot
    /// they came from (nil: the frame).
    @discardableResult
    public static func decode(_ envelope: Envelope, expectedCount: Int, into destination: UnsafeMutablePointer<Float>,
                              shared: SharedSegment? = nil, scratch: inout [UInt8]) throws -> Int? {
        let (precision, sharedSlot) = try header(envelope, expectedCount: expectedCount)
        let count = expectedCount
        let slot = sharedSlot.map(UInt8.init) ?? inFrame
        let finite: Bool
        if slot == inFrame {
            let bulk = try envelope.requireBulk(count * precision.bytesPerValue)
            finite = bulk.withUnsafeBytes { precision.decode($0.baseAddress!, count: count, into: destination) }
        } else {
            try envelope.requireNoBulk()
            guard let shared else { throw ProtocolError.malformed(.weights, "weights in shared slot \(slot), but no segment is open") }
            finite = try shared.readValues(slot: Int(slot), count: count, precision: precision, into: destination, scratch: &scratch)
        }
        guard finite else { throw ProtocolError.malformed(.weights, "NaN or infinite weights") }
        return slot == inFrame ? nil : Int(slot)
    }
}

/// One shard of a batch: its samples' labels and pixels.
public struct TaskHeader: Equatable, Sendable {
    public var shard: UInt32
    public var sampleCount: UInt32
    public var featureCount: UInt32

    public init(shard: UInt32, sampleCount: UInt32, featureCount: UInt32) {
        self.shard = shard
        self.sampleCount = sampleCount
        self.featureCount = featureCount
    }

    /// Where a task's samples are: in its data frame, or at `offset` of a slot of the
    /// coordinator's batch segment (named in the welcome).
    public enum Samples {
        case frame(ZMQMessage)
        case shared(slot: Int, offset: Int)
    }

    /// The bytes a task's samples take: the labels (`sampleCount` bytes) then the pixels.
    /// A decoded header's product is at most `WireProtocol.maximumMessageBytes`.
    public var sampleBytes: Int { Int(sampleCount) * (1 + Int(featureCount)) }

    /// `samples` holds the labels then the pixels.
    public func encode(step: UInt64, samples: OutgoingFrame) -> [OutgoingFrame] {
        encodeMessage(.task, step: step, meta: meta(slot: WeightsMessage.inFrame, offset: 0), bulk: samples)
    }

    /// The samples wait at `offset` of slot `slot` of the batch segment: no data frame.
    public func encodeShared(step: UInt64, slot: Int, offset: Int) -> [OutgoingFrame] {
        encodeMessage(.task, step: step, meta: meta(slot: UInt8(slot), offset: UInt64(offset)))
    }

    private func meta(slot: UInt8, offset: UInt64) -> ByteWriter {
        var meta = ByteWriter()
        meta.write(shard)
        meta.write(sampleCount)
        meta.write(featureCount)
        meta.write(slot)
        meta.write(offset)
        return meta
    }

    /// Decodes the header and checks that the data frame matches it, if the samples travel
    /// in one (a shared slot's bounds are checked by whoever opens it).
    /// - Parameter maximumSamples: the most samples the receiver can hold (`WireLimits.maximumSamples`).
    public static func decode(_ envelope: Envelope, featureCount expected: Int,
                              maximumSamples: Int = .max) throws -> (TaskHeader, Samples) {
        let (header, slot, offset) = try envelope.readMeta { reader in
            (TaskHeader(shard: try reader.read(), sampleCount: try reader.read(), featureCount: try reader.read()),
             try reader.read(UInt8.self), try reader.read(UInt64.self))
        }
        guard Int(header.featureCount) == expected else {
            throw ProtocolError.malformed(.task, "\(header.featureCount) features per sample, the model takes \(expected)")
        }
        guard maximumSamples >= 1 else {
            throw ProtocolError.malformed(.task, "not one sample of this model fits in a worker's workspace")
        }
        // Any task must fit in a message, whichever way it travels: this bounds `sampleBytes`.
        let samples = 1...max(1, min(maximumSamples, WireProtocol.maximumMessageBytes / (1 + expected)))
        guard checkedInt(header.sampleCount, in: samples) != nil else {
            throw ProtocolError.outOfRange(field: "task sample count", value: UInt64(header.sampleCount), range: samples)
        }
        if slot == WeightsMessage.inFrame {
            return (header, .frame(try envelope.requireBulk(header.sampleBytes)))
        }
        try envelope.requireNoBulk()
        guard let start = checkedInt(offset, in: 0...WireProtocol.maximumMessageBytes) else {
            throw ProtocolError.outOfRange(field: "task offset", value: offset, range: 0...WireProtocol.maximumMessageBytes)
        }
        return (header, .shared(slot: Int(slot), offset: start))
    }
}

/// A worker's answer for one shard: statistics and the gradient summed over its samples;
/// or a host's answer for an aligned block of shards (`blockCount` > 1): the block's
/// statistics and its shards' gradient sums added along their subtree of `ShardTree`,
/// in fp32 (a sum of rounded values is no longer a 16-bit value).
public struct ResultHeader: Equatable, Sendable {
    /// The first shard.
    public var shard: UInt32
    /// Shards answered: `shard..<shard + blockCount`, a power of two that divides `shard`.
    public var blockCount: UInt32 = 1
    public var sampleCount: UInt32
    public var lossSum: Double
    public var correctCount: UInt32
    public var parameterCount: UInt32
    public var precision: WirePrecision
    public var computeMicroseconds: UInt64
    /// The slot of the worker's segment that holds the gradient (nil: the data frame).
    public var sharedSlot: Int?

    public init(shard: UInt32, sampleCount: UInt32, lossSum: Double, correctCount: UInt32,
                parameterCount: UInt32, precision: WirePrecision = .fp32, computeMicroseconds: UInt64,
                sharedSlot: Int? = nil) {
        self.sharedSlot = sharedSlot
        self.shard = shard
        self.sampleCount = sampleCount
        self.lossSum = lossSum
        self.correctCount = correctCount
        self.parameterCount = parameterCount
        self.precision = precision
        self.computeMicroseconds = computeMicroseconds
    }

    /// `gradient` holds `parameterCount` values already encoded in `precision`.
    public func encode(step: UInt64, gradient: SharedBuffer) -> [OutgoingFrame] {
        encodeMessage(.result, step: step, meta: meta(slot: WeightsMessage.inFrame),
                      bulk: .shared(gradient, offset: 0, count: Int(parameterCount) * precision.bytesPerValue))
    }

    /// The gradient waits in `sharedSlot` of the worker's segment: no data frame.
    public func encodeShared(step: UInt64) -> [OutgoingFrame] {
        encodeMessage(.result, step: step, meta: meta(slot: UInt8(sharedSlot ?? 0)))
    }

    /// The shards answered.
    public var shards: Range<Int> { Int(shard)..<(Int(shard) + Int(blockCount)) }

    private func meta(slot: UInt8) -> ByteWriter {
        var meta = ByteWriter()
        meta.write(shard)
        meta.write(blockCount)
        meta.write(sampleCount)
        meta.write(lossSum)
        meta.write(correctCount)
        meta.write(parameterCount)
        meta.write(precision.rawValue)
        meta.write(computeMicroseconds)
        meta.write(slot)
        return meta
    }

    /// Decodes the header and checks the gradient frame's size (nil when the gradient is in
    /// a shared slot); the caller decodes the values with `header.precision.decode` or
    /// `SharedSegment.readValues`, which also refuse NaN and infinity. `shardCount`, when
    /// known, bounds the shards answered.
    public static func decode(_ envelope: Envelope, parameterCount expected: Int,
                              shardCount: Int? = nil) throws -> (ResultHeader, ZMQMessage?) {
        var blockCount: UInt32 = 1
        var header = try envelope.readMeta { reader -> ResultHeader in
            let shard = try reader.read(UInt32.self)
            blockCount = try reader.read(UInt32.self)
            let samples = try reader.read(UInt32.self)
            let loss = try reader.readDouble()
            let correct = try reader.read(UInt32.self)
            let count = try reader.read(UInt32.self)
            let code = try reader.read(UInt8.self)
            guard let precision = WirePrecision(rawValue: code) else {
                throw ProtocolError.malformed(.result, "unknown precision \(code)")
            }
            let compute = UInt64(try reader.readInt(UInt64.self, "compute µs", in: WireLimits.computeMicroseconds))
            let slot = try reader.read(UInt8.self)
            return ResultHeader(shard: shard, sampleCount: samples, lossSum: loss, correctCount: correct,
                                parameterCount: count, precision: precision, computeMicroseconds: compute,
                                sharedSlot: slot == WeightsMessage.inFrame ? nil : Int(slot))
        }
        header.blockCount = blockCount
        try checkBlock(header, shardCount: shardCount)
        guard Int(header.parameterCount) == expected else {
            throw ProtocolError.malformed(.result, "gradient of \(header.parameterCount) values, the model has \(expected)")
        }
        // A NaN or infinite loss passes here: the coordinator decides whether the run diverged.
        guard !(header.lossSum < 0), header.correctCount <= header.sampleCount else {
            throw ProtocolError.malformed(.result, "impossible statistics (loss \(header.lossSum), \(header.correctCount) of \(header.sampleCount) correct)")
        }
        if header.sharedSlot != nil {
            try envelope.requireNoBulk()
            return (header, nil)
        }
        return (header, try envelope.requireBulk(expected * header.precision.bytesPerValue))
    }

    /// A block must be an aligned power of two inside the step's shards, in fp32, and in the
    /// message's data frame (a host sends it from no shared segment).
    private static func checkBlock(_ header: ResultHeader, shardCount: Int?) throws {
        let count = header.blockCount
        guard count >= 1, count <= UInt32(Hello.maximumSlots), count & (count - 1) == 0, header.shard % count == 0 else {
            throw ProtocolError.malformed(.result, "block of \(count) shards from shard \(header.shard): not an aligned power of two up to \(Hello.maximumSlots)")
        }
        if let shardCount, UInt64(header.shard) + UInt64(count) > UInt64(shardCount) {
            throw ProtocolError.malformed(.result, "shards \(header.shard)..<\(UInt64(header.shard) + UInt64(count)), but a step has \(shardCount)")
        }
        if count > 1 && (header.precision != .fp32 || header.sharedSlot != nil) {
            throw ProtocolError.malformed(.result, "a block's sum travels in fp32 in the data frame")
        }
    }
}
