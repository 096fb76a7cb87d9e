import Foundation
import Logging
import NeuralNet
import Wire

public struct CoordinatorOptions: Sendable {
    /// ZeroMQ endpoint to bind, e.g. `tcp://127.0.0.1:5555` (`*` as port picks a free one).
    public var bindEndpoint = "tcp://127.0.0.1:5555"
    /// Workers to wait for before the first step.
    public var expectedWorkers = 1
    /// Fewer live workers than this and the coordinator pauses until more join.
    public var minimumWorkers = 1
    /// A worker silent this long while it holds shards is declared lost.
    public var workerTimeoutSeconds = 5.0
    public var heartbeatSeconds = 1.0
    /// How long to wait for `expectedWorkers` at start-up.
    public var startupTimeoutSeconds = 120.0
    /// Precision of weights and gradients on the wire.
    public var precision = WirePrecision.fp32
    /// The run's dropout, which the workers must apply exactly as `--local` would.
    public var dropout: Dropout?
    /// Offer workers on this host a shared-memory path for weights and gradients; the
    /// socket still carries every message, only the bulk values move through memory.
    public var sharedMemory = true
    /// While workers on this host finish a step, how long to poll for their results on the
    /// CPU the first one freed before sleeping (see `sendNextBatchAheadAndAwaitTheRest`).
    public var busyWaitSeconds = 0.001
    /// The largest batch, in samples: sizes the shared batch slots (0: no batch segment, the
    /// samples travel in the tasks even on this host).
    public var batchSlotSamples = 0
    /// CURVE: this coordinator's secret key and the public keys of the workers it admits.
    /// Without them, traffic is plain text and anyone who reaches the port may join.
    public var curveSecretKey: String?
    public var authorizedKeys: Set<String> = []
    /// The secret every hello must prove: fresh for each run unless set (hand it to the
    /// workers, see `RunSecret`).
    public var runSecret = RunSecret.generate()

    public init() {}
}

public enum CoordinatorError: Error, CustomStringConvertible {
    case workersDidNotArrive(expected: Int, arrived: Int, seconds: Double)

    public var description: String {
        switch self {
        case let .workersDidNotArrive(expected, arrived, seconds):
            "only \(arrived) of \(expected) workers connected within \(Int(seconds)) s; start workers with `worker --connect ENDPOINT`, or raise --startup-timeout"
        }
    }
}

/// The coordinator's side of the wire: a ROUTER socket that admits workers, hands them each
/// step's weights and shards, and collects their gradient sums. As a `ShardGradientSource`
/// it plugs into the same `Trainer` as the local source.
///
/// Every incoming message is decoded and checked before anything is believed; a message
/// that fails is counted, logged once per peer, and dropped.
public final class CoordinatorServer: ShardGradientSource {
    public let options: CoordinatorOptions
    public let spec: ModelSpec
    public var precision: WirePrecision { options.precision }
    let modelHash: [UInt8]
    let logger: Logger
    private let context: ZMQContext
    let socket: ZMQSocket
    var peers: [[UInt8]: WorkerPeer] = [:]
    var nextWorkerIndex = 0
    private let weightsPool: SharedBufferPool
    /// Two slots of weights, by step parity, for workers on this host.
    let weightsSegment: SharedSegment?
    /// Two slots of batches (labels and pixels), by step parity, and the step each holds.
    let batchSegment: SharedSegment?
    private var batchSlotSteps = [-1, -1]
    /// The batch slots as buffers the trainer builds batches in (no copy for local workers).
    private var batchSlotBuffers: [SharedBuffer] = []
    /// The step whose weights are in the weights slot of its parity.
    private var weightsSlotStep = -1
    /// The CPUs this process may use, counted once.
    private let cpuCount = CPUAffinity.allowedCount
    /// Scratch for decoding 16-bit values read from shared memory.
    var sharedScratch: [UInt8] = []
    private var authenticator: ZAPAuthenticator?
    var loggedPeers: Set<[UInt8]> = []
    /// What a hello proves the run secret for: fresh at every start, so that a hello from
    /// another run, or from before a restart, proves nothing.
    let runNonce: [UInt8] = (0..<Challenge.nonceBytes).map { _ in UInt8.random(in: 0...255) }

