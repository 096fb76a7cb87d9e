import Wire

/// What the coordinator knows about one connected worker.
final class WorkerPeer {
    let identity: [UInt8]
    let name: String
    let index: Int
    var isAlive = true
    /// It was lost for letting a deadline pass with shards in hand: its heartbeats alone do
    /// not bring it back (a peer that only heartbeats would hold shards until the timeout
    /// every step); an answer to a task does.
    var missedDeadline = false
    var lastHeard: Double
    var lastSent: Double
    /// The step whose weights this worker holds (-1: none yet).
    var weightsStep = -1
    /// The step whose shards `prefetched` lists: tasks sent ahead, before that step's weights.
    var prefetchedStep = -1
    var prefetched: Set<Int> = []
    /// Shards of the current step whose task this worker got (sent ahead, or at the step's
    /// start), answered or not: its result for one that went to another worker meanwhile
    /// (after a loss, say) is stale, not wrong.
    var tasksThisStep: Set<Int> = []
    /// Shards of the current step handed to this worker and not answered yet.
    var outstanding: Set<Int> = []
    var assignedAt = 0.0
    /// Compute time the worker reported for the current step.
    var stepComputeSeconds = 0.0
    var lastStepCounted = -1
    /// The worker's own segment, where it leaves its gradients (same host only).
    var gradientSegment: SharedSegment?
    /// Its pipes (same host only): small messages to it and from it, past the socket.
    var toWorker: PipeChannel?
    var fromWorker: PipeChannel?
    /// The CPU it is pinned to, on this host.
    var cpu: Int?

    var shardsDone = 0
    var stepsDone = 0
    var computeSeconds = 0.0
    var timesLost = 0
    var timesRejoined = 0

    init(identity: [UInt8], name: String, index: Int, now: Double) {
        self.identity = identity
        self.name = name
        self.index = index
        self.lastHeard = now
        self.lastSent = now
    }

    /// It shares this host: it attached a segment of its own, so it gets weights, batches
    /// and gradients through shared memory.
    var isOnThisHost: Bool { gradientSegment != nil }

    /// Forgets its shared memory and pipes (it starts a new session, or broke them).
    func detach() {
        gradientSegment = nil
        toWorker = nil
        fromWorker = nil
        cpu = nil
    }

    /// Forgets what it was sent in its last session: a worker that says hello again starts
    /// with no weights and drops the tasks it held or had been sent ahead.
    func forgetSession() {
        weightsStep = -1
        outstanding = []
        prefetched = []
        prefetchedStep = -1
    }

    var summary: WorkerSummary {
        WorkerSummary(name: name, shardsDone: shardsDone, stepsDone: stepsDone,
                      meanComputeMilliseconds: shardsDone == 0 ? 0 : computeSeconds / Double(shardsDone) * 1000,
                      timesLost: timesLost, timesRejoined: timesRejoined)
    }
}

/// A peer's routing id as text for log lines (printable ASCII ids as they are, others in hex).
func describe(identity: [UInt8]) -> String {
    if !identity.isEmpty, identity.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) { return String(decoding: identity, as: UTF8.self) }
    return "0x" + identity.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
