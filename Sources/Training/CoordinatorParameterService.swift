import Foundation
import NeuralNet
import Wire

/// The coordinator's view of the parameter service (`--parameter-servers R`): who serves
/// which range in which generation, and what the servers said about the step in progress.
final class ParameterServiceState {
    let serverCount: Int
    var ranges: [ParameterRange] = []
    /// The worker serving each range, by range.
    var servers: [WorkerID] = []
    var generation: UInt32 = 0
    /// Per shard of the current step: each server's receipt, by range index.
    var receipts: [[Int: ShardReport]] = []
    /// Ranges whose server applied the current step.
    var applied: Set<Int> = []
    var snapshots: [Int: SnapshotAnswer] = [:]
    /// Receipts for the next step, which come while this one waits for its last `applied`
    /// (a server that applied a step sends the next weights at once): kept for that step.
    var early: [(server: Int, message: ShardVerdictMessage)] = []
    /// The step the scheduler last started in this generation's loop (nil while the current
    /// one waits to start): receipts of the current step before then wait in `early`.
    var startedStep: Int?
    /// Set when a serving worker is lost, or a lost worker's gradient reached some servers
    /// only: the step loop rolls back (and a lost server's range goes to a spare).
    var lostServer: String?
    /// Workers lost while serving: never picked to serve again in this run.
    var lostServers: Set<WorkerID> = []
    /// Shards of the current step with samples, those the scheduler has heard of (from
    /// their first receipt), and since when it has heard of them all.
    var pending: [Int] = []
    var accepted: Set<Int> = []
    var allAcceptedAt: Double?
    var receiptCount = 0
    var rollbacks = 0
    /// On one host: each server's weights segment, by range, with its generation
    /// (`CoordinatorSharedService.swift`), and scratch for checking 16-bit values.
    var rangeSegments: [Int: (generation: UInt32, segment: SharedSegment)] = [:]
    var weightsScratch: [Float] = []
    /// Steps whose weights and gradients went through shared memory, and the generation
    /// that last said so in the log.
    var sharedSteps = 0
    var sharedLoggedGeneration: UInt32 = 0
    /// Results beyond a worker's slots: copied into these, `overflowUsed` slots so far in
    /// `overflowStep`.
    var overflowSegments: [SharedSegment] = []
    var overflowStep = -1
    var overflowUsed = 0
    /// Results relayed, not yet told to the servers (`flushShardNoticesIfDue`), since when,
    /// and how many of the current step were relayed in all.
    var notices: ShardsInSegments?
    var noticesSince = 0.0
    var relayedThisStep = (step: UInt64.max, count: 0)

    init(serverCount: Int) { self.serverCount = serverCount }

    func serverIndex(of worker: WorkerID) -> Int? { servers.firstIndex(of: worker) }
}

/// For the run summary.
public struct ParameterServiceSummary: Codable, Sendable, Equatable {
    public struct Server: Codable, Sendable, Equatable {
        public var name: String
        public var parameters: Int
    }

    public var servers: [Server]
    public var generation: Int
    public var receipts: Int
    public var rollbacks: Int
    /// Steps whose bulk values went through shared memory (servers on the coordinator's host).
    public var sharedMemorySteps: Int
}

extension CoordinatorServer {
    public var appliesUpdates: Bool { service != nil }

    public var parameterServiceSummary: ParameterServiceSummary? {
        guard let service else { return nil }
        return ParameterServiceSummary(servers: zip(service.servers, service.ranges).map { .init(name: name(of: $0), parameters: $1.count) },
                                       generation: Int(service.generation), receipts: service.receiptCount,
                                       rollbacks: service.rollbacks, sharedMemorySteps: service.sharedSteps)
    }

    /// Workers that offered to serve, by index: live, or suspect but still heard from (a
    /// stalled server makes every worker miss its deadline), and never one lost while serving.
    var servingCandidates: [WorkerPeer] {
        peersByIndex.keys.sorted().compactMap { peersByIndex[$0] }.filter { peer in
            guard peer.serveOffer != nil, !(service?.lostServers.contains(peer.index) ?? false),
                  let state = scheduler.workers[peer.index] else { return false }
            return state.isAlive || MonotonicClock.now - state.lastHeard < 3 * options.scheduling.heartbeatSeconds
        }
    }

