import NeuralNet

/// The coordinator–worker protocol, written down once: layouts, encoders and decoders side by side.
///
/// Every message is two or three ZeroMQ frames (a ROUTER adds the peer's routing id in
/// front on the coordinator's side):
///
///     frame 0  header, 24 bytes, little-endian:
///              magic "ZMQT" (4) · protocol version UInt16 · message type UInt16 ·
///              step UInt64 · payload length UInt64 (bytes in the frames after the header)
///     frame 1  meta: the message type's fixed fields (below)
///     frame 2  bulk, for weights, task and result: raw little-endian data (absent when the
///              values wait in shared memory, see below)
///
/// | type          | dir | meta                                                            | bulk                     |
/// |---------------|-----|-----------------------------------------------------------------|--------------------------|
/// | 1 hello       | w→c | model hash [32] (zeros: any model) · pid UInt32 · name string · | –                        |
/// |               |     | proof [32] (HMAC-SHA256 of the run secret, see `RunProof`) ·    |                          |
/// |               |     | data digest [32] (zeros: none; see `Dataset.contentSHA256`) ·   |                          |
/// |               |     | slots UInt16 (compute processes behind the link, power of two)  |                          |
/// | 2 welcome     | c→w | worker index UInt32 · heartbeat ms UInt32 · precision UInt8 ·   | –                        |
/// |               |     | dropout rate Float32 · dropout seed UInt64 · model spec ·       |                          |
/// |               |     | weights segment · batch segment                                 |                          |
/// | 3 reject      | c→w | reason string                                                   | –                        |
/// | 4 weights     | c→w | parameter count UInt32 · precision UInt8 · slot UInt8           | parameters (precision),  |
/// |               |     |                                                                 | none if slot ≠ 0xFF      |
/// | 5 task        | c→w | shard UInt32 · sample count UInt32 · feature count UInt32 ·     | labels, then pixels;     |
/// |               |     | slot UInt8 · offset UInt64                                      | none if slot ≠ 0xFF      |
/// | 6 result      | w→c | shard UInt32 · block UInt32 (shards first…first+block−1, an     | gradient sum (precision),|
/// |               |     | aligned power of two; > 1: a host's subtree sum, always fp32) · |                          |
/// |               |     | sample count UInt32 · loss sum Float64 ·                        |                          |
/// |               |     | correct UInt32 · parameter count UInt32 · precision UInt8 ·     | none if slot ≠ 0xFF      |
/// |               |     | compute µs UInt64 · slot UInt8                                  |                          |
/// | 7 heartbeat   | both| –                                                               | –                        |
/// | 8 shutdown    | c→w | reason string                                                   | –                        |
/// | 9 attach      | w→c | the worker's gradient segment · pipe to the worker string ·     | –                        |
/// |               |     | pipe to the coordinator string (both empty: no pipes) ·         |                          |
/// |               |     | pinned CPU UInt16 (0xFFFF: not pinned)                          |                          |
/// | 10 challenge  | c→w | the coordinator's run nonce [16]                                | –                        |
/// | 11 index task | c→w | shard UInt32 · sample count UInt32 · feature count UInt32       | sample indices, UInt32   |
/// | 12–22         |     | the parameter service: see `ParameterServiceMessages.swift`     |                          |
///
/// Data where it is used: a worker started with `--data DIR` sends the digest of the
/// training set it loaded in its hello. When it equals the coordinator's, the coordinator
/// sends that worker index tasks (`IndexTask`) instead of tasks with samples, and the worker
/// gathers the samples from its own copy; otherwise, and for a worker without data, the
/// samples travel as before. The worker checks every index against its own set's size.
///
/// Admission: a hello must carry the proof of the run secret for the nonce of the last
/// challenge (zeros before the first); the coordinator answers any other hello with a
/// challenge, and a worker that gets a challenge for the nonce it already answered holds
/// the wrong secret. Every integer is range-checked when it is read (`readInt`); a step
/// above `WireLimits.maximumStep` is refused in the header.
///
/// Precision: 0 fp32, 1 fp16, 2 bf16 (`WirePrecision`); 16-bit values are little-endian
/// UInt16 bit patterns. Strings are a UInt32 byte count then UTF-8. A model spec is input size UInt32, layer
/// count UInt32, then output size UInt32 and activation UInt8 per layer.
///
/// Shared memory (workers on the coordinator's host): a segment is a name string (`/zmqt-…`,
/// or `/proc/PID/fd/N` for a worker's sealed memfd; empty: no segment, and nothing follows),
/// a 16-byte nonce, a slot count UInt32 and a slot size UInt64. The welcome names the coordinator's weights segment (two slots, written for
/// step s into slot s mod 2) and its batch segment (the same, for each step's batch, laid
/// out shard by shard, each shard's labels then its pixels); a worker that opens them and
/// finds the nonces in their headers sends attach with a segment of its own for gradients.
/// From then on the coordinator sends that worker weights messages with the slot instead of
/// a data frame, which tells the worker to return each step's n-th gradient in its slot n
/// (while it has slots) the same way, and tasks with the slot and the shard's byte offset
/// in it. Slot 0xFF means "in the data frame". See `SharedSegment` for the layout and who may map what.
///
/// Pipes (same host too): the attach also names two FIFOs the worker made. Once the
/// coordinator has opened them, it sends that worker every message of at most `PIPE_BUF`
/// bytes through its pipe instead of the socket (each framed as a UInt32 length, then each
/// frame as a UInt32 length and its bytes), and the worker, once something came that way,
/// answers through the other pipe. The messages are the same; only the path is shorter
/// (see `PipeChannel`).
public enum WireProtocol {
    public static let magic: [UInt8] = Array("ZMQT".utf8)
    public static let version: UInt16 = 10
    public static let headerSize = 24
    /// The largest message a peer may send (a 64 Mi-parameter gradient), enforced with
    /// `ZMQ_MAXMSGSIZE` and again by the decoder.
    public static let maximumMessageBytes = 256 << 20
    /// The reject reason that tells a worker to say hello again rather than give up: sent to
    /// a peer that talks as if registered when this coordinator does not know it.
    public static let unknownWorkerReason = "unknown worker (the coordinator restarted?): say hello again"
}

