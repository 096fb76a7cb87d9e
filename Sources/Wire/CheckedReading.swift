import NeuralNet

/// The one way a number from a peer becomes an `Int`: read at its wire width, checked
/// against the range the field may hold, and only then converted. A value outside it is a
/// `ProtocolError.outOfRange` naming the field, never a trap in `Int(_:)` or a size that
/// later overflows or allocates without bound.
extension ByteReader {
    public mutating func readInt<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ field: String,
                                                                        in range: ClosedRange<Int>) throws -> Int {
        let value = try read(T.self)
        guard let checked = checkedInt(value, in: range) else {
            throw ProtocolError.outOfRange(field: field, value: UInt64(value), range: range)
        }
        return checked
    }

    /// A UInt32 count of 1...`maximum` items, then the items: a count the rest of the meta
    /// cannot hold (each item at least `minimumBytes`) is refused before anything is reserved.
    mutating func readCountedList<Item>(_ type: MessageType, _ what: String, maximum: Int, minimumBytes: Int,
                                        item: (inout ByteReader) throws -> Item) throws -> [Item] {
        let count = try readInt(UInt32.self, "\(what) count", in: 1...maximum)
        let (needed, overflow) = count.multipliedReportingOverflow(by: minimumBytes)
        guard !overflow, needed <= remaining else {
            throw ProtocolError.malformed(type, "\(what) count \(count) in \(remaining) bytes")
        }
        var items: [Item] = []
        items.reserveCapacity(count)
        for _ in 0..<count { items.append(try item(&self)) }
        return items
    }
}

/// `value` as an `Int` if it lies in `range`, else nil; never traps.
public func checkedInt<T: FixedWidthInteger & UnsignedInteger>(_ value: T, in range: ClosedRange<Int>) -> Int? {
    guard let asInt = Int(exactly: value), range.contains(asInt) else { return nil }
    return asInt
}

/// The largest figures a message may carry, derived from the largest message a peer may
/// send (`WireProtocol.maximumMessageBytes`): whatever is bigger could never travel.
public enum WireLimits {
    /// Parameters of a model: one fp32 gradient must fit in a message.
    public static let maximumParameters = WireProtocol.maximumMessageBytes / 4
    /// Steps: any that fits an `Int` (64 bits); a step is compared and counted, never used as a size.
    public static let maximumStep = Int(Int64.max)
    /// Heartbeat intervals a coordinator may ask for: 1 ms to a minute.
    public static let heartbeatMilliseconds = 1...60_000
    /// A result's compute time: up to an hour, in microseconds.
    public static let computeMicroseconds = 0...3_600_000_000
    /// What a worker holds for one task, in floats: every layer's outputs and their
    /// gradients, the pooling masks, and the im2col scratch its convolutions share: 4 GiB.
    /// A task of more samples than fit is refused before anything is allocated for it.
    public static let maximumWorkspaceFloats = 1 << 30

    /// The most samples one task may carry for a model of `spec`: 0 when not even one
    /// sample fits beside the model's im2col scratch (a model no task can be run on).
    /// The scratch does not grow with a task (a convolution works through it in blocks of
    /// samples, `Conv2D.blockSamples`), but a model's one block can be up to 64 MiB.
    public static func maximumSamples(for spec: ModelSpec) -> Int {
        // At most 1024 layers of at most 2²⁴ values each (ModelCodec's limits): no overflow.
        let floatsPerSample = spec.workspaceValuesPerSample
        let room = maximumWorkspaceFloats - spec.convolutionScratchCount
        return room <= 0 ? 0 : room / floatsPerSample
    }
}
