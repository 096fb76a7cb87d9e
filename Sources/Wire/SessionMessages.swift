import NeuralNet

/// The typed messages of `WireProtocol` that open and close a worker's session, each with
/// its encoder and decoder side by side; the step's messages are in `StepMessages.swift`.

public struct Hello: Equatable, Sendable {
    /// SHA-256 of the model the worker was started for; all zeros accepts any model.
    public var modelHash: [UInt8]
    public var pid: UInt32
    public var name: String
    /// Proof that the worker holds the run secret, for the nonce of the last challenge
    /// (all zeros: none yet); see `RunProof`.
    public var proof: [UInt8]
    /// SHA-256 of the training set the worker loaded (`Dataset.contentSHA256`); all zeros:
    /// it has none, and gets every task's samples.
    public var dataDigest: [UInt8]
    /// Compute processes behind this link (`worker --processes K`): a power of two in
    /// `maximumSlots`; such a worker is given aligned blocks of K shards and answers each
    /// with one sum.
    public var slots: UInt16

    /// The most compute processes one host link may announce.
    public static let maximumSlots: UInt16 = 256

    public init(modelHash: [UInt8] = Array(repeating: 0, count: 32), pid: UInt32, name: String,
                proof: [UInt8] = Array(repeating: 0, count: 32), dataDigest: [UInt8] = Array(repeating: 0, count: 32),
                slots: UInt16 = 1) {
        self.modelHash = modelHash
        self.pid = pid
        self.name = name
        self.proof = proof
        self.dataDigest = dataDigest
        self.slots = slots
    }

    public var acceptsAnyModel: Bool { modelHash.allSatisfy { $0 == 0 } }
    public var hasData: Bool { dataDigest.contains { $0 != 0 } }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(raw: modelHash)
        meta.write(pid)
        meta.write(string: name)
        meta.write(raw: proof)
        meta.write(raw: dataDigest)
        meta.write(slots)
        return encodeMessage(.hello, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        (modelHash, pid, name, proof, dataDigest, slots) = try envelope.readMeta { reader in
            (Array(try reader.readBytes(count: 32)), try reader.read(UInt32.self), try reader.readString(maximumLength: 256),
             Array(try reader.readBytes(count: 32)), Array(try reader.readBytes(count: 32)), try reader.read(UInt16.self))
        }
        guard slots >= 1, slots <= Self.maximumSlots, slots & (slots - 1) == 0 else {
            throw ProtocolError.malformed(.hello, "\(slots) compute slots; a host announces a power of two from 1 to \(Self.maximumSlots)")
        }
    }
}

/// The coordinator's answer to a hello without a valid proof: the nonce to prove the run
/// secret for.
public struct Challenge: Equatable, Sendable {
    public static let nonceBytes = 16
    public var nonce: [UInt8]

    public init(nonce: [UInt8]) { self.nonce = nonce }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(raw: nonce)
        return encodeMessage(.challenge, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        nonce = try envelope.readMeta { Array(try $0.readBytes(count: Self.nonceBytes)) }
    }
}

public struct Welcome: Equatable, Sendable {
    public var workerIndex: UInt32
    public var heartbeatMilliseconds: UInt32
    /// The precision of weights and gradients on the wire for this run.
    public var precision: WirePrecision
    public var spec: ModelSpec
    /// The run's dropout (rate 0: none), so every worker draws the same masks as `--local`.
    public var dropout: Dropout?
    /// The coordinator's weights segment, for a worker on its host (nil: sockets only).
    public var sharedWeights: SharedSegmentInfo?
    /// Its batch segment: each step's samples, in slot step mod 2 (nil: in the tasks).
    public var sharedBatches: SharedSegmentInfo?

