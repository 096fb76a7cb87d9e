import Foundation
import Logging
import NeuralNet
import Wire

/// The server part of a serving worker (`worker --serve ENDPOINT`): a ROUTER that owns one
/// range of the parameters and its optimizer state. Workers say hello to it proving the run
/// secret, send it their range of each shard's gradient, and get back the range of each
/// step's new weights; it tells the coordinator (through its worker's own link, `outbox`)
/// what it accepted and when a step is applied.
///
/// Single-threaded: the worker's loop polls `socket` and calls `drain()`. Every message is
/// checked; what fails is refused and counted (`rejectedMessages`), the first per peer logged.
public final class ParameterServer {
    let socket: ZMQSocket
    /// Where workers connect (the port filled in).
    public let endpoint: String
    /// This server's CURVE public key ("" when the run is plain text): fresh at every start.
    public let curvePublicKey: String
    let logger: Logger
    private let nonce: [UInt8] = (0..<Challenge.nonceBytes).map { _ in UInt8.random(in: 0...255) }
    /// Set once this worker joined the run (it proved the secret itself then).
    var runSecret: RunSecret?
    var spec: ModelSpec?
    var precision = WirePrecision.fp32
    var admitted: Set<[UInt8]> = []
    private var loggedPeers: Set<[UInt8]> = []
    /// Messages for the coordinator, sent by the worker after each `drain`/`handle`.
    public internal(set) var outbox: [[OutgoingFrame]] = []
    public internal(set) var rejectedMessages = 0
    public internal(set) var staleMessages = 0
    public internal(set) var stepsApplied = 0
    /// Gradient ranges taken (a host's block counts once): with hosts of K processes, about
    /// a K-th of the shards.
    public internal(set) var rangesAccepted = 0
    /// CPU seconds (`ThreadCPUClock`) spent summing, updating and sending the weights, over the
    /// steps applied (on the coordinator's host also reading each gradient range from shared
    /// memory): this server's serial work per step (it waits for the slowest gradient before it).
    public internal(set) var applySeconds = 0.0
    /// Receipts of the round of messages being handled (`inReceiptRound`), sent as one.
    var receiptBatch: ShardReceipts?

    // The range being served, from the last assignment.
    var generation: UInt32?
    var update: RangeUpdate?
    /// The step whose gradients are being collected (its weights are out).
    var step: UInt64 = 0
    var plan: StepPlan?
    /// Each accepted shard's gradient range (`update.range.count` floats), or a host's
    /// block's (keyed by its first shard, its size in `blockSizes`), and buffers kept for
    /// the next ones: only what admitted peers sent is ever allocated.
    var gradients: [Int: UnsafeMutablePointer<Float>] = [:]
    /// Blocks of more than one shard held in `gradients`, by first shard; and for every
    /// shard a held gradient covers, the first shard of that gradient.
    var blockSizes: [Int: Int] = [:]
    var coveredBy: [Int: Int] = [:]
    var spareBuffers: [UnsafeMutablePointer<Float>] = []
    var bufferCount = 0
    private var weightsPool = SharedBufferPool(byteCount: 0)
    /// On the coordinator's host (`ParameterServerSharedMemory.swift`): set by the worker once
    /// it shares memory with its coordinator; the range's weights by step parity, for the
    /// coordinator to copy; the workers' gradient segments open, by name, and the step they
    /// were swept at; the workers whose refused segment was logged.
    var sharesHost = false
    var weightsSegment: SharedSegment?
    var gradientSegments: [String: OpenGradientSegment] = [:]
    var gradientSegmentsSweptAt: UInt64?
    var loggedSegmentWorkers: Set<Int> = []
    /// Messages of a generation whose assignment has not come yet (it is large, so on this
    /// host it takes the socket while they take the pipe): handled right after it.
    var heldForAssignment: [Envelope] = []