    public internal(set) var timing = StepTiming()
    public internal(set) var counters = NetworkCounters()

    // The step in progress.
    var currentStep = -1
    var currentBatch: BatchView?
    var currentResults: ShardResults?
    private var currentWeights: SharedBuffer?
    /// Who sent each shard's accepted result, by shard.
    var resultSenders: [[UInt8]?] = []
    weak var currentModel: Sequential?

    public init(options: CoordinatorOptions, spec: ModelSpec, logger: Logger) throws {
        self.options = options
        self.spec = spec
        self.modelHash = ModelSpecCoding.hash(spec)
        self.weightsPool = SharedBufferPool(byteCount: spec.parameterCount * options.precision.bytesPerValue)
        self.logger = logger
        var segments: (weights: SharedSegment, batches: SharedSegment?)?
        if options.sharedMemory {
            do {
                segments = (try SharedSegment(slotCount: 2, slotBytes: spec.parameterCount * options.precision.bytesPerValue),
                            options.batchSlotSamples > 0
                                ? try SharedSegment(slotCount: 2, slotBytes: options.batchSlotSamples * (spec.inputSize + 1)) : nil)
            } catch {
                logger.notice("no shared memory for local workers (\(error)); everything goes through the socket")
            }
        }
        weightsSegment = segments?.weights
        batchSegment = segments?.batches
        if let batches = segments?.batches {
            batchSlotBuffers = (0..<2).map { SharedBuffer(borrowing: batches.slot($0), byteCount: batches.info.slotBytes, owner: batches) }
        }
        context = try ZMQContext()
        // libzmq numbers the peers that give no routing id of their own from a counter that
        // starts at rand(), which nobody seeds: the same ids in every run, which a peer could
        // claim ahead with explicit ids and so make the next join abort this process inside
        // libzmq (an assertion on the duplicate). Seeded from the system's generator, the
        // next id is a secret 32-bit number instead.
        UnpredictableRoutingIDs.seed()
        socket = try ZMQSocket(context: context, type: .router)
        try socket.setRouterMandatory(true)
        if let secretKey = options.curveSecretKey {
            let log = logger
            let refused = RefusalLog()
            authenticator = try ZAPAuthenticator(context: context, allowedKeys: options.authorizedKeys) { address, key in
                // A refused client reconnects again and again: say it once per key.
                if refused.isFirst(key) { log.warning("refused a CURVE client at \(address): key \(key) is not authorised") }
            }
            try socket.makeCurveServer(secretKey: secretKey, zapDomain: Self.zapDomain)
        } else {
            // A ZAP domain makes libzmq refuse ZMTP 1.0 and 2.0 peers at the handshake (no
            // handler is needed for plain text). Their path into the ROUTER pushes the peer's
            // routing-id message under an assertion that fails when the socket is closing
            // (zmtp_engine.cpp, process_routing_id_msg): raw TCP garbage whose first byte is
            // not 0xFF took that path and aborted the coordinator at exit. Workers speak ZMTP 3.
            try socket.setZAPDomain(Self.zapDomain)
        }
        // A result is the largest thing a worker sends; nothing bigger is accepted.
        try socket.setMaximumMessageSize(bytes: spec.parameterCount * options.precision.bytesPerValue + 4096)
        try socket.setSendHighWaterMark(64)
        try socket.setReceiveHighWaterMark(256)
        // Room in the kernel for a whole weights or gradient message (hundreds of KB).
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        try socket.bind(options.bindEndpoint)
    }

    static let zapDomain = "zmq-trainer"

    deinit { authenticator?.stop() }

    /// The bound endpoint, with the port filled in.
    public var endpoint: String { socket.lastEndpoint }

    public var liveWorkerCount: Int { peers.values.filter(\.isAlive).count }

