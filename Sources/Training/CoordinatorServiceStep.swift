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
        for server in service.servers { if let peer = peersByIndex[server] { sendEvenIfSuspect(plan.encode(), to: peer) } }
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
            if let lost = service.lostServer {
                service.rollbacks += 1
                logger.warning("\(lost): rolling back to the last snapshot and replaying the steps since")
                throw ParameterServiceRollback(reason: lost)
            }
            try pump(timeoutMilliseconds: 50)
            apply(.tick)
            blameServersLateWith(step: step, results: results, service: service)
        }
        let slowest = peers.values.map(\.stepComputeSeconds).max() ?? 0
        timing.computeSeconds += slowest
        timing.networkWaitSeconds += max(0, MonotonicClock.now - mark - slowest)
        for peer in peers.values where peer.lastStepCounted == step { peer.stepsDone += 1 }
    }

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
        guard Int(message.step) == currentStep, let results = currentResults, let batch = currentBatch,
              report.shard < results.shardCount else { return counters.staleResults += 1 }
        if !message.refusal.isEmpty {
            // The coordinator cannot recompute here: the shard goes to another worker. Only a
            // worker that holds the shard can be blamed (the report names the sender).
            guard scheduler.verdict(from: report.worker, step: currentStep, shard: report.shard,
                                    shardCount: results.shardCount) == .accept else { return counters.staleResults += 1 }
            counters.rejectedMessages += 1
            apply(.linkFailed(report.worker, reason: "parameter server \(name(of: service.servers[server])) refused its gradient of shard \(report.shard): \(escapedForLog(message.refusal))"))
            return
        }
        guard report.sampleCount == batch.sampleCount(ofShard: report.shard) else {
            return reject(from: peersByIndex[service.servers[server]]?.identity ?? [], reason: "receipt for shard \(report.shard) counts \(report.sampleCount) samples; the shard has \(batch.sampleCount(ofShard: report.shard))")
        }
        guard service.receipts[report.shard][server] == nil else { return counters.staleResults += 1 }
        service.receipts[report.shard][server] = report
        service.receiptCount += 1
        if service.receipts[report.shard].count == service.serverCount && !results.isComplete(report.shard) {
            results.complete(report.shard, statistics: BatchStatistics(sampleCount: report.sampleCount, lossSum: report.lossSum,
                                                                       correctCount: report.correctCount))
        }
        // The scheduler hears of the shard from its first receipt naming a worker it gave the
        // shard to: that worker did its part, and a server that then does not finish the step
        // is the one to blame (`blameServersLateWith`), not the workers.
        guard !service.accepted.contains(report.shard), let peer = peersByIndex[report.worker],
              scheduler.verdict(from: report.worker, step: currentStep, shard: report.shard,
                                shardCount: results.shardCount) == .accept else { return }
        service.accepted.insert(report.shard)
        if service.accepted.count == service.pending.count { service.allAcceptedAt = MonotonicClock.now }
        let sender = report.worker
        peer.shardsDone += 1
        let compute = Double(report.computeMicroseconds) / 1e6
        peer.computeSeconds += compute
        peer.stepComputeSeconds += compute
        peer.lastStepCounted = currentStep
        apply(.resultAccepted(sender, shard: report.shard))
    }

    /// Every shard's gradient reached a server `workerTimeoutSeconds` ago, yet the step is
    /// not done: the servers still missing a receipt or `applied` are lost (and the run rolls
    /// back). The workers did their part; a stopped or cut-off server holds everyone up.
    private func blameServersLateWith(step: Int, results: ShardResults, service: ParameterServiceState) {
        guard let since = service.allAcceptedAt, MonotonicClock.now - since > options.scheduling.workerTimeoutSeconds else { return }
        service.allAcceptedAt = nil
        for (index, server) in service.servers.enumerated() {
            let missing = service.pending.filter { service.receipts[$0][index] == nil }
            guard !missing.isEmpty || !service.applied.contains(index) else { continue }
            let what = missing.isEmpty ? "has not applied it" : "has no gradient of shards \(missing)"
            apply(.linkFailed(server, reason: String(format: "parameter server of step %d %@ %.1f s after every shard reached a server", step, what, options.scheduling.workerTimeoutSeconds)))
        }
    }
}
