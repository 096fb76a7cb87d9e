import NeuralNet

/// The per-step messages of the parameter service (layouts in `ParameterServiceMessages.swift`).

/// Who computed a shard, or an aligned block of shards summed on one host (`worker
/// --processes K`), and what its samples gave: carried by a gradient range, and by the receipt
/// a server sends the coordinator for it.
public struct ShardReport: Equatable, Sendable {
    /// The first shard; with `blockCount` > 1 the block `shard..<shard + blockCount`, whose
    /// range holds the block's subtree of `ShardTree` in fp32.
    public var shard: Int
    public var blockCount: Int
    public var worker: Int
    public var sampleCount: Int
    public var lossSum: Double
    public var correctCount: Int
    public var computeMicroseconds: Int

    public init(shard: Int, worker: Int, sampleCount: Int, lossSum: Double, correctCount: Int, computeMicroseconds: Int,
                blockCount: Int = 1) {
        (self.shard, self.blockCount, self.worker, self.sampleCount) = (shard, blockCount, worker, sampleCount)
        (self.lossSum, self.correctCount, self.computeMicroseconds) = (lossSum, correctCount, computeMicroseconds)
    }

    /// The shards this report answers for.
    public var shards: Range<Int> { shard..<(shard + blockCount) }

    /// "shard 3", or "shards 4..<8" for a block, for log lines.
    public var shardsDescription: String { blockCount == 1 ? "shard \(shard)" : "shards \(shards)" }

    func write(to meta: inout ByteWriter) {
        meta.write(UInt32(shard))
        meta.write(UInt32(blockCount))
        meta.write(UInt32(worker))
        meta.write(UInt32(sampleCount))
        meta.write(lossSum)
        meta.write(UInt32(correctCount))
        meta.write(UInt64(computeMicroseconds))
    }

    static func read(from reader: inout ByteReader, type: MessageType) throws -> ShardReport {
        let shard = try reader.readInt(UInt32.self, "shard", in: 0...(ParameterServiceLimits.maximumShards - 1))
        let blockCount = try reader.readInt(UInt32.self, "block shard count", in: 1...ParameterServiceLimits.maximumShards)
        // Aligned (a power of two starting at a multiple of itself), so inside 0..<maximumShards;
        // whether it lies inside the step's shards is the receiver's check.
        guard blockCount & (blockCount - 1) == 0, shard % blockCount == 0 else {
            throw ProtocolError.malformed(type, "shards \(shard)..<\(shard + blockCount) are no aligned block")
        }
        let report = ShardReport(shard: shard,
                                 worker: try reader.readInt(UInt32.self, "worker index", in: 0...Int(UInt32.max)),
                                 sampleCount: try reader.readInt(UInt32.self, "sample count", in: 1...Int(UInt32.max)),
                                 lossSum: try reader.readDouble(),
                                 correctCount: try reader.readInt(UInt32.self, "correct count", in: 0...Int(UInt32.max)),
                                 computeMicroseconds: try reader.readInt(UInt64.self, "compute µs", in: WireLimits.computeMicroseconds),
                                 blockCount: blockCount)
        // A NaN or infinite loss passes: the coordinator decides whether the run diverged.
        guard !(report.lossSum < 0), report.correctCount <= report.sampleCount else {
            throw ProtocolError.malformed(type, "impossible statistics (loss \(report.lossSum), \(report.correctCount) of \(report.sampleCount) correct)")
        }
        return report
    }
}

/// What a server needs to know of a step before it can finish it: the batch's sample count
/// and which shards have samples (the others count as zeros).
public struct StepPlan: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var sampleCount: Int
    public var nonEmpty: [Bool]

    public init(generation: UInt32, step: UInt64, sampleCount: Int, nonEmpty: [Bool]) {
        (self.generation, self.step, self.sampleCount, self.nonEmpty) = (generation, step, sampleCount, nonEmpty)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        meta.write(UInt32(sampleCount))
        meta.write(UInt32(nonEmpty.count))
        var bits = [UInt8](repeating: 0, count: (nonEmpty.count + 7) / 8)
        for (shard, full) in nonEmpty.enumerated() where full { bits[shard / 8] |= 1 << (shard % 8) }
        meta.write(raw: bits)
        return encodeMessage(.stepPlan, step: step, meta: meta)
    }

    /// Decodes a plan for a step of `shardCount` shards.
    public init(_ envelope: Envelope, shardCount: Int) throws {
        try envelope.requireNoBulk()
        let (generation, samples, shards, bits) = try envelope.readMeta { reader in
            let generation = try reader.read(UInt32.self)
            let samples = try reader.readInt(UInt32.self, "batch sample count", in: 1...Int(UInt32.max))
            let shards = try reader.readInt(UInt32.self, "shard count", in: shardCount...shardCount)
            return (generation, samples, shards, Array(try reader.readBytes(count: (shards + 7) / 8)))
        }
        let nonEmpty = (0..<shards).map { bits[$0 / 8] & (1 << ($0 % 8)) != 0 }
        guard nonEmpty.contains(true) else { throw ProtocolError.malformed(.stepPlan, "a step without a shard that has samples") }
        self.init(generation: generation, step: envelope.step, sampleCount: samples, nonEmpty: nonEmpty)
    }
}