    private var livePeers: [WorkerPeer] { peers.values.filter(\.isAlive).sorted { $0.index < $1.index } }

    /// By name, numbers in names in numeric order (worker-2 before worker-10), then by the
    /// order they joined: spawned workers join in any order, and a table reads better sorted.
    public var workerSummaries: [WorkerSummary] {
        peers.values.sorted {
            switch $0.name.localizedStandardCompare($1.name) {
            case .orderedAscending: true
            case .orderedDescending: false
            case .orderedSame: $0.index < $1.index
            }
        }.map(\.summary)
    }

    // MARK: Membership

    /// Serves hellos until `count` workers are live.
    public func waitForWorkers(count: Int, timeoutSeconds: Double? = nil) throws {
        let start = MonotonicClock.now
        var lastNotice = start
        while liveWorkerCount < count {
            let now = MonotonicClock.now
            if let timeoutSeconds, now - start > timeoutSeconds {
                throw CoordinatorError.workersDidNotArrive(expected: count, arrived: liveWorkerCount, seconds: timeoutSeconds)
            }
            if now - lastNotice >= 5 {
                logger.notice("waiting for workers: \(liveWorkerCount) of \(count) connected on \(endpoint)")
                lastNotice = now
            }
            try pump(timeoutMilliseconds: 100)
            reviveSuspects(toReach: count)
            // Those already here hear from us while they wait: a worker that joined first
            // would otherwise take the silence for a coordinator that is gone.
            checkPeers()
        }
    }

    /// A worker that sat on its shards past the deadline gets no work while others can do
    /// it. With too few others to train at all, those still talking get another chance: a
    /// coordinator that was stopped for a while, or a host that stalled, makes every worker
    /// miss its deadline at once, and none of them would ever answer a shard it never gets.
    private func reviveSuspects(toReach count: Int) {
        let now = MonotonicClock.now
        for peer in peers.values.sorted(by: { $0.index < $1.index })
        where liveWorkerCount < count && !peer.isAlive && peer.missedDeadline
            && now - peer.lastHeard < options.workerTimeoutSeconds {
            peer.isAlive = true
            peer.timesRejoined += 1
            logger.notice("worker \(peer.name) gets another chance after its missed deadline: too few other workers are live")
        }
    }

    /// Tells every worker to stop, and gives the messages a moment to leave. Lost workers
    /// too: one declared lost may still run (it hung for a while, or its link was cut), and
    /// should stop now rather than wait out its timeout for a coordinator that is gone.
    public func shutdownWorkers(reason: String) {
        for peer in peers.values.sorted(by: { $0.index < $1.index }) {
            let notice = Notice(reason: reason).encode(.shutdown)
            if peer.isAlive {
                send(notice, to: peer)
            } else if let pipe = peer.toWorker, (try? pipe.send(notice)) == true {
                // A pipe keeps it for a worker that is stopped, in order after what came before.
            } else {
                sendRaw(notice, to: peer.identity)
            }
        }
        try? socket.setLinger(milliseconds: 1000)
    }

    // MARK: One step

