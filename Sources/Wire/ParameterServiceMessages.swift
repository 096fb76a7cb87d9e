import NeuralNet

/// The messages of the sharded parameter service (`coordinator --parameter-servers R`),
/// encoders and decoders side by side. A run's parameters are cut into R contiguous ranges,
/// each owned by a serving worker (`worker --serve`). Every message carries the service's
/// *generation*: the coordinator counts it up whenever it seeds the servers anew (after a
/// server was lost), and whatever belongs to an older generation is stale.
///
/// | type               | dir  | meta                                                        | bulk                   |
/// |--------------------|------|-------------------------------------------------------------|------------------------|
/// | 12 serve offer     | w→c  | serve endpoint string · CURVE public key string (or empty)   | –                      |
/// | 13 server map      | c→w  | generation UInt32 · R UInt32 · R × (endpoint string ·       | –                      |
/// |                    |      | lower UInt32 · count UInt32 · CURVE public key string)      |                        |
/// | 14 serve assignment| c→s  | generation · lower · count · iteration UInt64 · shards UInt32| parameters, optimizer  |
/// |                    |      | · precision UInt8 · optimizer (kind UInt8, 7 × Float32)      | state (fp32)           |
/// | 15 step plan       | c→s  | generation · batch samples UInt32 · shards UInt32 · bitmap  | –                      |
/// | 16 weights range   | s→w  | generation · lower · count · precision UInt8                | values (precision)     |
/// | 17 gradient range  | w→s  | generation · shard report · lower · count · precision UInt8 | values (precision)     |
/// | 18 receipt         | s→c  | generation · shard report                                   | –                      |
/// | 19 applied         | s→c  | generation                                                  | –                      |
/// | 20 snapshot request| c→s  | generation                                                  | –                      |
/// | 21 snapshot answer | s→c  | generation · lower · count · iteration UInt64 · shards · …  | as the assignment      |
/// | 22 range refused   | s→c  | generation · shard report · reason string                   | –                      |
/// | 25 receipts        | s→c  | generation · count UInt32 · count × shard report            | –                      |
///
/// A shard report is shard UInt32 · block count UInt32 · worker index UInt32 · samples UInt32 ·
/// loss sum Float64 · correct UInt32 · compute µs UInt64: a block count k > 1 (a host's
/// `worker --processes K`) answers for the aligned block `shard..<shard + k` (k a power of two,
/// `shard` a multiple of k), whose gradient range then carries the block's subtree of the
/// shard tree in fp32 whatever the run's precision. The step is the header's. A server's messages to the
/// coordinator travel over its own worker's link; a worker says hello to a server exactly as
/// to the coordinator (hello, challenge, hello with the proof for the server's nonce).

/// A contiguous range of the flat parameter vector.
public struct ParameterRange: Equatable, Sendable, CustomStringConvertible {
    public let lower: Int
    public let count: Int
    public var upper: Int { lower + count }

    public init(lower: Int, count: Int) {
        self.lower = lower
        self.count = count
    }

    public var description: String { "\(lower)..<\(upper)" }

    func write(to writer: inout ByteWriter) {
        writer.write(UInt32(lower))
        writer.write(UInt32(count))
    }

    /// Reads a range and checks that it lies inside `0..<parameterCount` and is not empty.
    static func read(from reader: inout ByteReader, parameterCount: Int) throws -> ParameterRange {
        let lower = try reader.readInt(UInt32.self, "range start", in: 0...max(0, parameterCount - 1))
        let count = try reader.readInt(UInt32.self, "range length", in: 1...max(1, parameterCount - lower))
        return ParameterRange(lower: lower, count: count)
    }
}

public enum ParameterServiceLimits {
    /// Servers one run may have.
    public static let maximumServers = 256
    /// Shards per step a server keeps gradient ranges for.
    public static let maximumShards = 1 << 16
}

/// A serving worker's offer, sent right after its welcome: where it serves, and its CURVE key.
public struct ServeOffer: Equatable, Sendable {
    public var endpoint: String
    public var curvePublicKey: String

    public init(endpoint: String, curvePublicKey: String = "") {
        self.endpoint = endpoint
        self.curvePublicKey = curvePublicKey
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(string: endpoint)
        meta.write(string: curvePublicKey)
        return encodeMessage(.serveOffer, step: 0, meta: meta)
    }

    public init(_ envelope: Envelope) throws {
        try envelope.requireNoBulk()
        (endpoint, curvePublicKey) = try envelope.readMeta { reader in
            (try reader.readString(maximumLength: 256), try reader.readString(maximumLength: 40))
        }
        try Self.check(endpoint: endpoint, key: curvePublicKey, type: .serveOffer)
    }

