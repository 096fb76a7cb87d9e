import Foundation

/// What time alone decides: missed deadlines, silent workers, heartbeats, late shards and
/// how long the run may wait for workers.
extension StepScheduler {
    mutating func tick(now: Double, into commands: inout [SchedulerCommand]) {
        for id in liveWorkers { checkDeadlines(of: id, now: now, into: &commands) }
        expireProbation(now: now)
        rerunLateShards(now: now, into: &commands)
        reportWait(now: now, into: &commands)
    }

    /// Lost past its deadline (suspect) or silent too long; else a heartbeat when nothing
    /// else went to it for a while.
    private mutating func checkDeadlines(of id: WorkerID, now: Double, into commands: inout [SchedulerCommand]) {
        guard let worker = workers[id] else { return }
        let silent = now - worker.lastHeard
        if !worker.outstanding.isEmpty && now - worker.assignedAt > settings.workerTimeoutSeconds {
            // The per-step deadline: a worker holding shards this long is lost even if its
            // heartbeats still arrive (a hung compute loop, or results that were refused).
            lose(id, reason: String(format: "shards %@ of step %d unanswered after %.1f s (last heard %.1f s ago)",
                                    worker.outstanding.sorted().description, currentStep, now - worker.assignedAt, silent),
                 suspect: true, into: &commands)
        } else if let lateSince = worker.lateSince, now - lateSince > settings.workerTimeoutSeconds {
            lose(id, reason: String(format: "a shard it held, re-run elsewhere, still unanswered after %.1f s (last heard %.1f s ago)",
                                    now - lateSince, silent),
                 suspect: true, into: &commands)
        } else if worker.outstanding.isEmpty && silent > max(settings.workerTimeoutSeconds, 3 * settings.heartbeatSeconds) {
            lose(id, reason: String(format: "no heartbeat for %.1f s", silent), into: &commands)
        } else if now - worker.lastSent > settings.heartbeatSeconds {
            commands.append(.sendHeartbeat(id, step: max(currentStep, 0)))
            noteSent(to: id, now: now)
        }
    }

    /// Gives each idle live worker one late shard of another's, oldest first; a shard is
    /// re-run at most once per step. The first result wins, the other is stale.
    private mutating func rerunLateShards(now: Double, into commands: inout [SchedulerCommand]) {
        guard !openShards.isEmpty, !isWaitingForWorkers,
              let lateAfter = settings.speculation.lateAfter(recentShardSeconds: recentShardSeconds) else { return }
        // Not one that is itself late: it may be stopped, however idle it looks.
        var idle = liveWorkers.filter { workers[$0]!.outstanding.isEmpty && workers[$0]!.lateSince == nil }
        guard !idle.isEmpty else { return }
        let late = openShardAssignments
            .filter { !rerunThisStep.contains($0.key) && now - $0.value > lateAfter }
            .sorted { ($0.value, $0.key) < ($1.value, $1.key) }
        for (shard, _) in late {
            guard let holder = liveWorkers.first(where: { workers[$0]!.outstanding.contains(shard) }),
                  let helper = idle.first else { continue }
            idle.removeFirst()
            markRerun(shard, late: holder)
            assign(shard, to: helper, reason: .rerun(late: holder), now: now, into: &commands)
        }
    }
}
