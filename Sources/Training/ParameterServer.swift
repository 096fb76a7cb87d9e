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
    private var admitted: Set<[UInt8]> = []
    private var loggedPeers: Set<[UInt8]> = []
    /// Messages for the coordinator, sent by the worker after each `drain`/`handle`.
    public private(set) var outbox: [[OutgoingFrame]] = []
    public private(set) var rejectedMessages = 0
    public private(set) var staleMessages = 0
    public private(set) var stepsApplied = 0
    /// Gradient ranges taken (a host's block counts once): with hosts of K processes, about
    /// a K-th of the shards.
    public private(set) var rangesAccepted = 0
    /// Seconds spent summing, updating and sending the weights, over the steps applied: this
    /// server's serial time per step (it waits for the slowest gradient before it).
    public private(set) var applySeconds = 0.0

    // The range being served, from the last assignment.
    private var generation: UInt32?
    private var update: RangeUpdate?
    /// The step whose gradients are being collected (its weights are out).
    private var step: UInt64 = 0
    private var plan: StepPlan?
    /// Each accepted shard's gradient range (`update.range.count` floats), or a host's
    /// block's (keyed by its first shard, its size in `blockSizes`), and buffers kept for
    /// the next ones: only what admitted peers sent is ever allocated.
    private var gradients: [Int: UnsafeMutablePointer<Float>] = [:]
    /// Blocks of more than one shard held in `gradients`, by first shard; and for every
    /// shard a held gradient covers, the first shard of that gradient.
    private var blockSizes: [Int: Int] = [:]
    private var coveredBy: [Int: Int] = [:]
    private var spareBuffers: [UnsafeMutablePointer<Float>] = []
    private var bufferCount = 0
    private var weightsPool = SharedBufferPool(byteCount: 0)

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
        switch envelope.type {
        case .serveAssignment:
            assign(try ServeAssignment(envelope, parameterCount: spec.parameterCount), spec: spec)
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
        if let update { sendWeights(update, generation: assignment.generation, to: Array(admitted)) }
    }

    /// Checks a gradient range through and through; keeps the first finite one per shard
    /// (a host's block counts for each of its shards).
    private func gradientRange(_ envelope: Envelope, from identity: [UInt8]) throws {
        guard let update, let generation, let spec else { return staleMessages += 1 }
        let header = try RangeValuesHeader(envelope, parameterCount: spec.parameterCount)
        guard let report = header.report else { throw ProtocolError.unexpected(envelope.type) }
        let shards = report.shards
        // A block's sum travels in fp32: rounding it would change the tree's bits.
        let expected = shards.count > 1 ? WirePrecision.fp32 : precision
        // What is wrong in any step first, then whether it is this step's.
        guard header.range == update.range else { return reject(identity, "gradient range \(header.range), this server owns \(update.range)") }
        guard header.precision == expected else { return reject(identity, "gradient of \(report.shardsDescription) in \(header.precision), expected \(expected)") }
        guard shards.upperBound <= update.shardCount else { return reject(identity, "\(report.shardsDescription), but a step has \(update.shardCount)") }
        guard header.generation == generation, envelope.step == step else {
            if header.generation > generation || (header.generation == generation && envelope.step > step) {
                return reject(identity, "gradient for step \(envelope.step) (generation \(header.generation)); this server is at step \(step) (generation \(generation))")
            }
            return acknowledgeStale(report, step: envelope.step, generation: header.generation)
        }
        if let plan, let empty = shards.first(where: { !plan.nonEmpty[$0] }) {
            return reject(identity, "shard \(empty) has no samples in step \(step)")
        }
        // A re-run: the first one counts. A block some of whose shards are here already (their
        // re-runs won the race here, maybe not at the other servers) replaces them: its node is
        // their sum along the tree, the same bits, and every server then holds every shard of
        // it, which the coordinator, told of the block by the first receipt, counts on. Aligned
        // blocks nest, so whatever is held inside it lies wholly inside it.
        guard shards.contains(where: { coveredBy[$0] == nil }) else { return acknowledgeStale(report, step: step, generation: generation) }
        let buffer = spareBuffers.popLast() ?? .allocate(capacity: bufferCount)
        let finite: Bool
        do { finite = try header.decodeValues(envelope, into: buffer) } catch {
            spareBuffers.append(buffer)
            throw error
        }
        // A finite loss with a non-finite gradient is a broken worker: refused, and the
        // coordinator gives the shard to another. A non-finite loss is a run that diverged:
        // taken as it is, so that the coordinator stops the run with the usual error.
        guard finite || !report.lossSum.isFinite else {
            spareBuffers.append(buffer)
            reject(identity, "NaN or infinite gradient for \(report.shardsDescription) of step \(step)")
            outbox.append(ShardVerdictMessage(generation: generation, step: step, report: report, refusal: "NaN or infinite gradient range").encode())
            return
        }
        for first in Set(shards.compactMap { coveredBy[$0] }) { release(first) }
        gradients[report.shard] = buffer
        if shards.count > 1 { blockSizes[report.shard] = shards.count }
        for shard in shards { coveredBy[shard] = report.shard }
        rangesAccepted += 1
        outbox.append(ShardVerdictMessage(generation: generation, step: step, report: report).encode())
        completeIfReady()
    }

    /// A late or duplicate gradient is not used, but the coordinator hears that its worker
    /// answered (its deadline for that task is met), as from a stale result.
    private func acknowledgeStale(_ report: ShardReport, step: UInt64, generation: UInt32) {
        staleMessages += 1
        outbox.append(ShardVerdictMessage(generation: generation, step: step, report: report).encode())
    }

    /// With the plan and every shard that has samples in: the update, the next weights out,
    /// and `applied` to the coordinator.
    private func completeIfReady() {
        guard let plan, let update, let generation else { return }
        for (shard, full) in plan.nonEmpty.enumerated() where full && coveredBy[shard] == nil { return }
        let start = MonotonicClock.now
        defer { applySeconds += MonotonicClock.now - start }
        update.apply(sampleCount: plan.sampleCount, gradient: { self.gradients[$0].map { UnsafePointer($0) } },
                     blockSize: { self.blockSizes[$0] ?? 1 })
        for shard in Array(gradients.keys) { release(shard) }
        self.plan = nil
        outbox.append(GenerationMessage.encode(.applied, step: step, generation: generation))
        step += 1
        stepsApplied += 1
        sendWeights(update, generation: generation, to: Array(admitted))
    }

    /// The shards a held gradient keyed `first` covers.
    private func shards(from first: Int) -> Range<Int> { first..<(first + (blockSizes[first] ?? 1)) }

    /// Lets go of the gradient keyed `first` (a shard's or a block's).
    private func release(_ first: Int) {
        for shard in shards(from: first) { coveredBy[shard] = nil }
        blockSizes[first] = nil
        if let buffer = gradients.removeValue(forKey: first) { spareBuffers.append(buffer) }
    }

    /// The weights range of the current step, in the wire precision, to `peers`; a peer that
    /// is gone is forgotten.
    private func sendWeights(_ update: RangeUpdate, generation: UInt32, to peers: [[UInt8]]) {
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

    private func reject(_ identity: [UInt8], _ reason: String) {
        rejectedMessages += 1
        let text = escapedForLog(reason, maximumLength: 400)
        if loggedPeers.insert(identity).inserted {
            logger.warning("parameter server: rejected a message from \(describe(identity: identity)): \(text) (further rejects from this peer are counted, not logged)")
        }
    }
}