    /// The most a peer may send in one message (`ZMQ_MAXMSGSIZE`).
    public let maximumMessageBytes: Int
    /// Its connections without the run secret's proof: counted, and bounded by the
    /// worker's `ServerGate`.
    let unproven: UnprovenConnections
    var loggedUnprovenClose = false
    var loggedRefusal = false

    /// Binds `bindEndpoint` (port 0 picks one); with `curve`, as a CURVE server with a
    /// fresh key pair. A peer that sends a message over `maximumMessageBytes` is
    /// disconnected by libzmq before anything is allocated for it (set before the bind,
    /// which is when libzmq takes it for the connections to come).
    public init(context: ZMQContext, bindEndpoint: String, curve: Bool, maximumMessageBytes: Int, logger: Logger) throws {
        self.logger = logger
        self.maximumMessageBytes = maximumMessageBytes
        UnpredictableRoutingIDs.seed()
        socket = try ZMQSocket(context: context, type: .router)
        try socket.setRouterMandatory(true)
        if curve {
            let pair = try CurveKeys.generate()
            try socket.makeCurveServer(secretKey: pair.secretKey, zapDomain: CoordinatorServer.zapDomain)
            curvePublicKey = pair.publicKey
        } else {
            try socket.setZAPDomain(CoordinatorServer.zapDomain)
            curvePublicKey = ""
        }
        try socket.setMaximumMessageSize(bytes: maximumMessageBytes)
        unproven = try UnprovenConnections(watching: socket, context: context)
        try socket.setSendHighWaterMark(256)
        try socket.setReceiveHighWaterMark(1024)
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        let port = bindEndpoint.hasSuffix(":0") ? String(bindEndpoint.dropLast()) + "*" : bindEndpoint
        try socket.bind(port)
        endpoint = connectableEndpoint(socket.lastEndpoint)
    }

    deinit {
        gradients.values.forEach { $0.deallocate() }
        spareBuffers.forEach { $0.deallocate() }
    }

    public func takeOutbox() -> [[OutgoingFrame]] {
        defer { outbox.removeAll() }
        return outbox
    }

    public var hasOutbox: Bool { !outbox.isEmpty }

    /// Messages the worker's link could not take yet (its queue is full): first in line again.
    func putBack(_ messages: ArraySlice<[OutgoingFrame]>) {
        outbox.insert(contentsOf: messages, at: 0)
    }

    /// Handles every message waiting on the socket (after the connection events: a
    /// connection is accepted before any message of it can arrive).
    public func drain() {
        noteConnections()
        inReceiptRound {
            while let frames = try? socket.receive(timeoutMilliseconds: 0) {
                guard frames.count >= 2 else { continue }
                let identity = frames[0].bytes
                do {
                    try handle(Envelope(frames: frames[1...]), from: identity)
                } catch {
                    reject(identity, "\(error)")
                }
                if admitted.contains(identity) { unproven.proven(frames[1].sourceDescriptor) }
            }
        }
    }

    private func handle(_ envelope: Envelope, from identity: [UInt8]) throws {
        if envelope.type == .hello { return try hello(Hello(envelope), from: identity) }
        guard admitted.contains(identity) else {
            // A worker whose connection was re-made has a new routing id: it says hello again.
            reject(identity, "\(envelope.type) from a peer that has not proven the run secret")
            send(Notice(reason: WireProtocol.unknownWorkerReason).encode(.reject), to: identity)
            return
        }
        switch envelope.type {
        case .gradientRange: try gradientRange(envelope, from: identity)
        case .heartbeat: break
        default: throw ProtocolError.unexpected(envelope.type)
        }
    }

    private func hello(_ hello: Hello, from identity: [UInt8]) throws {
        guard let runSecret, runSecret.verifies(hello.proof, nonce: nonce, pid: hello.pid, name: hello.name) else {
            if hello.proof.contains(where: { $0 != 0 }) {
                reject(identity, "refused \(escapedForLog(hello.name)) (pid \(hello.pid)): its hello does not prove this run's secret")
            }
            send(Challenge(nonce: nonce).encode(), to: identity)
            return
        }
        if admitted.insert(identity).inserted { logger.info("parameter server: admitted \(escapedForLog(hello.name)) (pid \(hello.pid))") }
        // One that joins late gets the current weights at once.
        if let update, let generation { sendWeights(update, generation: generation, to: [identity]) }
    }