public enum MessageType: UInt16, Sendable, CaseIterable {
    case hello = 1, welcome, reject, weights, task, result, heartbeat, shutdown, attach, challenge, indexTask
    // The parameter service (`ParameterServiceMessages.swift`).
    case serveOffer, serverMap, serveAssignment, stepPlan, weightsRange, gradientRange, receipt, applied
    case snapshotRequest, snapshotAnswer, rangeRefused
    // The parameter service through shared memory on one host (`SharedServiceMessages.swift`).
    case rangeSegment, shardsInSegments
    // Receipts of one step, several in one message (`ShardReceipts`).
    case receipts
}

/// Why a message was refused. Decoders never trust a length or a count they were sent.
public enum ProtocolError: Error, Equatable, CustomStringConvertible {
    case wrongFrameCount(Int)
    case shortHeader(Int)
    case badMagic
    case unsupportedVersion(UInt16)
    case unknownType(UInt16)
    case lengthMismatch(declared: UInt64, actual: Int)
    case malformed(MessageType, String)
    case unexpected(MessageType)
    case outOfRange(field: String, value: UInt64, range: ClosedRange<Int>)

    public var description: String {
        switch self {
        case let .wrongFrameCount(count): "wrong number of frames (\(count))"
        case let .shortHeader(count): "header of \(count) bytes, expected \(WireProtocol.headerSize)"
        case .badMagic: "bad magic number (not this protocol)"
        case let .unsupportedVersion(version): "protocol version \(version), expected \(WireProtocol.version)"
        case let .unknownType(type): "unknown message type \(type)"
        case let .lengthMismatch(declared, actual): "payload length says \(declared) bytes, frames hold \(actual)"
        case let .malformed(type, reason): "malformed \(type): \(reason)"
        case let .unexpected(type): "unexpected \(type) message"
        case let .outOfRange(field, value, range): "\(field) \(value) is outside \(range.lowerBound)…\(range.upperBound)"
        }
    }
}

