import Foundation
import Logging
import NeuralNet
import Wire

public struct WorkerOptions: Sendable {
    public var endpoint = "tcp://127.0.0.1:5555"
    public var name = "worker"
    /// The model this worker was started for; nil takes whatever the coordinator trains.
    public var expectedSpec: ModelSpec?
    /// How long to keep trying to reach a coordinator that is not up yet, or back.
    public var connectTimeoutSeconds = 120.0
    /// Silence from the coordinator after which the worker says hello again (for up to
    /// `connectTimeoutSeconds`), to rejoin it once its link is back, or a new one.
    public var coordinatorTimeoutSeconds = 10.0
    /// Exit as soon as this process (the coordinator that spawned us) is gone.
    public var parentPID: Int32?
    /// CURVE: the coordinator's public key and this worker's secret key.
    public var curveServerKey: String?
    public var curveSecretKey: String?
    /// Move weights and gradients through shared memory when the coordinator shares this host.
    public var sharedMemory = true
    /// The CPU this worker pinned itself to (`worker --cpu`), told to a coordinator on this host.
    public var pinnedCPU: Int?
    /// After a result goes to a coordinator on this host, how long a worker pinned to a CPU
    /// polls for its next message (at idle priority) before sleeping; 0 sleeps at once. See
    /// `pollForNextMessage`.
    public var busyWaitSeconds = 0.001
    /// The run secret to prove in hellos, or the file to read it from when the coordinator
    /// asks (read then, not at start: the coordinator writes it once it is up).
    public var runSecret: RunSecret?
    public var runSecretPath: String?

    public init() {}
}

/// How a worker's run ended.
public enum WorkerExit: Equatable, CustomStringConvertible {
    case shutdown(reason: String)
    case rejected(reason: String)
    case coordinatorLost(seconds: Double)
    case neverConnected(seconds: Double)
    case parentExited
    case noRunSecret(reason: String)

    public var description: String {
        switch self {
        case let .shutdown(reason): "coordinator said shut down: \(escapedForLog(reason))"
        case let .rejected(reason): "coordinator refused this worker: \(escapedForLog(reason))"
        case let .noRunSecret(reason): "cannot prove this run's secret: \(reason)"
        case let .coordinatorLost(seconds): String(format: "no word from the coordinator for %.0f s; it is gone", seconds)
        case let .neverConnected(seconds): String(format: "no coordinator answered within %.0f s", seconds)
        case .parentExited: "the coordinator that started this worker has exited"
        }
    }

    public var isSuccess: Bool { if case .shutdown = self { true } else { false } }
}

/// A worker: keeps a model replica, and for every task runs forward and backward on the
/// shard with the weights of the task's step, and returns the gradient sum.
public final class WorkerNode {
    public let options: WorkerOptions
    private let logger: Logger
    private let context: ZMQContext
    private let socket: ZMQSocket
    private var model: Sequential?
    private var weightsStep: UInt64?
    /// Outgoing gradient buffers, sized for the model and precision of the last welcome.
    private var gradientPool = SharedBufferPool(byteCount: 0)
    /// Tasks sent ahead of their step's weights, oldest first.
    private var waitingTasks: [Envelope] = []
    /// The first waiting task's input, scaled in the model's workspace while that step's
    /// weights are still on their way (the coordinator is summing gradients then).
    private var preparedInput: (step: UInt64, shard: UInt32, input: UnsafePointer<Float>)?
    private static let maximumWaitingTasks = 64
    private var lastHeard = 0.0
    private var lastSent = 0.0
    private var heartbeatSeconds = 1.0
    private var precision = WirePrecision.fp32
    /// fp32 gradient scratch for 16-bit wire precisions (fp32 computes straight into the
    /// outgoing buffer).
    private var gradientScratch: [Float] = []
    /// Shared memory with a coordinator on this host: its weights segment (read) and ours
    /// (gradients, written). Used while the coordinator sends weights through its segment.
    private var weightsSegment: SharedSegment?
    private var batchSegment: SharedSegment?
    private var gradientSegment: SharedSegment?
    private var sharedActive = false
    /// Pipes to and from a coordinator on this host; `pipesActive` once it wrote to us
    /// through ours, which says it opened both.
    private var fromCoordinator: PipeChannel?
    private var toCoordinator: PipeChannel?
    private var pipesActive = false
    private var sharedScratch: [UInt8] = []
    /// Results sent for `resultStep`: each takes the next slot of our segment.
    private var resultStep: UInt64 = .max
    private var resultsInStep = 0
    /// When the last result went out, while no task is computing since; nil otherwise.
    private var resultSentAt: Double?
    public private(set) var tasksDone = 0
    public private(set) var rejectedMessages = 0
    /// The challenge nonce the current hello proves the secret for (nil: none yet).
    private var answeredNonce: [UInt8]?
    /// Labels of the task being computed, copied out of the message or the coordinator's
    /// segment and checked against the class count before the loss indexes with them.
    private var labelBuffer = SharedBuffer(byteCount: 0)

