import Foundation
import Logging
import NeuralNet
import Wire

/// A worker: keeps a model replica, and for every task runs forward and backward on the
/// shard with the weights of the task's step, and returns the gradient sum.
///
/// Its parts, one file each: the session with the coordinator (hello, challenge, welcome:
/// `WorkerSession.swift`), taking in messages and checking tasks (`WorkerTaskIntake.swift`),
/// computing and answering them (`WorkerCompute.swift`), and shared memory and pipes with a
/// coordinator on this host (`WorkerSharedMemory.swift`). What the coordinator sent wrong is
/// rejected and counted (`noteRejected`); the worker's own failures are `WorkerFailure`s,
/// thrown out of `run`.
public final class WorkerNode {
    public let options: WorkerOptions
    let logger: Logger
    let context: ZMQContext
    let socket: ZMQSocket
    var model: Sequential?
    var weightsStep: UInt64?
    /// Outgoing gradient buffers, sized for the model and precision of the last welcome.
    var gradientPool = SharedBufferPool(byteCount: 0)
    /// Tasks sent ahead of their step's weights, oldest first.
    var waitingTasks: [Envelope] = []
    /// The first waiting task's input, scaled in the model's workspace while that step's
    /// weights are still on their way (the coordinator is summing gradients then).
    var preparedInput: (step: UInt64, shard: UInt32, input: UnsafePointer<Float>)?
    /// Every shard of two steps at the protocol's most (a step's tasks may come before its
    /// weights, and the next step's right behind them): a coordinator sends no more.
    static let maximumWaitingTasks = 2 * ParameterServiceLimits.maximumShards
    var lastHeard = 0.0
    var lastSent = 0.0
    var heartbeatSeconds = 1.0
    var precision = WirePrecision.fp32
    /// fp32 gradient scratch for 16-bit wire precisions (fp32 computes straight into the
    /// outgoing buffer).
    var gradientScratch: [Float] = []
    /// Shared memory with a coordinator on this host: its weights segment (read) and ours
    /// (gradients, written). Used while the coordinator sends weights through its segment.
    var weightsSegment: SharedSegment?
    var batchSegment: SharedSegment?
    var gradientSegment: SharedSegment?
    var sharedActive = false
    /// Pipes to and from a coordinator on this host; `pipesActive` once it wrote to us
    /// through ours, which says it opened both.
    var fromCoordinator: PipeChannel?
    var toCoordinator: PipeChannel?
    var pipesActive = false
    var sharedScratch: [UInt8] = []
    /// Results sent for `resultStep`: each takes the next slot of our segment.
    var resultStep: UInt64 = .max
    var resultsInStep = 0
    /// When the last result went out, while no task is computing since; nil otherwise.
    var resultSentAt: Double?
    public internal(set) var tasksDone = 0
    /// Tasks whose samples this worker gathered from its own training set (index tasks).
    public internal(set) var tasksGathered = 0
    public private(set) var rejectedMessages = 0
    /// The challenge nonce the current hello proves the secret for (nil: none yet).
    var answeredNonce: [UInt8]?
    /// Labels of the task being computed, copied out of the message or the coordinator's
    /// segment and checked against the class count before the loss indexes with them.
    var labelBuffer = SharedBuffer(byteCount: 0)
    /// The digest of `options.trainingSet` that hellos carry (nil: no training set).
    let dataDigest: [UInt8]?
    /// This worker's server of a parameter range (`worker --serve`), nil when it does not
    /// serve, and until its first welcome: it binds once the model, and so the largest
    /// message a peer may send it, is known (`WorkerSession.swift`).
    public internal(set) var parameterServer: ParameterServer?
    /// With a server: the ZAP handler that bounds its connections without the proof.
    var serverGate: ServerGate?
    /// Links to the parameter servers of the coordinator's last map (none: weights and
    /// results go through the coordinator).
    var serverLinks: [ServerLink] = []
    var serviceGeneration: UInt32?
    /// This worker's index in the run (from the welcome), for the servers' receipts.
    var workerIndex = 0
    /// With `--processes K` (K > 1): the processes that compute for this host, and the
    /// checked tasks waiting to go to them as blocks (`WorkerHostTasks.swift`).
    var host: HostCompute?
    var hostTasks: [ValidatedTask] = []
    /// When the last of `hostTasks` arrived: the rest of a block comes right behind it.
    var lastHostTaskAt = 0.0
    /// Heartbeats sent upstream while the host's processes computed (`keepUpstreamAlive`).
    public internal(set) var heartbeatsWhileComputing = 0

