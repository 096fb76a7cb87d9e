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
    /// Called at every turn of a step's wait for its results: a host agent's own coordinator
    /// keeps the agent's link upstream alive from here (`worker --processes K`).
    var whileWaitingForResults: (() throws -> Void)?
    let weightsPool: SharedBufferPool
    /// Weights and batches in shared memory, for workers on this host (nil: shared memory
    /// is off, or could not be made).
    let feed: SharedStepFeed?
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
    /// This step's weights, encoded for the links on first need.
    var stepWeights: StepWeights?
    /// Who sent each shard's accepted result, by shard.
    var resultSenders: [[UInt8]?] = []
    weak var currentModel: Sequential?
    /// The parameter service, when this run has one (`--parameter-servers`).
    let service: ParameterServiceState?

    public init(options: CoordinatorOptions, spec: ModelSpec, logger: Logger) throws {
        self.options = options
        self.spec = spec
        self.modelHash = ModelSpecCoding.hash(spec)
        self.weightsPool = SharedBufferPool(byteCount: spec.parameterCount * options.precision.bytesPerValue)
        self.logger = logger
        self.scheduler = StepScheduler(settings: options.scheduling)
        self.service = options.parameterServers > 0 ? ParameterServiceState(serverCount: options.parameterServers) : nil
        var feed: SharedStepFeed?
        if options.sharedMemory {
            do {
                feed = try SharedStepFeed(weightBytes: spec.parameterCount * options.precision.bytesPerValue,
                                          batchSlotBytes: options.batchSlotSamples * (spec.inputSize + 1))
            } catch {
                logger.notice("no shared memory for local workers (\(error)); everything goes through the socket")
            }
        }
        self.feed = feed
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
        if let service {
            defer { currentBatch = nil; currentResults = nil }
            return try computeShardsRemotely(step: step, batch: batch, next: next, results: results, service: service)
        }

        stepWeights = StepWeights(step: step, count: spec.parameterCount, precision: options.precision, pool: weightsPool) {
            [weak model, precision = options.precision] destination in
            model?.parameters.withUnsafeBufferPointer { precision.encode($0.baseAddress!, count: $0.count, into: destination) }
        }
        defer { stepWeights = nil; currentBatch = nil; currentResults = nil }

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
            try whileWaitingForResults?()
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
        peers.values.reduce(0) { $0 + (isAlive($1) && $1.link.computesOnThisHost ? 1 : 0) } >= cpuCount
    }

    /// This step's weights through `peer`'s link (with a parameter service, only to workers
    /// on this host: the others take them from the servers).
    func sendWeights(to peer: WorkerPeer) {
        guard let stepWeights, service == nil || peer.link.computesOnThisHost else { return }
        deliver(to: peer) { try $0.sendWeights(stepWeights) }
    }

    func sendTask(_ shard: Int, of batch: BatchView, step: Int, to peer: WorkerPeer) {
        deliver(to: peer) { try $0.sendTask(shard, of: batch, step: step) }
    }

    /// The batch slot of `step`'s parity, for the trainer to build that step's batch in (see
    /// `SharedStepFeed.batchBuffer`).
    public func batchBuffer(forStep step: Int) -> SharedBuffer? { feed?.batchBuffer(forStep: step) }

    /// Sends the next step's tasks ahead, with the mapping the scheduler expects that step
    /// to use; a worker keeps them until that step's weights arrive.
    func prefetch(_ batch: BatchView, step: Int) {
        aheadBatch = batch
        defer { aheadBatch = nil }
        apply(.nextStepReady(step: step, shards: (0..<batch.shardCount).filter { batch.sampleCount(ofShard: $0) > 0 }))
    }

    func send(_ frames: [OutgoingFrame], to peer: WorkerPeer) {
        deliver(to: peer) { try $0.send(frames) }
    }

    /// A send through the link of a peer the scheduler still reaches (live, or on probation);
    /// one that fails loses the peer (through the scheduler, once this command is carried out).
    private func deliver(to peer: WorkerPeer, _ send: (WorkerLink) throws -> SentBytes?) {
        guard scheduler.isReachable(peer.index) else { return }
        do {
            guard let bytes = try send(peer.link) else {
                failedSends.append((peer.index, "its queue is full (it stopped reading)"))
                return
            }
            counters.bytesSent += bytes
        } catch {
            failedSends.append((peer.index, "it cannot be reached (\(error))"))
        }
    }
}