    public init(options: WorkerOptions, logger: Logger) throws {
        self.options = options
        self.logger = logger
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
        try socket.setSendHighWaterMark(64)
        // Room in the kernel for a whole weights or gradient message (hundreds of KB).
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        try socket.connect(options.endpoint)
    }

    public func run() throws -> WorkerExit {
        if let exit = try connect() { return exit }
        while true {
            if let parent = options.parentPID, getppid() != parent { return .parentExited }
            pollForNextMessage()
            let ready = try socket.waitForInput(timeoutMilliseconds: Int(heartbeatSeconds * 1000),
                                                alsoWatching: fromCoordinator.map { [$0.descriptor] } ?? [])
            if !ready.descriptors.isEmpty, let pipe = fromCoordinator {
                for frames in pipe.receive() {
                    lastHeard = MonotonicClock.now
                    pipesActive = true
                    if let exit = try handle(frames) { return exit }
                }
                if pipe !== fromCoordinator {
                    // A message made us join again, with new pipes: this one is history.
                } else if let failure = pipe.failure {
                    noteRejected("\(failure)")
                    dropPipes()  // its framing is lost; the socket still works
                } else if pipe.isClosed {
                    // The coordinator exited (or dropped the pipe). Back to the socket, where a
                    // restarted coordinator will hear our heartbeats and ask us to say hello.
                    logger.notice("the coordinator closed its pipe; waiting on the socket")
                    dropPipes()
                }
            }
            if ready.socket {
                while let frames = try socket.receive(timeoutMilliseconds: 0) {
                    lastHeard = MonotonicClock.now
                    if let exit = try handle(frames) { return exit }
                }
            }
            let now = MonotonicClock.now
            if now - lastHeard > options.coordinatorTimeoutSeconds {
                // Gone, restarting, or only cut off: say hello again, so that this worker
                // rejoins whichever coordinator answers at this endpoint.
                logger.notice("\(String(format: "no word from the coordinator for %.0f s", now - lastHeard)); saying hello again for up to \(Int(options.connectTimeoutSeconds)) s")
                if let exit = try connect(rejoining: true) { return exit }
                continue
            }
            if now - lastSent > heartbeatSeconds { try send(Heartbeat.encode()) }
        }
    }

    /// Once a result has gone to a coordinator on this host, the next step's weights follow
    /// within a fraction of a millisecond (the other workers' results, the sum and the
    /// optimizer step). Sleeping for them costs more on a virtual machine: the CPU halts,
    /// and waking a halted virtual CPU took 40–90 µs, sometimes milliseconds, on the
    /// development machine, against under 10 µs for a thread that polls. So poll, for at
    /// most `busyWaitSeconds`, in the idle scheduling class: the coordinator, woken on this
    /// CPU, or anything else there runs at once, and the CPU counts as idle where the
    /// kernel places woken threads. Step messages come through the pipe; whatever comes on
    /// the socket meanwhile (a heartbeat, a shutdown) waits at most that long.
    ///
    /// Only a worker pinned to a CPU does this (spawned workers are, when there are no more
    /// of them than CPUs): an idle-class thread that shares its CPU with a busy one hardly
    /// runs, so it could see its weights late, where a sleeping one is woken as an equal.
    private func pollForNextMessage() {
        guard options.pinnedCPU != nil, let since = resultSentAt, pipesActive, let pipe = fromCoordinator else { return }
        let deadline = since + options.busyWaitSeconds
        guard MonotonicClock.now < deadline else { return }
        // Yielding at each turn hands the CPU at once to the coordinator when it polls here
        // too, for the last results of a step.
        CPUAffinity.poll(until: deadline) { pipe.hasInput }
    }

    private func dropPipes() {
        fromCoordinator = nil
        toCoordinator = nil
        pipesActive = false
    }

