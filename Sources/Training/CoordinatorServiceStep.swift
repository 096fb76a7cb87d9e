import Foundation
import NeuralNet
import Wire

/// One step of a run with a parameter service: the plan to the servers, the tasks to the
/// workers, and the servers' receipts and `applied` until every server finished the step.
extension CoordinatorServer {
    // MARK: One step

    func computeShardsRemotely(step: Int, batch: BatchView, next: () -> BatchView?, results: ShardResults,
                               service: ParameterServiceState) throws {
        var mark = MonotonicClock.now
        var pending: [Int] = []
        for shard in 0..<results.shardCount {
            if batch.sampleCount(ofShard: shard) == 0 { results.complete(shard, statistics: BatchStatistics()) } else { pending.append(shard) }
        }
        service.startedStep = nil
        service.receipts = Array(repeating: [:], count: results.shardCount)
        service.applied = []
        service.pending = pending
        service.accepted = []
        service.allAcceptedAt = nil
        let plan = StepPlan(generation: service.generation, step: UInt64(step), sampleCount: batch.sampleCount,
                            nonEmpty: (0..<results.shardCount).map { batch.sampleCount(ofShard: $0) > 0 })
        let planFrames = plan.encode()
        for server in service.servers { if let peer = peersByIndex[server] { sendEvenIfSuspect(planFrames, to: peer) } }
        // On one host the weights go to the workers here through shared memory (the copy
        // counts as sending, not the wait for the servers' segments of a new generation).
        timing.sendSeconds += MonotonicClock.now - mark
        stepWeights = try sharedServiceWeights(step: step, service: service)
        defer { stepWeights = nil }
        mark = MonotonicClock.now
        apply(.stepStarted(step: step, shards: pending))
        service.startedStep = step
        let early = service.early
        service.early = []
        for (server, message) in early where message.generation == service.generation { take(message, fromServer: server, service: service) }
        if let next = next() { prefetch(next, step: step + 1) }
        timing.sendSeconds += MonotonicClock.now - mark
        mark = MonotonicClock.now
        while !results.isComplete || service.applied.count < service.serverCount {
            if let giveUpReason { throw CoordinatorError.gaveUp(reason: giveUpReason) }
            if let lost = service.lostServer { throw rollBack(because: lost, service: service) }
            try pump(timeoutMilliseconds: 50)
            apply(.tick)
            blameServersLateWith(step: step, results: results, service: service)
        }
        settleStatistics(results, service: service)
        let slowest = peers.values.map(\.stepComputeSeconds).max() ?? 0
        timing.computeSeconds += slowest
        timing.networkWaitSeconds += max(0, MonotonicClock.now - mark - slowest)
        for peer in peers.values where peer.lastStepCounted == step { peer.stepsDone += 1 }
    }

    /// A server's receipt or refusal, for one shard or a host's aligned block of shards.
    ///
    /// The receipts mirror what each server holds: a server takes a range unless it holds
    /// every shard of it already (a block replaces the shards of it it held), and its
    /// messages arrive in order, so a receipt is recorded for each of its shards unless that
    /// server's receipts cover them all (then it acknowledges a late copy: stale).
    func take(_ message: ShardVerdictMessage, fromServer server: Int, service: ParameterServiceState) {
        let report = message.report
        let earlyCap = 4 * ParameterServiceLimits.maximumServers * max(1, stepShardCount)
        // Before the scheduler started this step (the coordinator may still wait for a new
        // generation's weights segments), nothing may judge a receipt of it: it waits, as one
        // of the next step does, and is taken right after the start.
        if Int(message.step) == currentStep && service.startedStep != currentStep {
            guard service.early.count < earlyCap else { return counters.staleResults += 1 }
            return service.early.append((server, message))
        }
        if message.refusal.isEmpty, peersByIndex[report.worker] != nil {
            // A receipt is the coordinator's only news that a worker answered a task (late or
            // re-run ones included): that meets its deadline, as a result would.
            apply(.workerHeard(report.worker, answeredTask: true))
        }
        if Int(message.step) == currentStep + 1 && service.early.count < earlyCap {
            return service.early.append((server, message))
        }
        let shards = report.shards
        guard Int(message.step) == currentStep, let results = currentResults, let batch = currentBatch,
              shards.upperBound <= results.shardCount else { return counters.staleResults += 1 }
        let verdict = scheduler.verdict(from: report.worker, step: currentStep, shards: shards, shardCount: results.shardCount)
        if !message.refusal.isEmpty {
            // The coordinator cannot recompute here: the shards go to another worker. Only a
            // worker that holds them can be blamed (the report names the sender).
            guard verdict == .accept else { return counters.staleResults += 1 }
            counters.rejectedMessages += 1
            apply(.linkFailed(report.worker, reason: "parameter server \(name(of: service.servers[server])) refused its gradient of \(report.shardsDescription): \(escapedForLog(message.refusal))"))
            return
        }
        let serverPeer = peersByIndex[service.servers[server]]?.identity ?? []
        let samples = shards.map { batch.sampleCount(ofShard: $0) }
        guard !samples.contains(0), report.sampleCount == samples.reduce(0, +) else {
            return reject(from: serverPeer, reason: "receipt for \(report.shardsDescription) counts \(report.sampleCount) samples; they have \(samples)")
        }
        guard shards.contains(where: { service.receipts[$0][server] == nil }) else { return counters.staleResults += 1 }
        if case let .reject(reason) = verdict {
            // A server took the range of a worker that was not given these shards: it cannot
            // be undone there (an admitted worker computes as any other would), but it is
            // counted and named.
            reject(from: serverPeer, reason: "a receipt for \(name(of: report.worker)): \(reason)")
        }
        for shard in shards { service.receipts[shard][server] = report }
        service.receiptCount += 1
        for shard in shards where service.receipts[shard].count == service.serverCount && !results.isComplete(shard) {
            results.complete(shard, statistics: BatchStatistics())  // the statistics once the step is done
        }
        acceptForScheduler(report, results: results, service: service)
    }

