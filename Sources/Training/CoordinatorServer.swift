import Foundation
import Logging
import NeuralNet
import Wire

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
    /// The same peers by index, the scheduler's name for them.
    var peersByIndex: [Int: WorkerPeer] = [:]
    var nextWorkerIndex = 0
    /// Who does what, and when: every decision about membership, shards and deadlines.
    var scheduler: StepScheduler
    /// Sends that failed while carrying out the scheduler's commands, for it to hear of.
    var failedSends: [(WorkerID, String)] = []
    /// Set when the scheduler gives up; the step loop throws it.
    var giveUpReason: String?
    /// The next step's batch while its tasks go out ahead.
    var aheadBatch: BatchView?
    /// Restarts the workers this process spawned that have exited; returns how many.
    public var respawnExitedWorkers: (() -> Int)?
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
    private let authenticator: ZAPAuthenticator?
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
    /// Shards per step, known from the first step on (kept between steps).
    var stepShardCount = 0
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
        self.scheduler = StepScheduler(settings: options.schedulerSettings)
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
        (socket, authenticator) = try Self.makeRouter(context: context, options: options, spec: spec, logger: logger)
    }

    deinit { authenticator?.stop() }

    /// The bound endpoint, with the port filled in.
    public var endpoint: String { socket.lastEndpoint }

    public var liveWorkerCount: Int { scheduler.liveWorkers.count }

    func isAlive(_ peer: WorkerPeer) -> Bool { scheduler.isAlive(peer.index) }

    /// Whether `peer` is live and holds shards of this step.
    func isComputing(_ peer: WorkerPeer) -> Bool {
        guard let state = scheduler.workers[peer.index] else { return false }
        return state.isAlive && !state.outstanding.isEmpty
    }

    // MARK: One step

    public func computeShards(step: Int, model: Sequential, batch: BatchView, next: () -> BatchView?,
                              results: ShardResults) throws {
        var mark = MonotonicClock.now
        currentStep = step
        currentBatch = batch
        currentResults = results
        currentModel = model
        stepShardCount = results.shardCount
        results.reset()
        if resultSenders.count != results.shardCount { resultSenders = Array(repeating: nil, count: results.shardCount) }
        for peer in peers.values { peer.stepComputeSeconds = 0 }

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
        apply(.stepStarted(step: step, shards: pending))
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
            if let giveUpReason { throw CoordinatorError.gaveUp(reason: giveUpReason) }
            try pump(timeoutMilliseconds: 50)
            if !nextSent && results.completeCount > completeBefore && !results.isComplete {
                nextSent = true
                sendNextBatchAheadAndAwaitTheRest(next, step: step)
            }
            apply(.tick)
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
        peers.values.reduce(0) { $0 + (isAlive($1) && $1.isOnThisHost ? 1 : 0) } >= cpuCount
    }

    /// The weights slot holding this step's weights, written on first use: one copy per step
    /// for the workers on this host, none when there are none.
    func sharedWeightsSlot() -> Int? {
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
    func bulkWeights() -> SharedBuffer {
        if let currentWeights { return currentWeights }
        let weights = weightsPool.take()
        currentModel?.parameters.withUnsafeBufferPointer {
            options.precision.encode($0.baseAddress!, count: $0.count, into: weights.pointer)
        }
        currentWeights = weights
        return weights
    }

    func sendTask(_ shard: Int, of batch: BatchView, step: Int, to peer: WorkerPeer) {
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
        // Free of libzmq (its I/O thread let go, in order) and of this thread's own holders:
        // a batch view of an earlier step still in use keeps a reference.
        guard !batchSlotBuffers.isEmpty, batchSlotBuffers[step % 2].isFree,
              isKnownUniquelyReferenced(&batchSlotBuffers[step % 2]) else { return nil }
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
            guard batchSlotBuffers[step % 2].isFree, isKnownUniquelyReferenced(&batchSlotBuffers[step % 2]) else { return false }
            BulkCopy.copy(to: batchSegment.slot(step % 2), from: batch.buffer.pointer, byteCount: batch.sampleCount * (batch.featureCount + 1))
            batchSlotSteps[step % 2] = step
        }
        return true
    }

    /// Sends the next step's tasks ahead, with the mapping the scheduler expects that step
    /// to use; a worker keeps them until that step's weights arrive.
    func prefetch(_ batch: BatchView, step: Int) {
        aheadBatch = batch
        defer { aheadBatch = nil }
        apply(.nextStepReady(step: step, shards: (0..<batch.shardCount).filter { batch.sampleCount(ofShard: $0) > 0 }))
    }

    /// Sends through the peer's pipe when it has one and the message fits, else the socket.
    func send(_ frames: [OutgoingFrame], to peer: WorkerPeer) {
        guard isAlive(peer) else { return }
        do {
            if let pipe = peer.toWorker, try pipe.send(frames) {
                // sent
            } else if try !socket.send([.bytes(peer.identity)] + frames, dontWait: true) {
                failedSends.append((peer.index, "its queue is full (it stopped reading)"))
                return
            }
            counters.bytesSent += frames.reduce(0) { $0 + $1.byteCount }
        } catch {
            failedSends.append((peer.index, "it cannot be reached (\(error))"))
        }
    }
}