    /// To a live worker as any message; to one the scheduler does not reach now (a suspect),
    /// by every path, since a server or the map must reach it all the same.
    func sendEvenIfSuspect(_ frames: [OutgoingFrame], to peer: WorkerPeer) {
        if scheduler.isReachable(peer.index) { send(frames, to: peer) } else { peer.link.sendByEveryPath(frames) }
    }

    /// Serves hellos until `count` serving workers are live.
    public func waitForParameterServers(count: Int, timeoutSeconds: Double) throws {
        let start = MonotonicClock.now
        while servingCandidates.count < count {
            if MonotonicClock.now - start > timeoutSeconds {
                throw CoordinatorError.gaveUp(reason: "only \(servingCandidates.count) of \(count) parameter servers (workers started with --serve) joined within \(Int(timeoutSeconds)) s")
            }
            try pump(timeoutMilliseconds: 100)
            apply(.tick)
        }
    }

    /// Seeds every server with its range of `checkpoint` in a new generation (live servers
    /// keep their range, a lost one's goes to a spare serving worker) and tells every worker
    /// the new map.
    public func seed(from checkpoint: Checkpoint) throws {
        guard let service else { return }
        if service.ranges.isEmpty {
            guard let ranges = ParameterRanges.split(parameterCount: spec.parameterCount, into: service.serverCount) else {
                throw CoordinatorError.gaveUp(reason: "--parameter-servers \(service.serverCount) is more than \(spec.parameterCount) parameters can be cut into (blocks of \(ParameterRanges.alignment))")
            }
            service.ranges = ranges
        }
        try respawnLostServers(service)
        var spares = servingCandidates.map(\.index).filter { !service.servers.contains($0) }
        let candidates = Set(servingCandidates.map(\.index))
        service.servers = try (0..<service.serverCount).map { range in
            if range < service.servers.count, candidates.contains(service.servers[range]) { return service.servers[range] }
            guard !spares.isEmpty else {
                throw CoordinatorError.gaveUp(reason: "the parameter server of range \(service.ranges[range]) was lost and no spare serving worker is live; start more workers with --serve")
            }
            return spares.removeFirst()
        }
        service.generation += 1
        service.lostServer = nil
        for (index, range) in service.ranges.enumerated() {
            let state = RangeState(range: range, iteration: checkpoint.iteration,
                                   parameters: Array(checkpoint.parameters[range.lower..<range.upper]),
                                   optimizerState: checkpoint.optimizerState.map { Array($0[range.lower..<range.upper]) })
            let assignment = ServeAssignment(generation: service.generation, step: UInt64(checkpoint.step), state: state,
                                             shardCount: checkpoint.config.shardCount, precision: options.precision,
                                             optimizer: checkpoint.config.rangeOptimizerSettings)
            if let peer = peersByIndex[service.servers[index]] { sendEvenIfSuspect(assignment.encode(), to: peer) }
        }
        for peer in peers.values { sendServerMap(to: peer) }
        let who = zip(service.servers, service.ranges).map { "\(name(of: $0)) \($1.count)" }.joined(separator: ", ")
        logger.notice("parameter service generation \(service.generation) from step \(checkpoint.step): \(who) parameters")
    }

    /// The current map, to a worker (after its welcome, or a new generation).
    func sendServerMap(to peer: WorkerPeer) {
        guard let service, !service.servers.isEmpty else { return }
        let entries = zip(service.servers, service.ranges).compactMap { server, range in
            peersByIndex[server]?.serveOffer.map { ServerMap.Entry(endpoint: $0.endpoint, range: range, curvePublicKey: $0.curvePublicKey) }
        }
        guard entries.count == service.servers.count else { return }
        sendEvenIfSuspect(ServerMap(generation: service.generation, entries: entries).encode(), to: peer)
    }

    /// A worker that is lost was maybe a server: then the run must roll back.
    func noteLost(_ id: WorkerID) {
        guard let service, let index = service.serverIndex(of: id), service.lostServer == nil else { return }
        service.lostServers.insert(id)
        service.lostServer = "parameter server \(name(of: id)) (parameters \(service.ranges[index])) was lost"
    }