    /// A message from the coordinator (through this worker's link).
    func handleFromCoordinator(_ envelope: Envelope) throws {
        guard let spec else { throw ProtocolError.unexpected(envelope.type) }
        if envelope.type != .serveAssignment, overtookItsAssignment(envelope) { return }
        switch envelope.type {
        case .serveAssignment:
            assign(try ServeAssignment(envelope, parameterCount: spec.parameterCount), spec: spec)
            handleHeldMessages()
        case .stepPlan:
            guard let update else { throw ProtocolError.unexpected(envelope.type) }
            let plan = try StepPlan(envelope, shardCount: update.shardCount)
            guard plan.generation == generation, plan.step == step else {
                staleMessages += 1
                return
            }
            self.plan = plan
            for first in Array(gradients.keys) where shards(from: first).contains(where: { !plan.nonEmpty[$0] }) { release(first) }
            completeIfReady()
        case .snapshotRequest:
            let requested = try GenerationMessage.decode(envelope)
            guard let update, let generation, requested == generation else {
                staleMessages += 1
                return
            }
            outbox.append(SnapshotAnswer(generation: generation, step: step, state: update.state).encode())
        case .shardsInSegments:
            try shardsInSegments(ShardsInSegments(envelope))
        default:
            throw ProtocolError.unexpected(envelope.type)
        }
    }

    private func assign(_ assignment: ServeAssignment, spec: ModelSpec) {
        generation = assignment.generation
        step = assignment.step
        precision = assignment.precision
        update = RangeUpdate(state: assignment.state, settings: assignment.optimizer, spec: spec, shardCount: assignment.shardCount)
        plan = nil
        for shard in Array(gradients.keys) { release(shard) }
        if bufferCount != assignment.state.range.count {
            spareBuffers.forEach { $0.deallocate() }
            spareBuffers = []
            bufferCount = assignment.state.range.count
        }
        weightsPool = SharedBufferPool(byteCount: assignment.state.range.count * precision.bytesPerValue)
        logger.notice("parameter server: serving parameters \(assignment.state.range) from step \(step) (generation \(assignment.generation))")
        guard let update else { return }
        if sharesHost { offerWeightsSegment(update, generation: assignment.generation) }
        sendWeights(update, generation: assignment.generation, to: Array(admitted))
    }

    /// The weights range of the current step, in the wire precision, to `peers`; a peer that
    /// is gone is forgotten.
    func sendWeights(_ update: RangeUpdate, generation: UInt32, to peers: [[UInt8]]) {
        let buffer = weightsPool.take()
        update.parameters.withUnsafeBufferPointer { precision.encode($0.baseAddress!, count: $0.count, into: buffer.pointer) }
        let frames = RangeValuesHeader(generation: generation, range: update.range, precision: precision)
            .encode(step: step, values: buffer, offset: 0)
        for peer in peers where !send(frames, to: peer) { admitted.remove(peer) }
    }

    /// False when the peer is gone (its connection closed); a peer whose queue is full (it
    /// is not reading) just misses this message: it gets the next step's weights.
    @discardableResult
    private func send(_ frames: [OutgoingFrame], to identity: [UInt8]) -> Bool {
        do {
            _ = try socket.send([.bytes(identity)] + frames, dontWait: true)
            return true
        } catch {
            return false
        }
    }

    func reject(_ identity: [UInt8], _ reason: String) {
        rejectedMessages += 1
        let text = escapedForLog(reason, maximumLength: 400)
        if loggedPeers.insert(identity).inserted {
            logger.warning("parameter server: rejected a message from \(describe(identity: identity)): \(text) (further rejects from this peer are counted, not logged)")
        }
    }
}
