import Foundation
import NeuralNet
import Wire

public struct CoordinatorOptions: Sendable {
    /// ZeroMQ endpoint to bind, e.g. `tcp://127.0.0.1:5555` (`*` as port picks a free one).
    public var bindEndpoint = "tcp://127.0.0.1:5555"
    /// Workers to wait for before the first step.
    public var expectedWorkers = 1
    /// Membership, deadlines, heartbeats, re-runs and the wait for workers: the scheduler's.
    public var scheduling = SchedulerSettings()
    /// How long to wait for `expectedWorkers` at start-up.
    public var startupTimeoutSeconds = 120.0
    /// Precision of weights and gradients on the wire.
    public var precision = WirePrecision.fp32
    /// The run's dropout, which the workers must apply exactly as `--local` would.
    public var dropout: Dropout?
    /// Offer workers on this host a shared-memory path for weights and gradients; the
    /// socket still carries every message, only the bulk values move through memory.
    public var sharedMemory = true
    /// While workers on this host finish a step, how long to poll for their results on the
    /// CPU the first one freed before sleeping (see `sendNextBatchAheadAndAwaitTheRest`).
    public var busyWaitSeconds = 0.001
    /// The largest batch, in samples: sizes the shared batch slots (0: no batch segment, the
    /// samples travel in the tasks even on this host).
    public var batchSlotSamples = 0
    /// CURVE: this coordinator's secret key and the public keys of the workers it admits.
    /// Without them, traffic is plain text and anyone who reaches the port may join.
    public var curveSecretKey: String?
    public var authorizedKeys: Set<String> = []
    /// The secret every hello must prove: fresh for each run unless set (hand it to the
    /// workers, see `RunSecret`).
    public var runSecret = RunSecret.generate()
    /// `Dataset.contentSHA256` of the training set as this run uses it: a worker whose hello
    /// carries the same digest gets sample indices instead of samples (nil: every worker
    /// gets samples).
    public var trainingSetDigest: [UInt8]?
    /// Serving workers that own the parameters and the optimizer, one range each (0: the
    /// coordinator updates everything itself).
    public var parameterServers = 0
    /// Shards per step (`--shards`): what one worker's queue must hold (`sendQueueMessages`).
    public var shardCount = 1

    public init() {}

}

public enum CoordinatorError: Error, CustomStringConvertible {
    case workersDidNotArrive(expected: Int, arrived: Int, seconds: Double)
    /// The scheduler's give-up: no workers for too long.
    case gaveUp(reason: String)

    public var description: String {
        switch self {
        case let .workersDidNotArrive(expected, arrived, seconds):
            "only \(arrived) of \(expected) workers connected within \(Int(seconds)) s; start workers with `worker --connect ENDPOINT`, or raise --startup-timeout"
        case let .gaveUp(reason):
            reason
        }
    }
}
