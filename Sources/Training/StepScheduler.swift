/// Who computes which shard of which step, who is alive, when a shard is late and when the
/// run waits or gives up: the coordinator's decisions, in one place.
///
/// A synchronous state machine in the manner of etcd's raft: the driver feeds it events with
/// the time they happened (`handle(_:now:)`) and carries out the commands it returns, in
/// order. It does no I/O and reads no clock, so every failure path is a unit test.
///
/// Rules, as the server kept them before this type existed: shards go by position over the
/// live workers sorted by index, a host with K slots taking K in a row (`SchedulerSlots`;
/// the next step's tasks go ahead with the same mapping); a
/// lost worker's shards go to the live worker with the fewest; a worker that lets a deadline
/// pass is suspect, and on probation (`SchedulerProbation`) until it answers in time; a step
/// waits below `minimumWorkers`.
public struct StepScheduler: Sendable {
    public let settings: SchedulerSettings
    public internal(set) var workers: [WorkerID: WorkerState] = [:]
    public private(set) var currentStep = -1
    /// Shards of the current step not done yet.
    public private(set) var openShards: Set<Int> = []
    /// Shards re-run this step, and over the run.
    public private(set) var rerunThisStep: Set<Int> = []
    public private(set) var rerunCount = 0
    /// When each open shard went to its (first) worker.
    private var shardAssignedAt: [Int: Double] = [:]
    /// Whether this step's position-based assignment happened (it waits below the minimum).
    private(set) var stepAssigned = false
    /// Recent times from a shard's assignment to its accepted result, in seconds.
    public private(set) var recentShardSeconds: [Double] = []
    private var waiting: Waiting?
    private var gaveUp = false

    struct Waiting: Sendable {
        var needed: Int
        var since: Double
        var lastReport: Double
    }

    public init(settings: SchedulerSettings) {
        self.settings = settings
    }

    /// Live workers, by index.
    public var liveWorkers: [WorkerID] { workers.values.filter(\.isAlive).map(\.id).sorted() }
    /// Live workers that get new shards: not those that owe the answer to a late shard (a
    /// worker that is stopped, or a peer that never answers), unless every one does.
    var assignableWorkers: [WorkerID] {
        let live = liveWorkers
        let punctual = live.filter { workers[$0]!.lateSince == nil }
        return punctual.isEmpty ? live : punctual
    }
    public var isWaitingForWorkers: Bool { waiting != nil }
    public func isAlive(_ id: WorkerID) -> Bool { workers[id]?.isAlive ?? false }

    public mutating func handle(_ event: SchedulerEvent, now: Double) -> [SchedulerCommand] {
        var commands: [SchedulerCommand] = []
        switch event {
        case let .workerJoined(id, slots): join(id, slots: slots, now: now, into: &commands)
        case let .workerHeard(id, answered): heard(id, answeredTask: answered, now: now, into: &commands)
        case let .stepStarted(step, shards): startStep(step, shards: shards, now: now, into: &commands)
        case let .nextStepReady(step, shards): prefetch(step, shards: shards, now: now, into: &commands)
        case let .resultAccepted(id, shard): accept(shard, from: id, now: now)
        case let .linkFailed(id, reason): lose(id, reason: reason, into: &commands)
        case .tick: tick(now: now, into: &commands)
        case .stepAbandoned: abandonStep()
        }
        reassignOrphans(now: now, into: &commands)
        offerProbation(now: now, into: &commands)
        return commands
    }

    /// Whether a result from `id` for `shard` of `step` may be used (asks, changes nothing).
    public func verdict(from id: WorkerID, step: Int, shard: Int, shardCount: Int) -> ResultVerdict {
        guard step == currentStep else {
            return step < currentStep || currentStep < 0 ? .stale
                : .reject(reason: "result for step \(step), which has not started (current \(currentStep))")
        }
        guard shard >= 0, shard < shardCount else { return .reject(reason: "result for shard \(shard), but a step has \(shardCount)") }
        guard openShards.contains(shard) else { return .stale }  // answered already: the first answer counts
        guard let worker = workers[id], worker.outstanding.contains(shard) else {
            if workers[id]?.tasksThisStep.contains(shard) == true { return .stale }  // since given to another
            return .reject(reason: "result for shard \(shard) of step \(step), which it was not given")
        }
        return .accept
    }

    // MARK: Membership