    /// The scheduler hears of each shard from its first receipt naming a worker it gave the
    /// shard to: that worker did its part, and a server that then does not finish the step
    /// is the one to blame (`blameServersLateWith`), not the workers.
    private func acceptForScheduler(_ report: ShardReport, results: ShardResults, service: ParameterServiceState) {
        guard let peer = peersByIndex[report.worker] else { return }
        var accepted = 0
        for shard in report.shards where !service.accepted.contains(shard) {
            guard scheduler.verdict(from: report.worker, step: currentStep, shard: shard,
                                    shardCount: results.shardCount) == .accept else { continue }
            service.accepted.insert(shard)
            accepted += 1
            apply(.resultAccepted(report.worker, shard: shard))
        }
        guard accepted > 0 else { return }
        if service.accepted.count == service.pending.count { service.allAcceptedAt = MonotonicClock.now }
        peer.shardsDone += accepted
        let compute = Double(report.computeMicroseconds) / 1e6
        peer.computeSeconds += compute
        peer.stepComputeSeconds += compute
        peer.lastStepCounted = currentStep
    }

    /// The batch's statistics as the first server holds the step: each of its receipts (a
    /// shard's, or a block's, counted at the block's first shard) once.
    private func settleStatistics(_ results: ShardResults, service: ParameterServiceState) {
        for shard in service.pending {
            guard let report = service.receipts[shard][0] else { continue }
            results.complete(shard, statistics: report.shard != shard ? BatchStatistics()
                : BatchStatistics(sampleCount: report.sampleCount, lossSum: report.lossSum, correctCount: report.correctCount))
        }
    }

    /// Every shard's gradient reached a server a while ago, yet the step is not done: the
    /// servers still missing a receipt or `applied` are lost (and the run rolls back). The
    /// workers did their part; a stopped or cut-off server holds everyone up. Unless the
    /// worker that sent the missing ranges was lost midway (a host killed between its sends
    /// to the servers): then the run rolls back with every server kept. The shards cannot
    /// simply go to another worker, since a server that has them all applied the step, and
    /// no worker holds that range of the step's weights any more. The wait is long enough
    /// for a dead sender to be declared lost first (silence, `max(timeout, 3 beats)`).
    private func blameServersLateWith(step: Int, results: ShardResults, service: ParameterServiceState) {
        guard let since = service.allAcceptedAt else { return }
        if let (sender, shards) = lostSenderOfMissingRanges(service: service) {
            service.allAcceptedAt = nil
            service.lostServer = "worker \(name(of: sender)) was lost after its gradient of shards \(shards) of step \(step) reached only some parameter servers"
            return
        }
        let scheduling = options.scheduling
        let patience = max(scheduling.workerTimeoutSeconds, 3 * scheduling.heartbeatSeconds) + scheduling.heartbeatSeconds
        guard MonotonicClock.now - since > patience else { return }
        service.allAcceptedAt = nil
        for (index, server) in service.servers.enumerated() {
            let missing = service.pending.filter { service.receipts[$0][index] == nil }
            guard !missing.isEmpty || !service.applied.contains(index) else { continue }
            let what = missing.isEmpty ? "has not applied it" : "has no gradient of shards \(missing)"
            apply(.linkFailed(server, reason: String(format: "parameter server of step %d %@ %.1f s after every shard reached a server", step, what, patience)))
        }
    }

    /// Shards some server still misses whose every sender is no longer live, and one such
    /// sender; nil when there are none.
    private func lostSenderOfMissingRanges(service: ParameterServiceState) -> (WorkerID, [Int])? {
        let orphaned = service.pending.filter { shard in
            let receipts = service.receipts[shard]
            return receipts.count < service.serverCount && !receipts.isEmpty
                && !receipts.values.contains { scheduler.isReachable($0.worker) }
        }
        let senders = orphaned.flatMap { service.receipts[$0].values.map(\.worker) }
        guard let sender = senders.min() else { return nil }
        return (sender, orphaned)
    }
}
