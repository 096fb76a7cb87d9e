import NeuralNet

/// The parameter service when the coordinator and its servers share a host: bulk values stay
/// in shared memory, and these two small messages say where they are.
///
/// | type               | dir  | meta                                                              | bulk |
/// |--------------------|------|-------------------------------------------------------------------|------|
/// | 23 range segment   | s→c  | generation UInt32 · lower UInt32 · count UInt32 · segment         | –    |
/// | 24 shard in segment| c→s  | generation · shard report · segment · slot UInt32                 | –    |
///
/// A segment is described as in the welcome (name string, nonce 16 bytes, slot count UInt32,
/// slot size UInt64). A *range segment* is a server's own sealed memfd with two slots by step
/// parity, each its range of the weights in the wire precision; the header's step is the one
/// whose weights are in slot `step % 2` already (the seed). A *shard in segment* tells a server
/// that a worker's gradient of one shard of the header's step lies in `slot` of that worker's
/// gradient segment, whole (every parameter, in the wire precision): the server reads its
/// range of it there.

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

/// Where a worker's gradient of one shard lies, for the servers.
public struct ShardInSegment: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var report: ShardReport
    public var segment: SharedSegmentInfo
    public var slot: Int

    public init(generation: UInt32, step: UInt64, report: ShardReport, segment: SharedSegmentInfo, slot: Int) {
        (self.generation, self.step, self.report, self.segment, self.slot) = (generation, step, report, segment, slot)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        report.write(to: &meta)
        meta.write(segment: segment)
        meta.write(UInt32(slot))
        return encodeMessage(.shardInSegment, step: step, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        let (generation, report, segment, slot) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try ShardReport.read(from: &reader, type: .shardInSegment), try reader.readSegment(),
             try reader.readInt(UInt32.self, "segment slot", in: 0...63))
        }
        guard let segment, slot < segment.slotCount else {
            throw ProtocolError.malformed(.shardInSegment, "slot \(slot) of a segment of \(segment?.slotCount ?? 0) slots")
        }
        self.init(generation: generation, step: envelope.step, report: report, segment: segment, slot: slot)
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