    public init(options: WorkerOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
        dataDigest = options.trainingSet?.contentSHA256
        context = try ZMQContext()
        socket = try ZMQSocket(context: context, type: .dealer)
        if let serverKey = options.curveServerKey, let secretKey = options.curveSecretKey {
            try socket.makeCurveClient(serverKey: serverKey, publicKey: CurveKeys.publicKey(forSecret: secretKey),
                                       secretKey: secretKey)
        }
        // Queue nothing onto a connection that is not up: hellos go out only once it is.
        try socket.setImmediate(true)
        try socket.setMaximumMessageSize(bytes: WireProtocol.maximumMessageBytes)
        try socket.setReceiveHighWaterMark(64)
        // A result per shard, and a server's receipt per shard and step, small but many: room
        // for every shard of two steps at the protocol's most, so that a coordinator that reads
        // late is refused none (a result refused here would be lost without a word).
        try socket.setSendHighWaterMark(CoordinatorServer.sendQueueMessages(shardCount: ParameterServiceLimits.maximumShards))
        // Room in the kernel for a whole weights or gradient message (hundreds of KB).
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        try socket.connect(options.endpoint)
    }

    /// Serves the coordinator until it ends the run (or is gone); throws `WorkerFailure`
    /// when this worker itself fails.
    public func run() throws -> WorkerExit {
        defer {
            host?.stop(reason: "the host's agent ended")
            serverGate?.stop()
        }
        if let exit = try connect() { return exit }
        while true {
            if let parent = options.parentPID, getppid() != parent { return .parentExited }
            pollForNextMessage()
            let waitsForQueue = host != nil || parameterServer?.hasOutbox == true
            let ready = try waitForMessages(timeoutMilliseconds: waitsForQueue ? 20 : Int(heartbeatSeconds * 1000))
            if !ready.descriptors.isEmpty, let exit = try readPipe() { return exit }
            if ready.socket, let exit = try readSocket() { return exit }
            try runHostTasks()
            let now = MonotonicClock.now
            if now - lastHeard > options.coordinatorTimeoutSeconds {
                // Gone, restarting, or only cut off: say hello again, so that this worker
                // rejoins whichever coordinator answers at this endpoint.
                logger.notice("\(String(format: "no word from the coordinator for %.0f s", now - lastHeard)); saying hello again for up to \(Int(options.connectTimeoutSeconds)) s")
                if let exit = try connect(rejoining: true) { return exit }
                continue
            }
            if now - lastSent > heartbeatSeconds { try send(Heartbeat.encode(), what: "a heartbeat") }
        }
    }

    /// Handles every message waiting on the socket.
    private func readSocket() throws -> WorkerExit? {
        while let frames = try WorkerFailure.during("receiving from the coordinator's socket", {
            try socket.receive(timeoutMilliseconds: 0)
        }) {
            lastHeard = MonotonicClock.now
            if let exit = try handle(frames) { return exit }
        }
        return nil
    }

    /// Counts a message from the coordinator that was refused; logs the first, naming the
    /// coordinator, with the reason escaped.
    func noteRejected(_ error: Error) {
        rejectedMessages += 1
        if rejectedMessages == 1 {
            logger.warning("ignored a malformed message from the coordinator at \(escapedForLog(options.endpoint)): \(escapedForLog("\(error)", maximumLength: 400)) (further ones are counted, not logged)")
        }
    }
}