    private mutating func join(_ id: WorkerID, slots: Int, now: Double, into commands: inout [SchedulerCommand]) {
        guard var worker = workers[id] else {
            workers[id] = WorkerState(id: id, now: now)
            workers[id]!.slots = max(1, slots)
            endWaitIfEnough(now: now, into: &commands)
            return
        }
        worker.slots = max(1, slots)
        // A hello starts a new session: whatever tasks and weights it had are gone, and its
        // shards go out again (to it, or to whoever has fewest).
        worker.lastHeard = now
        worker.lastSent = now  // the driver answers a hello with a welcome
        worker.weightsStep = -1
        worker.outstanding = []
        worker.prefetched = []
        worker.lateSince = nil
        worker.probationSince = nil  // its probation shard went with the old session
        worker.heardSinceLost = true
        // A suspect's hello is no answer; but while the run waits for workers, it gets
        // another chance rather than leave the run waiting for one that is there (a worker
        // cut off mid-step comes back with a new session, its old tasks dropped).
        if worker.isSuspect && waiting != nil { worker.isSuspect = false }
        workers[id] = worker
        if !worker.isAlive && !worker.isSuspect { revive(id, into: &commands, now: now) }
    }

    private mutating func heard(_ id: WorkerID, answeredTask: Bool, now: Double, into commands: inout [SchedulerCommand]) {
        guard var worker = workers[id] else { return }
        worker.lastHeard = now
        if answeredTask { worker.lateSince = nil }
        if worker.isSuspect {
            // Only an answer while its probation shard is within the deadline clears it.
            if answeredTask, let since = worker.probationSince, now - since <= settings.workerTimeoutSeconds {
                worker.isSuspect = false
            }
            worker.heardSinceLost = true
        }
        workers[id] = worker
        if !worker.isAlive && !worker.isSuspect { revive(id, into: &commands, now: now) }
    }

    /// A lost worker is back: it gets work from the next step (or orphans now); whatever it
    /// sends for earlier steps is stale.
    private mutating func revive(_ id: WorkerID, into commands: inout [SchedulerCommand], now: Double) {
        workers[id]?.isAlive = true
        workers[id]?.probationSince = nil
        workers[id]?.timesRejoined += 1
        commands.append(.welcomeBack(id))
        endWaitIfEnough(now: now, into: &commands)
    }

    /// Declares `id` lost; its unfinished shards go to the others (`reassignOrphans`).
    mutating func lose(_ id: WorkerID, reason: String, suspect: Bool = false, into commands: inout [SchedulerCommand]) {
        guard var worker = workers[id] else { return }
        guard worker.isAlive else { return endProbation(of: id) }
        worker.isAlive = false
        worker.isSuspect = worker.isSuspect || suspect
        worker.timesLost += 1
        worker.weightsStep = -1
        worker.outstanding = []
        worker.prefetched = []
        worker.lateSince = nil
        worker.heardSinceLost = false
        workers[id] = worker
        commands.append(.declareLost(id, reason: reason))
    }

    // MARK: Steps

    private mutating func startStep(_ step: Int, shards: [Int], now: Double, into commands: inout [SchedulerCommand]) {
        currentStep = step
        openShards = Set(shards)
        rerunThisStep = []
        shardAssignedAt = [:]
        stepAssigned = false
        for id in workers.keys {
            workers[id]!.outstanding = []
            workers[id]!.tasksThisStep = workers[id]!.prefetchedStep == step ? workers[id]!.prefetched : []
        }
        guard !openShards.isEmpty else { return }
        if liveWorkers.count < settings.minimumWorkers {
            startWaiting(needed: settings.minimumWorkers, now: now, into: &commands)
            return
        }
        assignByPosition(now: now, into: &commands)
    }

    /// Nobody is waited for on an abandoned step: a deadline that passed after it would lose
    /// workers that are right to ignore it. Whatever was sent for it is forgotten, so the
    /// steps replayed after a rollback send weights and tasks afresh.
    private mutating func abandonStep() {
        openShards = []
        rerunThisStep = []
        shardAssignedAt = [:]
        stepAssigned = false
        waiting = nil
        for id in workers.keys {
            workers[id]!.outstanding = []
            workers[id]!.tasksThisStep = []
            workers[id]!.prefetched = []
            workers[id]!.prefetchedStep = -1
            workers[id]!.weightsStep = -1
        }
    }

    private mutating func assignByPosition(now: Double, into commands: inout [SchedulerCommand]) {
        stepAssigned = true
        let live = assignableWorkers
        guard !live.isEmpty else { return }
        for (shard, id) in byPosition(openShards.sorted(), over: live) {
            assign(shard, to: id, reason: .assigned, now: now, into: &commands)
        }
    }

    /// Sends the next step's tasks with the mapping that step will use if nobody joins or
    /// leaves; whatever it then assigns differently is simply sent again.
    private mutating func prefetch(_ step: Int, shards: [Int], now: Double, into commands: inout [SchedulerCommand]) {
        let live = assignableWorkers
        guard !live.isEmpty, step > currentStep else { return }
        for id in live { workers[id]!.prefetchedStep = step; workers[id]!.prefetched = [] }
        for (shard, id) in byPosition(shards.sorted(), over: live) {
            workers[id]!.prefetched.insert(shard)
            workers[id]!.lastSent = now
            commands.append(.sendTask(id, step: step, shard: shard, reason: .prefetched))
        }
    }