/// A range of values in the wire precision: a server's weights for a step, or a worker's
/// gradient range of one shard or of a host's aligned block (with its report; a block's
/// values are fp32).
public struct RangeValuesHeader: Equatable, Sendable {
    public var generation: UInt32
    public var report: ShardReport?
    public var range: ParameterRange
    public var precision: WirePrecision

    public init(generation: UInt32, report: ShardReport? = nil, range: ParameterRange, precision: WirePrecision) {
        (self.generation, self.report, self.range, self.precision) = (generation, report, range, precision)
    }

    /// `values` holds the range already encoded in `precision`, from byte `offset` on.
    public func encode(step: UInt64, values: SharedBuffer, offset: Int) -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        report?.write(to: &meta)
        range.write(to: &meta)
        meta.write(precision.rawValue)
        return encodeMessage(report == nil ? .weightsRange : .gradientRange, step: step, meta: meta,
                             bulk: .shared(values, offset: offset, count: range.count * precision.bytesPerValue))
    }

    /// Decodes the header of a weights range or a gradient range and checks its data frame's
    /// size; the values are decoded with `decodeValues`.
    public init(_ envelope: Envelope, parameterCount: Int) throws {
        guard envelope.type == .weightsRange || envelope.type == .gradientRange else { throw ProtocolError.unexpected(envelope.type) }
        let (generation, report, range, code) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self),
             envelope.type == .gradientRange ? try ShardReport.read(from: &reader, type: envelope.type) : nil,
             try ParameterRange.read(from: &reader, parameterCount: parameterCount), try reader.read(UInt8.self))
        }
        guard let precision = WirePrecision(rawValue: code) else { throw ProtocolError.malformed(envelope.type, "unknown precision \(code)") }
        _ = try envelope.requireBulk(range.count * precision.bytesPerValue)
        self.init(generation: generation, report: report, range: range, precision: precision)
    }

    /// The values to fp32 at `destination` (`range.count` of them); false if any is NaN or
    /// infinite.
    public func decodeValues(_ envelope: Envelope, into destination: UnsafeMutablePointer<Float>) throws -> Bool {
        let bulk = try envelope.requireBulk(range.count * precision.bytesPerValue)
        return bulk.withUnsafeBytes { precision.decode($0.baseAddress!, count: range.count, into: destination) }
    }
}

/// A server's word to the coordinator about one shard: accepted (a receipt), or refused.
public struct ShardVerdictMessage: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var report: ShardReport
    /// Empty for a receipt; why the range was refused otherwise.
    public var refusal: String

    public init(generation: UInt32, step: UInt64, report: ShardReport, refusal: String = "") {
        (self.generation, self.step, self.report, self.refusal) = (generation, step, report, refusal)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        report.write(to: &meta)
        if !refusal.isEmpty { meta.write(string: String(refusal.prefix(200))) }
        return encodeMessage(refusal.isEmpty ? .receipt : .rangeRefused, step: step, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        let (generation, report, refusal) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try ShardReport.read(from: &reader, type: envelope.type),
             envelope.type == .rangeRefused ? try reader.readString(maximumLength: 800) : "")
        }
        self.init(generation: generation, step: envelope.step, report: report, refusal: refusal)
    }
}

/// Receipts of one step from one server, in one message: what a server took in one round of
/// its loop (a coordinator on its host names many shards in one message; many ranges can wait
/// on its socket). The same as that many `receipt`s, for one message's cost.
public struct ShardReceipts: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var reports: [ShardReport]

    /// A step's shards, at most: a server acknowledges each at most once a round.
    public static let maximumReports = ParameterServiceLimits.maximumShards
    /// A shard report's bytes (`ShardReport.write`).
    static let reportBytes = 36

    public init(generation: UInt32, step: UInt64, reports: [ShardReport]) {
        (self.generation, self.step, self.reports) = (generation, step, reports)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        meta.write(UInt32(reports.count))
        for report in reports { report.write(to: &meta) }
        return encodeMessage(.receipts, step: step, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        let (generation, reports) = try envelope.readMeta { reader in
            let generation = try reader.read(UInt32.self)
            let reports = try reader.readCountedList(.receipts, "receipt", maximum: Self.maximumReports,
                                                     minimumBytes: Self.reportBytes) { try ShardReport.read(from: &$0, type: .receipts) }
            return (generation, reports)
        }
        self.init(generation: generation, step: envelope.step, reports: reports)
    }

    /// Each receipt as the single message it stands for.
    public var verdicts: [ShardVerdictMessage] {
        reports.map { ShardVerdictMessage(generation: generation, step: step, report: $0) }
    }
}

/// The messages that carry only a generation: `applied` (server → coordinator: the step is
/// done and the next weights are out) and `snapshotRequest` (coordinator → server).
public enum GenerationMessage {
    public static func encode(_ type: MessageType, step: UInt64, generation: UInt32) -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        return encodeMessage(type, step: step, meta: meta)
    }

    public static func decode(_ envelope: Envelope) throws -> UInt32 {
        try envelope.requireNoBulk()
        return try envelope.readMeta { try $0.read(UInt32.self) }
    }
}