    /// Receipts, refusals, `applied` and snapshot answers from a server's worker.
    func handleServerMessage(_ envelope: Envelope, from peer: WorkerPeer) throws {
        guard let service else { throw ProtocolError.unexpected(envelope.type) }
        let generation: UInt32
        switch envelope.type {
        case .receipt, .rangeRefused:
            let message = try ShardVerdictMessage(envelope)
            generation = message.generation
            guard let server = current(generation, peer, service) else { return }
            take(message, fromServer: server, service: service)
        case .receipts:
            let message = try ShardReceipts(envelope)
            generation = message.generation
            guard let server = current(generation, peer, service) else { return }
            for verdict in message.verdicts { take(verdict, fromServer: server, service: service) }
        case .applied:
            generation = try GenerationMessage.decode(envelope)
            guard let server = current(generation, peer, service), Int(envelope.step) == currentStep else { return counters.staleResults += 1 }
            service.applied.insert(server)
        case .snapshotAnswer:
            let answer = try SnapshotAnswer(envelope, parameterCount: spec.parameterCount)
            guard let server = current(answer.generation, peer, service) else { return }
            service.snapshots[server] = answer
        case .rangeSegment:
            let message = try RangeSegmentMessage(envelope, parameterCount: spec.parameterCount)
            guard let server = current(message.generation, peer, service) else { return }
            try takeRangeSegment(message, server: server, service: service)
        default:
            throw ProtocolError.unexpected(envelope.type)
        }
    }

    /// The range index `peer` serves in `generation`, or nil (counted) for a message of
    /// another generation or from a worker that does not serve.
    private func current(_ generation: UInt32, _ peer: WorkerPeer, _ service: ParameterServiceState) -> Int? {
        guard let index = service.serverIndex(of: peer.index), generation == service.generation else {
            if generation > service.generation || service.serverIndex(of: peer.index) == nil {
                reject(from: peer.identity, reason: "a parameter server's message from \(peer.name), which does not serve generation \(generation)")
            } else {
                counters.staleResults += 1
            }
            return nil
        }
        return index
    }

    /// The step in flight is abandoned (the scheduler waits for nobody on it) and the trainer
    /// goes back to its last snapshot.
    func rollBack(because lost: String, service: ParameterServiceState) -> ParameterServiceRollback {
        apply(.stepAbandoned)
        service.rollbacks += 1
        logger.warning("\(lost): rolling back to the last snapshot and replaying the steps since")
        return ParameterServiceRollback(reason: lost)
    }

    /// Asks every server for its range and optimizer state and puts them into `model` and
    /// `optimizer`.
    public func bringHome(step: Int, into model: Sequential, optimizer: inout Optimizer) throws {
        guard let service else { return }
        service.snapshots = [:]
        let request = GenerationMessage.encode(.snapshotRequest, step: UInt64(step), generation: service.generation)
        for server in service.servers { if let peer = peersByIndex[server] { sendEvenIfSuspect(request, to: peer) } }
        let start = MonotonicClock.now
        while service.snapshots.count < service.serverCount {
            if let giveUpReason { throw CoordinatorError.gaveUp(reason: giveUpReason) }
            if let lost = service.lostServer ?? (MonotonicClock.now - start > options.scheduling.workerTimeoutSeconds * 3 ? "the parameter servers did not answer a snapshot request" : nil) {
                throw rollBack(because: lost, service: service)
            }
            try pump(timeoutMilliseconds: 50)
            apply(.tick)
        }
        var state = optimizer.state
        for (index, range) in service.ranges.enumerated() {
            let answer = service.snapshots[index]!
            guard answer.step == UInt64(step), answer.state.range == range, answer.state.iteration == optimizer.iteration,
                  answer.state.optimizerState.count == state.count else {
                throw CoordinatorError.gaveUp(reason: "parameter server \(name(of: service.servers[index])) answered the snapshot with range \(answer.state.range) at step \(answer.step), iteration \(answer.state.iteration); expected \(range) at step \(step), iteration \(optimizer.iteration)")
            }
            model.parameters.replaceSubrange(range.lower..<range.upper, with: answer.state.parameters)
            for buffer in state.indices { state[buffer].replaceSubrange(range.lower..<range.upper, with: answer.state.optimizerState[buffer]) }
        }
        optimizer.state = state
    }
}