    /// Says hello until the coordinator answers, for up to `connectTimeoutSeconds`; nil once
    /// welcomed. `rejoining`: after the coordinator fell silent, so giving up means it is lost.
    private func connect(rejoining: Bool = false) throws -> WorkerExit? {
        let start = MonotonicClock.now
        var hello = Hello(pid: UInt32(getpid()), name: options.name)
        if let spec = options.expectedSpec { hello.modelHash = ModelSpecCoding.hash(spec) }
        answeredNonce = nil  // a coordinator that asks us to say hello again may be a new one
        var lastHello = -Double.infinity
        var notified = false
        while true {
            let now = MonotonicClock.now
            if let parent = options.parentPID, getppid() != parent { return .parentExited }
            if now - start > options.connectTimeoutSeconds {
                return rejoining ? .coordinatorLost(seconds: now - lastHeard) : .neverConnected(seconds: now - start)
            }
            // Until a hello got out, try at every poll; then repeat it every 2 s in case the
            // coordinator restarted in between.
            if now - lastHello >= 2 {
                // Fails (returns false) while the connection is not up, thanks to ZMQ_IMMEDIATE.
                if try socket.send(hello.encode(), dontWait: true) {
                    lastSent = now
                    lastHello = now
                }
            }
            if !notified && now - start > 2 {
                logger.notice("waiting for the coordinator at \(options.endpoint)")
                notified = true
            }
            guard let frames = try socket.receive(timeoutMilliseconds: 50) else { continue }
            do {
                let envelope = try Envelope(frames: frames[...])
                switch envelope.type {
                case .welcome:
                    let welcome = try Welcome(envelope)
                    // A new session, with a model that holds no weights yet: nothing of the
                    // last one may be computed with it, not even a task of the step whose
                    // weights the last session had. Tasks wait for this session's weights.
                    model = Sequential(spec: welcome.spec, parameters: Array(repeating: 0, count: welcome.spec.parameterCount))
                    weightsStep = nil
                    waitingTasks = []
                    preparedInput = nil
                    resultStep = .max
                    model?.dropout = welcome.dropout
                    heartbeatSeconds = max(0.05, Double(welcome.heartbeatMilliseconds) / 1000)
                    precision = welcome.precision
                    if precision != .fp32 { gradientScratch = Array(repeating: 0, count: welcome.spec.parameterCount) }
                    gradientPool = SharedBufferPool(byteCount: welcome.spec.parameterCount * precision.bytesPerValue)
                    lastHeard = MonotonicClock.now
                    logger.info("joined as worker \(welcome.workerIndex) for \(welcome.spec) at \(options.endpoint)")
                    try attachSharedMemory(welcome)
                    return nil
                case .challenge:
                    let nonce = try Challenge(envelope).nonce
                    // Asked again for the nonce we proved: our secret is not this run's.
                    if nonce == answeredNonce {
                        return .rejected(reason: "the hello's proof does not match this run's secret (a secret file of another run?)")
                    }
                    let secret: RunSecret
                    do { secret = try loadRunSecret() } catch { return .noRunSecret(reason: "\(error)") }
                    hello.proof = secret.proof(nonce: nonce, pid: hello.pid, name: hello.name)
                    answeredNonce = nonce
                    lastHello = -.infinity  // answer at once
                case .reject:
                    return .rejected(reason: try Notice(envelope).reason)
                case .shutdown:
                    return .shutdown(reason: try Notice(envelope).reason)
                default:
                    continue  // left over from an earlier session of this coordinator
                }
            } catch {
                noteRejected("\(error)")
            }
        }
    }

    private func loadRunSecret() throws -> RunSecret {
        if let secret = options.runSecret { return secret }
        guard let path = options.runSecretPath else {
            throw RunSecretError.io(path: "(none)", reason: "no secret given; start the worker with --secret-file PATH (the file `coordinator --secret-file PATH` writes)")
        }
        return try RunSecret.read(from: path)
    }