    public init(workerIndex: UInt32, heartbeatMilliseconds: UInt32, precision: WirePrecision = .fp32, spec: ModelSpec,
                dropout: Dropout? = nil, sharedWeights: SharedSegmentInfo? = nil, sharedBatches: SharedSegmentInfo? = nil) {
        self.workerIndex = workerIndex
        self.heartbeatMilliseconds = heartbeatMilliseconds
        self.precision = precision
        self.spec = spec
        self.dropout = dropout
        self.sharedWeights = sharedWeights
        self.sharedBatches = sharedBatches
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(workerIndex)
        meta.write(heartbeatMilliseconds)
        meta.write(precision.rawValue)
        meta.write(dropout?.rate ?? 0)
        meta.write(dropout?.seed ?? 0)
        ModelSpecCoding.write(spec, to: &meta)
        meta.write(segment: sharedWeights)
        meta.write(segment: sharedBatches)
        return encodeMessage(.welcome, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        (workerIndex, heartbeatMilliseconds, precision, dropout, spec, sharedWeights, sharedBatches) = try envelope.readMeta { reader in
            let index = try reader.read(UInt32.self)
            let heartbeat = UInt32(try reader.readInt(UInt32.self, "heartbeat ms", in: WireLimits.heartbeatMilliseconds))
            let code = try reader.read(UInt8.self)
            guard let precision = WirePrecision(rawValue: code) else {
                throw ProtocolError.malformed(.welcome, "unknown precision \(code)")
            }
            let rate = try reader.readFloat()
            let seed = try reader.read(UInt64.self)
            guard rate >= 0 && rate < 1 else { throw ProtocolError.malformed(.welcome, "dropout rate \(rate) outside [0, 1)") }
            let dropout = rate > 0 ? Dropout(rate: rate, seed: seed) : nil
            let spec = try ModelSpecCoding.read(from: &reader)
            if dropout != nil, !spec.allowsDropout {
                throw ProtocolError.malformed(.welcome, "dropout on non-ReLU hidden layers")
            }
            return (index, heartbeat, precision, dropout, spec, try reader.readSegment(), try reader.readSegment())
        }
    }
}

/// A reason string: the payload of reject and shutdown.
public struct Notice: Equatable, Sendable {
    public var reason: String

    public init(reason: String) { self.reason = reason }

    public func encode(_ type: MessageType) -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(string: reason)
        return encodeMessage(type, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        reason = try envelope.readMeta { try $0.readString(maximumLength: 4096) }
    }
}

public enum Heartbeat {
    public static func encode(step: UInt64 = 0) -> [OutgoingFrame] { encodeMessage(.heartbeat, step: step) }
}

/// A worker on the coordinator's host offers its own segment for its gradients, and two
/// pipes for the small messages of every step (see `PipeChannel`).
public struct AttachMessage: Equatable, Sendable {
    public var segment: SharedSegmentInfo
    /// The pipe the coordinator writes to this worker, and the one it reads from it
    /// (empty: none; the socket carries everything).
    public var toWorkerPipe: String
    public var toCoordinatorPipe: String
    /// The CPU the worker is pinned to (nil: it is not), so that the coordinator can wake the
    /// workers on other CPUs first and the one that shares its own CPU last.
    public var cpu: Int?

    public init(segment: SharedSegmentInfo, toWorkerPipe: String = "", toCoordinatorPipe: String = "", cpu: Int? = nil) {
        self.segment = segment
        self.toWorkerPipe = toWorkerPipe
        self.toCoordinatorPipe = toCoordinatorPipe
        self.cpu = cpu
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(segment: segment)
        meta.write(string: toWorkerPipe)
        meta.write(string: toCoordinatorPipe)
        meta.write(UInt16(cpu ?? 0xFFFF))
        return encodeMessage(.attach, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        let (segment, toWorker, toCoordinator, cpu) = try envelope.readMeta { reader in
            (try reader.readSegment(), try reader.readString(maximumLength: 80), try reader.readString(maximumLength: 80),
             try reader.read(UInt16.self))
        }
        guard let segment else { throw ProtocolError.malformed(.attach, "no segment named") }
        guard toWorker.isEmpty == toCoordinator.isEmpty else { throw ProtocolError.malformed(.attach, "one pipe without the other") }
        self.segment = segment
        self.toWorkerPipe = toWorker
        self.toCoordinatorPipe = toCoordinator
        self.cpu = cpu == 0xFFFF ? nil : Int(cpu)
    }
}

/// Model specs inside messages: `ModelCodec`'s bytes, read with the parameter count capped
/// by what one message can carry.
public enum ModelSpecCoding {
    public static func write(_ spec: ModelSpec, to writer: inout ByteWriter) {
        ModelCodec.write(spec, to: &writer)
    }

    /// Reads a spec whose parameters all fit in one message (`WireLimits.maximumParameters`)
    /// and of which a worker can hold at least one sample (`WireLimits.maximumSamples`): a
    /// model too big to send or to run is refused here, before anything is allocated for it.
    public static func read(from reader: inout ByteReader) throws -> ModelSpec {
        do {
            let spec = try ModelCodec.read(from: &reader, maximumParameterCount: WireLimits.maximumParameters)
            guard WireLimits.maximumSamples(for: spec) >= 1 else {
                throw ProtocolError.malformed(.welcome, "model: one sample needs more than a worker's "
                    + "\(WireLimits.maximumWorkspaceFloats / (1 << 28)) GiB workspace (\(spec))")
            }
            return spec
        } catch let error as ModelSpecError {
            throw ProtocolError.malformed(.welcome, "model: \(error)")
        }
    }

    /// SHA-256 of the spec's canonical encoding: what a hello carries.
    public static func hash(_ spec: ModelSpec) -> [UInt8] { ModelCodec.hash(spec) }
}