    /// Hands `shard` to `id`: this step's weights first if it lacks them, the task unless it
    /// was sent ahead.
    mutating func assign(_ shard: Int, to id: WorkerID, reason: TaskReason, now: Double,
                         into commands: inout [SchedulerCommand]) {
        guard var worker = workers[id], worker.isAlive else { return }
        if worker.weightsStep != currentStep {
            commands.append(.sendWeights(id, step: currentStep))
            worker.weightsStep = currentStep
        }
        if !(worker.prefetchedStep == currentStep && worker.prefetched.contains(shard)) {
            commands.append(.sendTask(id, step: currentStep, shard: shard, reason: reason))
        }
        if worker.outstanding.isEmpty { worker.assignedAt = now }
        worker.outstanding.insert(shard)
        worker.tasksThisStep.insert(shard)
        worker.lastSent = now
        workers[id] = worker
        if shardAssignedAt[shard] == nil { shardAssignedAt[shard] = now }
    }

    private mutating func accept(_ shard: Int, from id: WorkerID, now: Double) {
        guard openShards.remove(shard) != nil else { return }
        for other in workers.keys { workers[other]!.outstanding.remove(shard) }
        if !rerunThisStep.contains(shard), let start = shardAssignedAt[shard] {
            recentShardSeconds.append(max(0, now - start))
            if recentShardSeconds.count > settings.speculation.historyLength { recentShardSeconds.removeFirst() }
        }
        shardAssignedAt[shard] = nil
    }

    /// Every open shard no live worker holds goes to the live worker with the fewest, so no
    /// sample of the batch is skipped; with none live, the step waits.
    private mutating func reassignOrphans(now: Double, into commands: inout [SchedulerCommand]) {
        guard !openShards.isEmpty, waiting == nil, stepAssigned else { return }
        // Called on every event: with thousands of shards a step, no set or sort of them all
        // unless one is orphaned.
        let holders = workers.values.filter(\.isAlive)
        let orphans = openShards.filter { shard in !holders.contains { $0.outstanding.contains(shard) } }
        for shard in orphans.sorted() {
            let live = assignableWorkers.map { workers[$0]! }
            guard let target = live.min(by: { ($0.outstanding.count, $0.id) < ($1.outstanding.count, $1.id) }) else {
                startWaiting(needed: max(1, settings.minimumWorkers), now: now, into: &commands)
                return
            }
            assign(shard, to: target.id, reason: .reassigned, now: now, into: &commands)
        }
    }

    // MARK: Waiting for workers

    private mutating func startWaiting(needed: Int, now: Double, into commands: inout [SchedulerCommand]) {
        guard waiting == nil else { return }
        waiting = Waiting(needed: needed, since: now, lastReport: now)
        commands.append(.waitForWorkers(live: liveWorkers.count, needed: needed, waitedSeconds: 0))
        if liveWorkers.isEmpty { commands.append(.respawnWorkers) }
    }

    private mutating func endWaitIfEnough(now: Double, into commands: inout [SchedulerCommand]) {
        guard let waiting, liveWorkers.count >= waiting.needed else { return }
        self.waiting = nil
        if !stepAssigned { assignByPosition(now: now, into: &commands) }
    }

    mutating func reportWait(now: Double, into commands: inout [SchedulerCommand]) {
        guard var wait = waiting, !gaveUp else { return }
        let live = liveWorkers.count
        if now - wait.since >= settings.noWorkersTimeoutSeconds {
            gaveUp = true
            commands.append(.giveUp(reason: String(
                format: "no progress for %.0f s: %d live workers, %d needed to continue step %d; start workers with `worker --connect ENDPOINT`, or raise --no-workers-timeout",
                now - wait.since, live, wait.needed, currentStep)))
        } else if now - wait.lastReport >= settings.waitReportSeconds {
            wait.lastReport = now
            waiting = wait
            commands.append(.waitForWorkers(live: live, needed: wait.needed, waitedSeconds: now - wait.since))
            if live == 0 { commands.append(.respawnWorkers) }
        }
    }

    // internal access for the deadline extension
    var openShardAssignments: [Int: Double] { shardAssignedAt }
    mutating func markRerun(_ shard: Int, late: WorkerID) {
        rerunThisStep.insert(shard)
        rerunCount += 1
        workers[late]?.timesLate += 1
        if let holder = workers[late], holder.lateSince == nil { workers[late]?.lateSince = holder.assignedAt }
    }
    mutating func noteSent(to id: WorkerID, now: Double) { workers[id]?.lastSent = now }
}