    private func handle(_ frames: [ZMQMessage]) throws -> WorkerExit? {
        do {
            let envelope = try Envelope(frames: frames[...])
            switch envelope.type {
            case .weights:
                guard let model else { return nil }
                let slot: Int?
                if let weightsSegment, case let (.fp32, shared?) = try WeightsMessage.header(envelope, expectedCount: model.spec.parameterCount) {
                    // fp32 weights in the coordinator's segment: compute straight from its
                    // read-only mapping, no copy. The coordinator writes the other parity's
                    // slot next, never this one while this step runs.
                    model.parameterSource = try weightsSegment.mappedSlot(shared).assumingMemoryBound(to: Float.self)
                    slot = shared
                } else {
                    model.parameterSource = nil
                    slot = try model.parameters.withUnsafeMutableBufferPointer { parameters in
                        try WeightsMessage.decode(envelope, expectedCount: parameters.count, into: parameters.baseAddress!,
                                                  shared: weightsSegment, scratch: &sharedScratch)
                    }
                }
                // The coordinator sends weights through memory once it has our segment, which
                // it has open then: nobody needs its name any more.
                sharedActive = slot != nil && gradientSegment != nil
                if sharedActive { gradientSegment?.unlinkName() }
                weightsStep = envelope.step
                // Tasks that came ahead of these weights can run now; older ones never will.
                let ready = waitingTasks.filter { $0.step == envelope.step }
                waitingTasks.removeAll { $0.step <= envelope.step }
                for task in ready { try compute(task) }
            case .task:
                if let weightsStep, envelope.step == weightsStep {
                    try compute(envelope)
                } else if weightsStep.map({ envelope.step > $0 }) ?? true {
                    waitingTasks.append(envelope)
                    if waitingTasks.count > Self.maximumWaitingTasks { waitingTasks.removeFirst() }
                    if waitingTasks.count == 1 { prepareInput(of: envelope) }
                }
            case .shutdown:
                return .shutdown(reason: try Notice(envelope).reason)
            case .reject:
                let reason = try Notice(envelope).reason
                guard reason == WireProtocol.unknownWorkerReason else { return .rejected(reason: reason) }
                logger.notice("the coordinator does not know this worker (it restarted?); joining again")
                if let exit = try connect(rejoining: true) { return exit }
            case .heartbeat, .welcome, .challenge:
                break
            case .hello, .result, .attach:
                throw ProtocolError.unexpected(envelope.type)
            }
        } catch {
            noteRejected("\(error)")
        }
        return nil
    }

    private func compute(_ envelope: Envelope) throws {
        guard let model else { return }
        let start = MonotonicClock.now
        resultSentAt = nil
        let (task, samples) = try TaskHeader.decode(envelope, featureCount: model.spec.inputSize,
                                                    maximumSamples: WireLimits.maximumSamples(for: model.spec))
        let rows = Int(task.sampleCount)
        let count = model.spec.parameterCount
        try copyLabels(of: samples, rows: rows, classes: model.spec.layers[model.spec.layers.count - 1].outputSize)
        let dropoutKey = Dropout.key(step: envelope.step, shard: task.shard)
        if resultStep != envelope.step {
            resultStep = envelope.step
            resultsInStep = 0
        }
        // This step's n-th result goes to slot n of our segment; the coordinator reads it when
        // the result message arrives, before it sends the next step's weights. Beyond the
        // slots, and whenever the coordinator sends weights by socket, the socket carries it.
        var sharedSlot: Int?
        if sharedActive, let segment = gradientSegment, resultsInStep < segment.info.slotCount { sharedSlot = resultsInStep }
        resultsInStep += 1
        let gradient = sharedSlot == nil ? gradientPool.take() : nil
        let output = sharedSlot.map { gradientSegment!.slot($0) } ?? gradient!.pointer
        let prepared = preparedInput.flatMap { $0.step == envelope.step && $0.shard == task.shard ? $0.input : nil }
        preparedInput = nil  // the workspace is this task's now
        let statistics = try withSamples(samples, byteCount: task.sampleBytes) { raw in
            let labels = UnsafePointer(labelBuffer.pointer.assumingMemoryBound(to: UInt8.self))
            let input = prepared ?? model.scaleInput(pixels: raw.assumingMemoryBound(to: UInt8.self) + rows, rows: rows)
            if precision == .fp32 {
                return model.computeGradientSum(input: input, labels: labels, rows: rows,
                                                gradient: output.bindMemory(to: Float.self, capacity: count),
                                                dropoutKey: dropoutKey)
            }
            return gradientScratch.withUnsafeMutableBufferPointer { scratch in
                let statistics = model.computeGradientSum(input: input, labels: labels, rows: rows,
                                                          gradient: scratch.baseAddress!, dropoutKey: dropoutKey)
                precision.encode(scratch.baseAddress!, count: count, into: output)
                return statistics
            }
        }
        let result = ResultHeader(shard: task.shard, sampleCount: task.sampleCount, lossSum: statistics.lossSum,
                                  correctCount: UInt32(statistics.correctCount),
                                  parameterCount: UInt32(count), precision: precision,
                                  computeMicroseconds: UInt64(min((MonotonicClock.now - start) * 1e6,
                                                                  Double(WireLimits.computeMicroseconds.upperBound))),
                                  sharedSlot: sharedSlot)
        if let gradient {
            try send(result.encode(step: envelope.step, gradient: gradient))
        } else {
            try send(result.encodeShared(step: envelope.step))
        }
        resultSentAt = MonotonicClock.now
        tasksDone += 1
    }

