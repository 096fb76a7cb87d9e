import NeuralNet
import Wire

/// Where a batch's shard gradient sums come from: computed in this process, or by workers.
/// The training step is the same either way; only this differs.
public protocol ShardGradientSource: AnyObject {
    /// Fills `results` with every shard's gradient sum of `batch` at `model`'s parameters.
    /// `next` builds the following step's batch (nil at the end of the run); a remote source
    /// calls it once this step's work is out, so the batch is gathered and its samples
    /// shipped while the workers compute.
    func computeShards(step: Int, model: Sequential, batch: BatchView, next: () -> BatchView?, results: ShardResults) throws
    /// Time spent so far, by phase.
    var timing: StepTiming { get }
    /// Workers currently computing (1 for a local source).
    var liveWorkerCount: Int { get }
    /// How weights and gradients are rounded on their way (it decides the weights, so a
    /// checkpoint records it).
    var precision: WirePrecision { get }
    /// Where the trainer may build the batch of `step` so that the source need not copy it
    /// (the coordinator's shared batch slot); nil: anywhere.
    func batchBuffer(forStep step: Int) -> SharedBuffer?

    /// Whether the source applies each step's update itself (a parameter service): the
    /// trainer then skips its own sum, L2 and optimizer step, counts the iteration only, and
    /// brings the state home (`bringHome`) before it evaluates, checkpoints or finishes.
    var appliesUpdates: Bool { get }
    /// For a source that applies updates: the state to continue from, at the start and
    /// after a rollback.
    func seed(from checkpoint: Checkpoint) throws
    /// For a source that applies updates: the parameters and optimizer state as of `step`,
    /// into `model` and `optimizer`. May throw `ParameterServiceRollback`.
    func bringHome(step: Int, into model: Sequential, optimizer: inout Optimizer) throws
}

extension ShardGradientSource {
    public func batchBuffer(forStep step: Int) -> SharedBuffer? { nil }
    public var appliesUpdates: Bool { false }
    public func seed(from checkpoint: Checkpoint) throws {}
    public func bringHome(step: Int, into model: Sequential, optimizer: inout Optimizer) throws {}
}

/// Thrown by a source that applies updates when it lost state it cannot rebuild alone (a
/// parameter server): the trainer goes back to its last snapshot, seeds the source from it
/// and replays the steps since, which gives the same bits.
public struct ParameterServiceRollback: Error, CustomStringConvertible {
    public let reason: String
    public init(reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Seconds spent per phase of the steps so far, summed over the steps.
public struct StepTiming: Sendable, Codable, Equatable {
    /// Forward and backward passes (for workers: the slowest worker of each step).
    public var computeSeconds: Double = 0
    /// Encoding and handing messages to ZeroMQ.
    public var sendSeconds: Double = 0
    /// Waiting for results beyond the workers' own compute time.
    public var networkWaitSeconds: Double = 0
    /// Decoding, checking and copying results.
    public var receiveSeconds: Double = 0
    /// Adding the shard sums.
    public var reduceSeconds: Double = 0
    /// The SGD update.
    public var optimizerSeconds: Double = 0
    /// Gathering the batch's samples.
    public var batchSeconds: Double = 0
    /// CPU time of the thread that ran the steps, over the steps alone (no evaluation,
    /// snapshot or checkpoint; `ThreadCPUClock`): for a coordinator its serial work per step
    /// as it would be with a core of its own (busy-waiting included).
    public var threadCPUSeconds: Double = 0

    public init() {}
}

/// Computes every shard in this process, on the trainer's own model: `--local`, and the
/// reference that distributed runs are compared with.
///
/// With a 16-bit `precision` it rounds the weights and each shard's gradient exactly as a
/// trip over the wire would, so it computes the same bits as workers do.
public final class LocalShardSource: ShardGradientSource {
    public private(set) var timing = StepTiming()
    public let liveWorkerCount = 1
    public let precision: WirePrecision
    private var roundedReplica: Sequential?

    public init(precision: WirePrecision = .fp32) {
        self.precision = precision
    }

    public func computeShards(step: Int, model: Sequential, batch: BatchView, next: () -> BatchView?,
                              results: ShardResults) throws {
        let start = MonotonicClock.now
        var replica = model
        if precision != .fp32 {
            if roundedReplica == nil { roundedReplica = Sequential(spec: model.spec, parameters: model.parameters) }
            replica = roundedReplica!
            replica.dropout = model.dropout
            replica.parameters = model.parameters
            let count = replica.parameters.count
            replica.parameters.withUnsafeMutableBufferPointer { precision.round($0.baseAddress!, count: count) }
        }
        results.reset()
        for shard in 0..<results.shardCount {
            let rows = batch.sampleCount(ofShard: shard)
            let statistics: BatchStatistics
            if rows == 0 {
                results.gradient(shard).update(repeating: 0, count: results.parameterCount)
                statistics = BatchStatistics()
            } else {
                statistics = replica.computeGradientSum(pixels: batch.pixels(ofShard: shard),
                                                        labels: batch.labels(ofShard: shard),
                                                        rows: rows, gradient: results.gradient(shard),
                                                        dropoutKey: Dropout.key(step: UInt64(step), shard: UInt32(shard)))
            }
            precision.round(results.gradient(shard), count: results.parameterCount)
            results.complete(shard, statistics: statistics)
        }
        timing.computeSeconds += MonotonicClock.now - start
    }
}

/// CPU seconds the calling thread has run: its own work, whatever other processes took its
/// core meanwhile (on a machine with fewer cores than processes, wall time counts that too).
public enum ThreadCPUClock {
    public static var now: Double {
        var spec = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) * 1e-9
    }
}

/// Seconds from a monotonic clock.
public enum MonotonicClock {
    public static var now: Double {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) * 1e-9
    }
}

#if canImport(Glibc)
import Glibc
#endif