    public func computeShards(step: Int, model: Sequential, batch: BatchView, next: () -> BatchView?,
                              results: ShardResults) throws {
        var mark = MonotonicClock.now
        currentStep = step
        currentBatch = batch
        currentResults = results
        currentModel = model
        results.reset()
        if resultSenders.count != results.shardCount { resultSenders = Array(repeating: nil, count: results.shardCount) }
        for peer in peers.values {
            peer.outstanding = []
            peer.stepComputeSeconds = 0
            peer.tasksThisStep.removeAll(keepingCapacity: true)
            if peer.prefetchedStep == step { peer.tasksThisStep.formUnion(peer.prefetched) }
        }

        defer { currentWeights = nil; currentBatch = nil; currentResults = nil }

        var pending: [Int] = []
        for shard in 0..<results.shardCount {
            if batch.sampleCount(ofShard: shard) == 0 {
                results.gradient(shard).update(repeating: 0, count: results.parameterCount)
                results.complete(shard, statistics: BatchStatistics())
            } else {
                pending.append(shard)
            }
        }
        if liveWorkerCount < options.minimumWorkers {
            logger.warning("only \(liveWorkerCount) live workers, fewer than \(options.minimumWorkers); waiting for more to join")
            try waitForWorkers(count: options.minimumWorkers)
        }
        // Which worker gets which shard is fixed by position; the order of the sends is not.
        // A woken worker pinned to the CPU this thread runs on may take that CPU at once,
        // so wake the workers elsewhere first and that one last.
        let live = livePeers
        let here = CPUAffinity.currentCPU
        for sharesThisCPU in [false, true] {
            for (position, shard) in pending.enumerated() where (live[position % live.count].cpu == here) == sharesThisCPU {
                assign(shard, to: live[position % live.count])
            }
        }
        reassignOrphans()
        timing.sendSeconds += MonotonicClock.now - mark
        mark = MonotonicClock.now
        // While the workers compute: gather the next batch and send its tasks ahead. That
        // takes a core; when workers on this host hold every core, the first one to finish
        // frees one, so wait for it rather than delay a worker that is about to start.
        var nextSent = !workersFillTheCores
        if nextSent, let next = next() { prefetch(next, step: step + 1) }
        let completeBefore = results.completeCount
        let receiveBefore = timing.receiveSeconds
        while !results.isComplete {
            try pump(timeoutMilliseconds: 50)
            if !nextSent && results.completeCount > completeBefore && !results.isComplete {
                nextSent = true
                sendNextBatchAheadAndAwaitTheRest(next, step: step)
            }
            try checkLiveness()
            reassignOrphans()
        }
        let waited = MonotonicClock.now - mark
        let slowest = peers.values.map(\.stepComputeSeconds).max() ?? 0
        timing.computeSeconds += slowest
        timing.networkWaitSeconds += max(0, waited - slowest - (timing.receiveSeconds - receiveBefore))
        for peer in peers.values where peer.lastStepCounted == step { peer.stepsDone += 1 }
        if results.readsAnyInPlace { sumGradientsReadInPlace(results, of: batch) }
    }

    /// Sums the shards now, while the gradients read in place from workers' segments are
    /// sure to be there (a worker writes its slot again only once it has the next step's
    /// weights). They were not checked one by one: the sum is. A NaN or infinity in it
    /// sends every such shard through the usual check, on a copy the worker cannot touch.
    private func sumGradientsReadInPlace(_ results: ShardResults, of batch: BatchView) {
        let start = MonotonicClock.now
        defer { timing.reduceSeconds += MonotonicClock.now - start }
        guard !results.allFinite(results.reduce()) else { return }
        for shard in results.shardsReadInPlace where !results.copyInPlaceGradient(shard) {
            if let statistics = recompute(shard, of: batch, into: results, rejecting: resultSenders[shard] ?? []) {
                results.complete(shard, statistics: statistics)
            }
        }
    }

    /// Whether workers on this host (they attached shared memory) occupy every CPU, so that
    /// whatever the coordinator computes during a step takes a core from one of them.
    private var workersFillTheCores: Bool {
        peers.values.reduce(0) { $0 + ($1.isAlive && $1.isOnThisHost ? 1 : 0) } >= cpuCount
    }

    /// The weights slot holding this step's weights, written on first use: one copy per step
    /// for the workers on this host, none when there are none.
    private func sharedWeightsSlot() -> Int? {
        guard let weightsSegment else { return nil }
        let slot = currentStep % 2
        if weightsSlotStep != currentStep {
            currentModel?.parameters.withUnsafeBufferPointer {
                options.precision.encode($0.baseAddress!, count: $0.count, into: weightsSegment.slot(slot))
            }
            weightsSlotStep = currentStep
        }
        return slot
    }

    /// This step's weights encoded for the wire, made on first use.
    private func bulkWeights() -> SharedBuffer {
        if let currentWeights { return currentWeights }
        let weights = weightsPool.take()
        currentModel?.parameters.withUnsafeBufferPointer {
            options.precision.encode($0.baseAddress!, count: $0.count, into: weights.pointer)
        }
        currentWeights = weights
        return weights
    }