    /// Copies a task's labels out of its frame or the coordinator's segment (which could
    /// change under us) and checks each against the class count: the loss indexes with them.
    private func copyLabels(of samples: TaskHeader.Samples, rows: Int, classes: Int) throws {
        if labelBuffer.byteCount < rows { labelBuffer = SharedBuffer(byteCount: rows) }
        try withSamples(samples, byteCount: rows) { labelBuffer.pointer.copyMemory(from: $0, byteCount: rows) }
        let labels = UnsafeBufferPointer(start: labelBuffer.pointer.assumingMemoryBound(to: UInt8.self), count: rows)
        if let bad = labels.first(where: { Int($0) >= classes }) {
            throw ProtocolError.malformed(.task, "label \(bad), but the model has \(classes) classes")
        }
    }

    /// Scales a task's pixels into the model's workspace ahead of its weights; a task that
    /// does not decode is left for `compute` to refuse.
    private func prepareInput(of envelope: Envelope) {
        guard let model, let (task, samples) = try? TaskHeader.decode(envelope, featureCount: model.spec.inputSize,
                                                                      maximumSamples: WireLimits.maximumSamples(for: model.spec)) else { return }
        let rows = Int(task.sampleCount)
        preparedInput = try? withSamples(samples, byteCount: task.sampleBytes) { raw in
            (envelope.step, task.shard, model.scaleInput(pixels: raw.assumingMemoryBound(to: UInt8.self) + rows, rows: rows))
        }
    }

    /// Runs `body` on a task's samples, in its data frame or in the coordinator's batch slot.
    private func withSamples<R>(_ samples: TaskHeader.Samples, byteCount: Int, _ body: (UnsafeRawPointer) -> R) throws -> R {
        switch samples {
        case let .frame(frame):
            return frame.withUnsafeBytes { body($0.baseAddress!) }
        case let .shared(slot, offset):
            guard let batchSegment else { throw ProtocolError.malformed(.task, "samples in shared slot \(slot), but no batch segment is open") }
            return body(try batchSegment.mapped(slot: slot, offset: offset, byteCount: byteCount))
        }
    }

    /// On the coordinator's host (its segment opens and carries the announced nonce), makes
    /// our own gradient segment and offers it. Elsewhere everything stays on the socket.
    private func attachSharedMemory(_ welcome: Welcome) throws {
        weightsSegment = nil
        batchSegment = nil
        gradientSegment = nil
        sharedActive = false
        dropPipes()
        guard options.sharedMemory, let offered = welcome.sharedWeights else { return }
        do {
            let weights = try SharedSegment(opening: offered)
            let batches = try welcome.sharedBatches.map(SharedSegment.init(opening:))
            try weights.mapInAdvance()
            try batches?.mapInAdvance()
            // Sealed: the coordinator can then read our gradients in place, without a copy.
            let own = try SharedSegment(slotCount: 4, slotBytes: welcome.spec.parameterCount * welcome.precision.bytesPerValue,
                                        sealed: true)
            // Pipes are an extra: without them the step messages take the socket.
            let pipes = try? (toWorker: PipeChannel(forWriting: false), toCoordinator: PipeChannel(forWriting: true))
            try send(AttachMessage(segment: own.info, toWorkerPipe: pipes?.toWorker.path ?? "",
                                   toCoordinatorPipe: pipes?.toCoordinator.path ?? "", cpu: options.pinnedCPU).encode())
            // Only once all of it is open and offered: a failure leaves nothing half set.
            (weightsSegment, batchSegment, gradientSegment) = (weights, batches, own)
            (fromCoordinator, toCoordinator) = (pipes?.toWorker, pipes?.toCoordinator)
            logger.info("sharing memory with the coordinator on this host")
        } catch {
            logger.info("no shared memory with the coordinator (\(error)); using the socket only")
        }
    }

    /// Through our pipe once the coordinator uses it (and the message fits), else the socket.
    private func send(_ frames: [OutgoingFrame]) throws {
        if pipesActive, let pipe = toCoordinator {
            do {
                if try pipe.send(frames) {
                    lastSent = MonotonicClock.now
                    return
                }
            } catch {
                logger.warning("the pipe to the coordinator failed (\(error)); using the socket")
                dropPipes()
            }
        }
        if try socket.send(frames, dontWait: true) {
            lastSent = MonotonicClock.now
        }
    }

    private func noteRejected(_ reason: String) {
        rejectedMessages += 1
        if rejectedMessages == 1 {
            logger.warning("ignored a malformed message from the coordinator at \(escapedForLog(options.endpoint)): \(escapedForLog(reason, maximumLength: 400)) (further ones are counted, not logged)")
        }
    }
}
