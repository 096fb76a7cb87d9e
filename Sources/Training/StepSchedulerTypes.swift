/// A worker as the scheduler knows it: the index it got when it first joined.
public typealias WorkerID = Int

/// The scheduler's rules, in seconds.
public struct SchedulerSettings: Sendable, Equatable {
    /// Fewer live workers than this at a step's start and the step waits for more.
    public var minimumWorkers = 1
    /// A worker that holds shards this long without answering is declared lost, and gets
    /// one shard at a time (probation) until it answers one within this time (it is suspect).
    public var workerTimeoutSeconds = 5.0
    /// Nothing sent to a worker for this long and it gets a heartbeat; a worker with nothing
    /// to do that is silent for `max(workerTimeoutSeconds, 3 · heartbeatSeconds)` is lost.
    public var heartbeatSeconds = 1.0
    /// Waiting this long for workers (none live, or fewer than needed), the run gives up.
    public var noWorkersTimeoutSeconds = 300.0
    /// While it waits, how often the wait is reported (and spawned workers replaced).
    public var waitReportSeconds = 10.0
    public var speculation = SpeculationPolicy()

    public init() {}
}

/// When a shard counts as late, and goes to an idle worker as well (the first result wins;
/// results are bit-identical wherever a shard is computed, so this costs no reproducibility).
public struct SpeculationPolicy: Sendable, Equatable {
    public var isEnabled = true
    /// Late: outstanding longer than `factor` × this quantile of recent shard times...
    public var quantile = 0.9
    public var factor = 3.0
    /// ...and longer than this, so that the jitter of millisecond shards starts nothing.
    public var floorSeconds = 0.05
    /// Shard times needed before anything counts as late, and how many are kept.
    public var minimumSamples = 8
    public var historyLength = 64

    public init() {}

    /// How long a shard may be outstanding before it is re-run, given recent shard times in
    /// seconds; nil while there are too few to tell.
    public func lateAfter(recentShardSeconds: [Double]) -> Double? {
        guard isEnabled, recentShardSeconds.count >= max(1, minimumSamples) else { return nil }
        let sorted = recentShardSeconds.sorted()
        let rank = min(sorted.count - 1, Int((quantile * Double(sorted.count - 1)).rounded(.up)))
        return max(floorSeconds, sorted[rank] * factor)
    }
}

/// What happens to the scheduler. Time comes with every call, never from a clock.
public enum SchedulerEvent: Equatable, Sendable {
    /// A hello that proved the run secret; a known worker rejoins (unless it is suspect).
    /// `slots`: its compute processes (`worker --processes K`), who take blocks of K shards.
    case workerJoined(WorkerID, slots: Int = 1)
    /// Any message from a registered worker; `answeredTask` for a result, even a stale or
    /// refused one, which clears a suspect if its probation shard is within the deadline.
    case workerHeard(WorkerID, answeredTask: Bool)
    /// A step begins; `shards` are those with samples (the empty ones need no worker).
    case stepStarted(step: Int, shards: [Int])
    /// The next step's batch is ready while this one runs: its tasks go out ahead.
    case nextStepReady(step: Int, shards: [Int])
    /// A result for the current step passed every check (`verdict` said `.accept` first).
    case resultAccepted(WorkerID, shard: Int)
    /// The worker's link closed, broke, or a send to it failed.
    case linkFailed(WorkerID, reason: String)
    /// Time passes: deadlines, heartbeats, late shards, the wait for workers.
    case tick
    /// The current step will not finish (a parameter service rolls back to a snapshot): no
    /// shard of it is open any more, and every worker needs new weights and tasks.
    case stepAbandoned
}

/// Why a task goes to a worker.
public enum TaskReason: Equatable, Sendable {
    /// The step's own assignment, by position over the live workers.
    case assigned
    /// Sent ahead for the next step, with the mapping that step will use.
    case prefetched
    /// Its holder was lost, or never had one.
    case reassigned
    /// Speculative: `late` still holds it, well past the usual shard time.
    case rerun(late: WorkerID)
    /// A copy of a shard a live worker holds, for a suspect to prove itself with.
    case probation
}

/// What the scheduler asks its driver to do, in order.
public enum SchedulerCommand: Equatable, Sendable {
    case sendWeights(WorkerID, step: Int)
    case sendTask(WorkerID, step: Int, shard: Int, reason: TaskReason)
    case sendHeartbeat(WorkerID, step: Int)
    /// Lost for `reason` (for the log); its shards went or will go to others.
    case declareLost(WorkerID, reason: String)
    /// A lost worker answered again and gets work from now on.
    case welcomeBack(WorkerID)
    /// Training waits for workers: report it (a warning, even under --quiet).
    case waitForWorkers(live: Int, needed: Int, waitedSeconds: Double)
    /// No worker is live: start again the workers this process spawned that have exited.
    case respawnWorkers
    /// The run cannot go on; stop with this error.
    case giveUp(reason: String)
}

/// Whether a result that arrived may be used.
public enum ResultVerdict: Equatable, Sendable {
    case accept
    /// Harmless: for a step that is over, a shard already done, or a task since given to
    /// another worker. Counted, not logged.
    case stale
    /// Wrong: the peer is confused or hostile. Counted and logged.
    case reject(reason: String)
}

/// The scheduler's view of one worker.
public struct WorkerState: Equatable, Sendable {
    public let id: WorkerID
    /// Compute processes behind its link: by position it takes this many consecutive shards.
    public internal(set) var slots = 1
    public internal(set) var isAlive = true
    /// Lost for a missed deadline: its heartbeats alone do not bring it back (a peer that
    /// only heartbeats would hold shards until the timeout every step); an answer to its
    /// probation shard within the deadline does.
    public internal(set) var isSuspect = false
    /// When its probation shard went out, while unanswered and within the deadline.
    public internal(set) var probationSince: Double?
    /// A suspect heard from since it was lost or its last probation shard expired: still
    /// there, so it gets (another) probation shard.
    public internal(set) var heardSinceLost = false
    public internal(set) var lastHeard: Double
    public internal(set) var lastSent: Double
    /// The step whose weights it holds (-1: none).
    public internal(set) var weightsStep = -1
    /// Tasks sent ahead, for `prefetchedStep`.
    public internal(set) var prefetchedStep = -1
    public internal(set) var prefetched: Set<Int> = []
    /// Shards of this step whose task it got, answered or not.
    public internal(set) var tasksThisStep: Set<Int> = []
    /// Shards of this step it holds, unanswered.
    public internal(set) var outstanding: Set<Int> = []
    /// When `outstanding` last became non-empty: the deadline runs from there.
    public internal(set) var assignedAt = 0.0
    public internal(set) var timesLost = 0
    public internal(set) var timesRejoined = 0
    /// How often a shard it held was re-run elsewhere for being late.
    public internal(set) var timesLate = 0
    /// Since when it owes the answer to a shard that was re-run elsewhere: the deadline runs
    /// on from there across steps until it answers, so a peer that never answers is still
    /// lost (and suspect) after `workerTimeoutSeconds`, however quickly the others cover for it.
    public internal(set) var lateSince: Double?

    init(id: WorkerID, now: Double) {
        self.id = id
        lastHeard = now
        lastSent = now
    }
}