/// A decoded header plus the frames after it, not yet interpreted.
public struct Envelope {
    public let type: MessageType
    /// At most `WireLimits.maximumStep`, so `Int(step)` is safe.
    public let step: UInt64
    public let meta: ZMQMessage
    public let bulk: ZMQMessage?

    /// Checks the header and the frame layout of a message (routing id already removed).
    public init(frames: ArraySlice<ZMQMessage>) throws {
        guard frames.count == 2 || frames.count == 3 else { throw ProtocolError.wrongFrameCount(frames.count) }
        let header = frames[frames.startIndex]
        let (type, step, declared) = try header.withUnsafeBytes { raw -> (MessageType, UInt64, UInt64) in
            guard raw.count == WireProtocol.headerSize else { throw ProtocolError.shortHeader(raw.count) }
            guard Array(raw[0..<4]) == WireProtocol.magic else { throw ProtocolError.badMagic }
            var reader = ByteReader(UnsafeRawBufferPointer(rebasing: raw[4...]))
            let version = try reader.read(UInt16.self)
            guard version == WireProtocol.version else { throw ProtocolError.unsupportedVersion(version) }
            let rawType = try reader.read(UInt16.self)
            guard let type = MessageType(rawValue: rawType) else { throw ProtocolError.unknownType(rawType) }
            let step = try reader.readInt(UInt64.self, "step", in: 0...WireLimits.maximumStep)
            return (type, UInt64(step), try reader.read(UInt64.self))
        }
        let rest = frames.dropFirst()
        let actual = rest.reduce(0) { $0 + $1.count }
        guard declared == UInt64(actual) else { throw ProtocolError.lengthMismatch(declared: declared, actual: actual) }
        self.type = type
        self.step = step
        self.meta = rest[rest.startIndex]
        self.bulk = rest.count == 2 ? rest[rest.startIndex + 1] : nil
    }

    /// Reads the meta frame with `body`, turning short reads into a `malformed` error.
    func readMeta<T>(_ body: (inout ByteReader) throws -> T) throws -> T {
        try meta.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do {
                let value = try body(&reader)
                guard reader.remaining == 0 else {
                    throw ProtocolError.malformed(type, "\(reader.remaining) unexpected trailing bytes")
                }
                return value
            } catch let error as ByteReaderError {
                throw ProtocolError.malformed(type, error.description)
            }
        }
    }

    func requireBulk(_ byteCount: Int) throws -> ZMQMessage {
        guard let bulk else { throw ProtocolError.malformed(type, "missing data frame") }
        guard bulk.count == byteCount else {
            throw ProtocolError.malformed(type, "data frame holds \(bulk.count) bytes, expected \(byteCount)")
        }
        return bulk
    }

    func requireNoBulk() throws {
        if bulk != nil { throw ProtocolError.malformed(type, "unexpected data frame") }
    }
}

/// Builds the frames of one message.
public func encodeMessage(_ type: MessageType, step: UInt64, meta: ByteWriter = ByteWriter(),
                          bulk: OutgoingFrame? = nil) -> [OutgoingFrame] {
    let payload = meta.bytes.count + (bulk?.byteCount ?? 0)
    var header = ByteWriter(capacity: WireProtocol.headerSize)
    header.write(raw: WireProtocol.magic)
    header.write(WireProtocol.version)
    header.write(type.rawValue)
    header.write(step)
    header.write(UInt64(payload))
    var frames: [OutgoingFrame] = [.bytes(header.bytes), .bytes(meta.bytes)]
    if let bulk { frames.append(bulk) }
    return frames
}