    static func check(endpoint: String, key: String, type: MessageType) throws {
        guard endpoint.hasPrefix("tcp://"), endpoint.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw ProtocolError.malformed(type, "a serve endpoint is tcp://HOST:PORT in printable ASCII")
        }
        guard key.isEmpty || CurveKeys.isValid(key) else { throw ProtocolError.malformed(type, "not a CURVE public key") }
    }
}

/// Who serves which range, for every worker: ranges in order, covering every parameter.
public struct ServerMap: Equatable, Sendable {
    public struct Entry: Equatable, Sendable {
        public var endpoint: String
        public var range: ParameterRange
        public var curvePublicKey: String

        public init(endpoint: String, range: ParameterRange, curvePublicKey: String = "") {
            self.endpoint = endpoint
            self.range = range
            self.curvePublicKey = curvePublicKey
        }
    }

    public var generation: UInt32
    public var entries: [Entry]

    public init(generation: UInt32, entries: [Entry]) {
        self.generation = generation
        self.entries = entries
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        meta.write(UInt32(entries.count))
        for entry in entries {
            meta.write(string: entry.endpoint)
            entry.range.write(to: &meta)
            meta.write(string: entry.curvePublicKey)
        }
        return encodeMessage(.serverMap, step: 0, meta: meta)
    }

    /// Decodes a map and checks that its ranges cover `0..<parameterCount` in order.
    public init(_ envelope: Envelope, parameterCount: Int) throws {
        try envelope.requireNoBulk()
        (generation, entries) = try envelope.readMeta { reader in
            let generation = try reader.read(UInt32.self)
            let count = try reader.readInt(UInt32.self, "server count", in: 1...ParameterServiceLimits.maximumServers)
            var entries: [Entry] = []
            for _ in 0..<count {
                let endpoint = try reader.readString(maximumLength: 256)
                let range = try ParameterRange.read(from: &reader, parameterCount: parameterCount)
                let key = try reader.readString(maximumLength: 40)
                try ServeOffer.check(endpoint: endpoint, key: key, type: .serverMap)
                entries.append(Entry(endpoint: endpoint, range: range, curvePublicKey: key))
            }
            return (generation, entries)
        }
        var next = 0
        for entry in entries {
            guard entry.range.lower == next else { throw ProtocolError.malformed(.serverMap, "range \(entry.range) does not start at \(next)") }
            next = entry.range.upper
        }
        guard next == parameterCount else { throw ProtocolError.malformed(.serverMap, "ranges end at \(next), the model has \(parameterCount) parameters") }
    }
}

/// How a server updates its range: the run's optimizer and L2 coefficient.
public struct RangeOptimizerSettings: Equatable, Sendable {
    public var kind: OptimizerKind
    public var learningRate: Float
    public var decay: Float
    public var momentum: Float
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var l2: Float

    public init(kind: OptimizerKind, learningRate: Float, decay: Float, momentum: Float,
                beta1: Float, beta2: Float, epsilon: Float, l2: Float) {
        (self.kind, self.learningRate, self.decay, self.momentum) = (kind, learningRate, decay, momentum)
        (self.beta1, self.beta2, self.epsilon, self.l2) = (beta1, beta2, epsilon, l2)
    }

    /// Buffers of optimizer state per parameter: SGD's velocity, Adam's two moments.
    public var stateCount: Int { kind == .sgd ? 1 : 2 }

    var floats: [Float] { [learningRate, decay, momentum, beta1, beta2, epsilon, l2] }
}

/// A range's parameters and optimizer state at a step: what a server is seeded with, and
/// what it answers a snapshot request with.
public struct RangeState: Equatable, Sendable {
    public var range: ParameterRange
    public var iteration: Int
    public var parameters: [Float]
    /// `stateCount` buffers of `range.count` values.
    public var optimizerState: [[Float]]

    public init(range: ParameterRange, iteration: Int, parameters: [Float], optimizerState: [[Float]]) {
        self.range = range
        self.iteration = iteration
        self.parameters = parameters
        self.optimizerState = optimizerState
    }

    func writeMeta(to meta: inout ByteWriter) {
        range.write(to: &meta)
        meta.write(UInt64(iteration))
        meta.write(UInt8(optimizerState.count))
    }

    var bulk: OutgoingFrame {
        var values = ByteWriter(capacity: (1 + optimizerState.count) * range.count * 4)
        values.write(floats: parameters)
        for buffer in optimizerState { values.write(floats: buffer) }
        return .bytes(values.bytes)
    }

