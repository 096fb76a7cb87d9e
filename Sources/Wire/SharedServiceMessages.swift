import NeuralNet

/// The parameter service when the coordinator and its servers share a host: bulk values stay
/// in shared memory, and these two small messages say where they are.
///
/// | type               | dir  | meta                                                              | bulk |
/// |--------------------|------|-------------------------------------------------------------------|------|
/// | 23 range segment   | s→c  | generation UInt32 · lower UInt32 · count UInt32 · segment         | –    |
/// | 24 shards in segments | c→s | generation · count UInt32 · count × (shard report · segment · slot UInt32) | – |
///
/// A segment is described as in the welcome (name string, nonce 16 bytes, slot count UInt32,
/// slot size UInt64). A *range segment* is a server's own sealed memfd with two slots by step
/// parity, each its range of the weights in the wire precision; the header's step is the one
/// whose weights are in slot `step % 2` already (the seed). *Shards in segments* tells a server
/// that workers' gradients of shards of the header's step lie in the named slots of those
/// workers' gradient segments, each whole (every parameter, in the wire precision): the server
/// reads its range of each there. Count 1...65536, and never more than the meta can hold.

/// A server's weights segment, announced after its assignment.
public struct RangeSegmentMessage: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var range: ParameterRange
    public var segment: SharedSegmentInfo

    public init(generation: UInt32, step: UInt64, range: ParameterRange, segment: SharedSegmentInfo) {
        (self.generation, self.step, self.range, self.segment) = (generation, step, range, segment)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        range.write(to: &meta)
        meta.write(segment: segment)
        return encodeMessage(.rangeSegment, step: step, meta: meta)
    }

    public init(_ envelope: Envelope, parameterCount: Int) throws {
        try envelope.requireNoBulk()
        let (generation, range, segment) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try ParameterRange.read(from: &reader, parameterCount: parameterCount),
             try reader.readSegment())
        }
        guard let segment else { throw ProtocolError.malformed(.rangeSegment, "no segment") }
        self.init(generation: generation, step: envelope.step, range: range, segment: segment)
    }
}

/// Where workers' gradients of shards of one step lie, for the servers: every result the
/// coordinator accepted in one round of its message loop, in one message (a message per
/// result woke every server once per result).
public struct ShardsInSegments: Equatable, Sendable {
    /// One shard's gradient: whole, in `slot` of `segment`.
    public struct Entry: Equatable, Sendable {
        public var report: ShardReport
        public var segment: SharedSegmentInfo
        public var slot: Int

        public init(report: ShardReport, segment: SharedSegmentInfo, slot: Int) {
            (self.report, self.segment, self.slot) = (report, segment, slot)
        }
    }

    /// Entries one message may carry: a step's shards, at most.
    public static let maximumEntries = ParameterServiceLimits.maximumShards
    /// The fewest bytes an entry takes: a shard report (36), a segment with a one-byte name
    /// (4 + 1 + 16 + 4 + 8) and a slot (4).
    static let minimumEntryBytes = 73

    public var generation: UInt32
    public var step: UInt64
    public var entries: [Entry]

    public init(generation: UInt32, step: UInt64, entries: [Entry]) {
        (self.generation, self.step, self.entries) = (generation, step, entries)
    }

    /// Traps on no entries or more than `maximumEntries`: the sender batches within them.
    public func encode() -> [OutgoingFrame] {
        precondition((1...Self.maximumEntries).contains(entries.count), "\(entries.count) entries in one shards-in-segments message")
        var meta = ByteWriter()
        meta.write(generation)
        meta.write(UInt32(entries.count))
        for entry in entries {
            entry.report.write(to: &meta)
            meta.write(segment: entry.segment)
            meta.write(UInt32(entry.slot))
        }
        return encodeMessage(.shardsInSegments, step: step, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        let (generation, entries) = try envelope.readMeta { reader in
            let generation = try reader.read(UInt32.self)
            let entries = try reader.readCountedList(.shardsInSegments, "entry", maximum: Self.maximumEntries,
                                                     minimumBytes: Self.minimumEntryBytes) { try Entry.read(from: &$0) }
            return (generation, entries)
        }
        self.init(generation: generation, step: envelope.step, entries: entries)
    }
}

extension ShardsInSegments.Entry {
    static func read(from reader: inout ByteReader) throws -> Self {
        let report = try ShardReport.read(from: &reader, type: .shardsInSegments)
        let segment = try reader.readSegment()
        let slot = try reader.readInt(UInt32.self, "segment slot", in: 0...63)
        guard let segment, slot < segment.slotCount else {
            throw ProtocolError.malformed(.shardsInSegments, "slot \(slot) of a segment of \(segment?.slotCount ?? 0) slots")
        }
        return Self(report: report, segment: segment, slot: slot)
    }
}

extension Envelope {
    /// The generation a parameter-service message opens its meta with (every one from the
    /// coordinator to a server does), to hold one that overtook its generation's assignment:
    /// on one host a small message takes the pipe and a large one the socket.
    public var leadingGeneration: UInt32? {
        meta.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return try? reader.read(UInt32.self)
        }
    }
}