    /// Sends `shard` (and this step's weights, if the worker lacks them) to `peer`; the
    /// task itself only if it was not sent ahead.
    private func assign(_ shard: Int, to peer: WorkerPeer) {
        guard let batch = currentBatch else { return }
        if peer.weightsStep != currentStep {
            if peer.isOnThisHost, let slot = sharedWeightsSlot() {
                send(WeightsMessage.encodeShared(step: UInt64(currentStep), slot: slot,
                                                 count: spec.parameterCount, precision: options.precision), to: peer)
            } else {
                send(WeightsMessage.encode(step: UInt64(currentStep), parameters: bulkWeights(), count: spec.parameterCount,
                                           precision: options.precision), to: peer)
            }
            peer.weightsStep = currentStep
        }
        if !(peer.prefetchedStep == currentStep && peer.prefetched.contains(shard)) {
            sendTask(shard, of: batch, step: currentStep, to: peer)
        }
        guard peer.isAlive else { return }  // the send found it gone, and re-assigned its shards
        if peer.outstanding.isEmpty { peer.assignedAt = MonotonicClock.now }
        peer.outstanding.insert(shard)
        peer.tasksThisStep.insert(shard)
    }

    private func sendTask(_ shard: Int, of batch: BatchView, step: Int, to peer: WorkerPeer) {
        let count = batch.sampleCount(ofShard: shard)
        let task = TaskHeader(shard: UInt32(shard), sampleCount: UInt32(count), featureCount: UInt32(batch.featureCount))
        if peer.isOnThisHost, placeInBatchSlot(batch, step: step) {
            send(task.encodeShared(step: UInt64(step), slot: step % 2, offset: batch.offset(ofShard: shard)), to: peer)
        } else {
            send(task.encode(step: UInt64(step),
                             samples: .shared(batch.buffer, offset: batch.offset(ofShard: shard), count: count * (batch.featureCount + 1))),
                 to: peer)
        }
    }

    /// The batch slot of `step`'s parity, for the trainer to build that step's batch in; nil
    /// while a message to a worker elsewhere still points into it (zero-copy sends), or when
    /// there is no batch segment.
    public func batchBuffer(forStep step: Int) -> SharedBuffer? {
        guard !batchSlotBuffers.isEmpty, batchSlotBuffers[step % 2].isFree else { return nil }
        batchSlotSteps[step % 2] = -1  // being overwritten
        return batchSlotBuffers[step % 2]
    }

    /// Copies the batch of `step` into the batch slot of its parity, once; false if there is
    /// no batch segment or the batch does not fit. The other slot may still be read by a
    /// worker computing the step before, never this one: every result of step s - 2 came
    /// in before step s began (late answers are dropped as stale).
    private func placeInBatchSlot(_ batch: BatchView, step: Int) -> Bool {
        guard let batchSegment, batch.sampleCount * (batch.featureCount + 1) <= batchSegment.info.slotBytes else { return false }
        if batch.buffer === batchSlotBuffers[step % 2] {
            batchSlotSteps[step % 2] = step  // built there: nothing to copy
        } else if batchSlotSteps[step % 2] != step {
            // Never under a zero-copy message that is still going out from the slot.
            guard batchSlotBuffers[step % 2].isFree else { return false }
            BulkCopy.copy(to: batchSegment.slot(step % 2), from: batch.buffer.pointer, byteCount: batch.sampleCount * (batch.featureCount + 1))
            batchSlotSteps[step % 2] = step
        }
        return true
    }