    /// The meta fields, then the values from the bulk frame (every one finite).
    static func read(_ reader: inout ByteReader, envelope: Envelope, parameterCount: Int) throws
        -> (range: ParameterRange, iteration: Int, stateCount: Int) {
        let range = try ParameterRange.read(from: &reader, parameterCount: parameterCount)
        let iteration = try reader.readInt(UInt64.self, "iteration", in: 0...WireLimits.maximumStep)
        let stateCount = try reader.readInt(UInt8.self, "optimizer state count", in: 1...2)
        return (range, iteration, stateCount)
    }

    static func values(_ envelope: Envelope, range: ParameterRange, iteration: Int, stateCount: Int) throws -> RangeState {
        // range.count ≤ maximumParameters, so (1 + 2) · count · 4 fits an Int.
        let bulk = try envelope.requireBulk((1 + stateCount) * range.count * 4)
        let all: [Float] = bulk.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        guard all.allSatisfy(\.isFinite) else { throw ProtocolError.malformed(envelope.type, "NaN or infinite values") }
        let buffers = (0...stateCount).map { Array(all[($0 * range.count)..<(($0 + 1) * range.count)]) }
        return RangeState(range: range, iteration: iteration, parameters: buffers[0], optimizerState: Array(buffers.dropFirst()))
    }
}

/// The coordinator seeds a server: its range's state at `step`, and how to update it.
public struct ServeAssignment: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var state: RangeState
    public var shardCount: Int
    public var precision: WirePrecision
    public var optimizer: RangeOptimizerSettings

    public init(generation: UInt32, step: UInt64, state: RangeState, shardCount: Int, precision: WirePrecision,
                optimizer: RangeOptimizerSettings) {
        (self.generation, self.step, self.state, self.shardCount) = (generation, step, state, shardCount)
        (self.precision, self.optimizer) = (precision, optimizer)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        state.writeMeta(to: &meta)
        meta.write(UInt32(shardCount))
        meta.write(precision.rawValue)
        meta.write(optimizer.kind == .sgd ? UInt8(0) : UInt8(1))
        for value in optimizer.floats { meta.write(value) }
        return encodeMessage(.serveAssignment, step: step, meta: meta, bulk: state.bulk)
    }

    public init(_ envelope: Envelope, parameterCount: Int) throws {
        let (generation, header, shards, code, kind, floats) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try RangeState.read(&reader, envelope: envelope, parameterCount: parameterCount),
             try reader.readInt(UInt32.self, "shard count", in: 1...ParameterServiceLimits.maximumShards),
             try reader.read(UInt8.self), try reader.readInt(UInt8.self, "optimizer", in: 0...1),
             try (0..<7).map { _ in try reader.readFloat() })
        }
        guard let precision = WirePrecision(rawValue: code) else { throw ProtocolError.malformed(.serveAssignment, "unknown precision \(code)") }
        guard floats.allSatisfy(\.isFinite) else { throw ProtocolError.malformed(.serveAssignment, "NaN or infinite hyperparameters") }
        let settings = RangeOptimizerSettings(kind: kind == 0 ? .sgd : .adam, learningRate: floats[0], decay: floats[1],
                                              momentum: floats[2], beta1: floats[3], beta2: floats[4], epsilon: floats[5], l2: floats[6])
        guard header.stateCount == settings.stateCount else {
            throw ProtocolError.malformed(.serveAssignment, "\(header.stateCount) optimizer state buffers for \(settings.kind)")
        }
        self.init(generation: generation, step: envelope.step,
                  state: try RangeState.values(envelope, range: header.range, iteration: header.iteration, stateCount: header.stateCount),
                  shardCount: shards, precision: precision, optimizer: settings)
    }
}

/// A server's range at the step it reached, for the coordinator's snapshot.
public struct SnapshotAnswer: Equatable, Sendable {
    public var generation: UInt32
    public var step: UInt64
    public var state: RangeState

    public init(generation: UInt32, step: UInt64, state: RangeState) {
        (self.generation, self.step, self.state) = (generation, step, state)
    }

    public func encode() -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(generation)
        state.writeMeta(to: &meta)
        return encodeMessage(.snapshotAnswer, step: step, meta: meta, bulk: state.bulk)
    }

    public init(_ envelope: Envelope, parameterCount: Int) throws {
        let (generation, header) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try RangeState.read(&reader, envelope: envelope, parameterCount: parameterCount))
        }
        self.init(generation: generation, step: envelope.step,
                  state: try RangeState.values(envelope, range: header.range, iteration: header.iteration, stateCount: header.stateCount))
    }
}
