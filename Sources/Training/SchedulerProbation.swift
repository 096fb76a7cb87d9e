/// How a suspect (lost for a missed deadline) earns its way back. While it is heard from
/// (heartbeats, a new session), it gets one shard at a time: a copy of an open shard that a
/// live worker holds, so the step never waits for it. An answer within `workerTimeoutSeconds`
/// of that copy going out brings it back to full work (and, if it came first, counts); an
/// unanswered copy expires after that time, and the next goes out only once the worker is
/// heard from again. A peer that only heartbeats thus holds at most one shard, for one
/// timeout at a time, and never holds up a step.
extension StepScheduler {
    /// One probation shard for each suspect heard from since its last, highest open shards
    /// first (the last a live worker reaches), each to one suspect at most.
    mutating func offerProbation(now: Double, into commands: inout [SchedulerCommand]) {
        guard stepAssigned, !openShards.isEmpty, !isWaitingForWorkers else { return }
        let candidates = workers.values.filter { !$0.isAlive && $0.isSuspect && $0.probationSince == nil && $0.heardSinceLost }
        guard !candidates.isEmpty else { return }
        let taken = Set(workers.values.filter { !$0.isAlive }.flatMap(\.outstanding))
        var shards = openShards.subtracting(taken).sorted(by: >)
        for id in candidates.map(\.id).sorted() where !shards.isEmpty {
            let shard = shards.removeFirst()
            var worker = workers[id]!
            if worker.weightsStep != currentStep {
                commands.append(.sendWeights(id, step: currentStep))
                worker.weightsStep = currentStep
            }
            commands.append(.sendTask(id, step: currentStep, shard: shard, reason: .probation))
            worker.outstanding = [shard]
            worker.tasksThisStep.insert(shard)
            worker.probationSince = now
            worker.assignedAt = now  // the deadline, should it answer and be live again
            worker.lastSent = now
            workers[id] = worker
        }
    }

    /// Probation shards unanswered past the deadline: that chance is spent.
    mutating func expireProbation(now: Double) {
        for (id, worker) in workers {
            if let since = worker.probationSince, now - since > settings.workerTimeoutSeconds { endProbation(of: id) }
        }
    }

    /// Its probation shard is void (expired, or its link failed); another goes out once it
    /// is heard from again.
    mutating func endProbation(of id: WorkerID) {
        guard workers[id]?.probationSince != nil else { return }
        workers[id]!.probationSince = nil
        workers[id]!.outstanding = []
        workers[id]!.heardSinceLost = false
    }

    /// Whether commands may go to `id`: it is live, or a suspect holding a probation shard.
    public func isReachable(_ id: WorkerID) -> Bool {
        guard let worker = workers[id] else { return false }
        return worker.isAlive || worker.probationSince != nil
    }
}