    /// Sends the next step's tasks ahead, with the same shard-to-worker mapping the next step
    /// will use if nobody joins or leaves; a worker keeps them until that step's weights
    /// arrive. Whatever the next step then assigns differently is simply sent again.
    func prefetch(_ batch: BatchView, step: Int) {
        let live = livePeers
        guard !live.isEmpty else { return }
        for peer in live { peer.prefetchedStep = step; peer.prefetched = [] }
        var position = 0
        for shard in 0..<batch.shardCount where batch.sampleCount(ofShard: shard) > 0 {
            let peer = live[position % live.count]
            position += 1
            sendTask(shard, of: batch, step: step, to: peer)
            peer.prefetched.insert(shard)
        }
    }

    /// Sends through the peer's pipe when it has one and the message fits, else the socket.
    private func send(_ frames: [OutgoingFrame], to peer: WorkerPeer) {
        guard peer.isAlive else { return }
        do {
            if let pipe = peer.toWorker, try pipe.send(frames) {
                // sent
            } else if try !socket.send([.bytes(peer.identity)] + frames, dontWait: true) {
                lose(peer, reason: "its queue is full (it stopped reading)")
                return
            }
            peer.lastSent = MonotonicClock.now
            counters.bytesSent += frames.reduce(0) { $0 + $1.byteCount }
        } catch {
            lose(peer, reason: "it cannot be reached (\(error))")
        }
    }

    // MARK: Liveness

    private func checkLiveness() throws {
        checkPeers()
        if let results = currentResults, !results.isComplete, liveWorkerCount == 0 {
            logger.warning("no live workers; waiting for one to join")
            try waitForWorkers(count: max(1, options.minimumWorkers))
            needsReassignment = true
        }
    }

    /// Declares lost the workers past their deadline or silent too long, and sends the
    /// others a heartbeat when nothing else went to them for a while.
    private func checkPeers() {
        let now = MonotonicClock.now
        for peer in livePeers {
            let silent = now - peer.lastHeard
            // The per-step deadline: a worker that holds shards this long is lost, even if its
            // heartbeats still arrive (a hung compute loop, or results that were refused).
            if !peer.outstanding.isEmpty && now - peer.assignedAt > options.workerTimeoutSeconds {
                peer.missedDeadline = true
                lose(peer, reason: String(format: "shards %@ of step %d unanswered after %.1f s (last heard %.1f s ago)",
                                          peer.outstanding.sorted().description, currentStep,
                                          now - peer.assignedAt, silent))
            } else if peer.outstanding.isEmpty && silent > max(options.workerTimeoutSeconds, 3 * options.heartbeatSeconds) {
                lose(peer, reason: String(format: "no heartbeat for %.1f s", silent))
            } else if now - peer.lastSent > options.heartbeatSeconds {
                send(Heartbeat.encode(step: UInt64(max(currentStep, 0))), to: peer)
            }
        }
    }

    /// Declares `peer` lost; its unfinished shards go to the others at the next chance.
    func lose(_ peer: WorkerPeer, reason: String) {
        guard peer.isAlive else { return }
        peer.isAlive = false
        peer.timesLost += 1
        peer.forgetSession()  // it may be back in a new session: it gets everything again
        counters.lostWorkers += 1
        logger.warning("worker \(peer.name) is lost: \(reason)")
        needsReassignment = true
    }

    var needsReassignment = false

    /// Hands every shard of the current step that is neither done nor held by a live worker
    /// to the live worker with the fewest, so no sample of the batch is skipped.
    private func reassignOrphans() {
        while needsReassignment {
            needsReassignment = false
            guard let results = currentResults else { return }
            let held = Set(livePeers.flatMap(\.outstanding))
            for shard in 0..<results.shardCount where !results.isComplete(shard) && !held.contains(shard) {
                guard let target = livePeers.min(by: { ($0.outstanding.count, $0.index) < ($1.outstanding.count, $1.index) }) else {
                    needsReassignment = true  // nobody left: try again when someone joins
                    return
                }
                logger.notice("shard \(shard) of step \(currentStep) goes to worker \(target.name)")
                assign(shard, to: target)
            }
        }
    }
}

/// Keys already reported, shared with the ZAP thread.
final class RefusalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: Set<String> = []

    func isFirst(_ key: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return seen.insert(key).inserted
    }
}
