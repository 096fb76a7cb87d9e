import Foundation
import Logging
import MNISTData
import NeuralNet
import Wire

/// The compute of a host agent (`worker --processes K`): K worker processes on this host
/// behind the agent's one link upstream.
///
/// The agent is an ordinary `WorkerNode` upstream (hello with K slots, run secret, CURVE,
/// tasks, heartbeats); here it hands a group of its tasks to a `CoordinatorServer` of its
/// own, bound on loopback, whose K spawned children (parent-PID watch, run secret in their
/// environment, CURVE not needed on loopback) take the weights and samples through its
/// shared memory and pipes as workers on a coordinator's host always do. That server's
/// `ShardResults` over the group's k shards then sum them along `ShardTree`: for an aligned
/// block, exactly the block's subtree of the run's tree, sent upstream as one fp32 result.
final class HostCompute {
    let processes: Int
    let spec: ModelSpec
    let precision: WirePrecision
    let dropout: Dropout?
    private let server: CoordinatorServer
    private let spawner = WorkerSpawner()
    private let logger: Logger
    /// Results by group size, made once each.
    private var resultsBySize: [Int: ShardResults] = [:]

    init(processes: Int, welcome: Welcome, name: String, logLevel: String, logger: Logger) throws {
        self.processes = processes
        spec = welcome.spec
        precision = welcome.precision
        dropout = welcome.dropout
        self.logger = logger
        var options = CoordinatorOptions()
        options.bindEndpoint = "tcp://127.0.0.1:0"
        options.expectedWorkers = processes
        options.precision = welcome.precision  // the children round exactly as one worker would
        options.dropout = welcome.dropout
        options.scheduling.minimumWorkers = 1
        options.scheduling.heartbeatSeconds = 0.5
        options.batchSlotSamples = Self.batchSlotSamples
        server = try CoordinatorServer(options: options, spec: welcome.spec, logger: logger)
        try spawner.spawn(count: processes, endpoint: server.endpoint,
                          extraArguments: ["--log-level", logLevel, "--coordinator-timeout", "5"],
                          runSecret: options.runSecret)
        server.respawnExitedWorkers = { [spawner] in spawner.respawnExited() }
        logger.notice("\(name): \(processes) compute processes on this host behind one link (local coordinator at \(server.endpoint))")
    }

    /// Samples of a group that fit the local shared batch slots; a larger group's samples
    /// go through the local sockets.
    static let batchSlotSamples = 8192

    /// Whether this agent's processes can compute for a session welcomed with `welcome`.
    func serves(_ welcome: Welcome) -> Bool {
        welcome.spec == spec && welcome.precision == precision && welcome.dropout == dropout
    }

    /// Keeps the local links alive between steps: admits (re)started children, answers
    /// their heartbeats, replaces exited ones.
    func pump() {
        do { try server.pump(timeoutMilliseconds: 0) } catch { logger.warning("local coordinator: \(error)") }
        server.apply(.tick)
        if spawner.processes.contains(where: { !$0.isRunning }), spawner.respawnExited() > 0 {
            logger.warning("restarted a compute process of this host that had exited")
        }
    }

    /// Computes `tasks` (of one step, consecutive shards, an aligned block when more than
    /// one) on the local processes at `model`'s weights: the group's results, complete, whose
    /// `reduce()` is the group's sum in `ShardTree` order. Valid until the next call.
    /// `meanwhile` runs at every turn of the wait (the agent's heartbeats upstream).
    func compute(_ tasks: [ValidatedTask], step: UInt64, model: Sequential,
                 meanwhile: @escaping () throws -> Void) throws -> ShardResults {
        let batch = Self.batch(of: tasks, featureCount: spec.inputSize)
        if resultsBySize[tasks.count] == nil {
            resultsBySize[tasks.count] = ShardResults(shardCount: tasks.count, parameterCount: spec.parameterCount)
        }
        let results = resultsBySize[tasks.count]!
        server.whileWaitingForResults = meanwhile
        defer { server.whileWaitingForResults = nil }
        try WorkerFailure.during("computing shards \(batch.firstShard)..<\(batch.firstShard + tasks.count) on this host's processes") {
            try server.computeShards(step: Int(step), model: model, batch: batch, next: { nil }, results: results)
        }
        return results
    }

    /// Whether `tasks` can be laid out as one batch of their shards: consecutive shards whose
    /// sizes split their total as `shardRange` does (the run's shards of an aligned block
    /// always do).
    static func formsBatch(_ tasks: [ValidatedTask]) -> Bool {
        guard let first = tasks.first else { return false }
        let total = tasks.reduce(0) { $0 + $1.rows }
        return tasks.enumerated().allSatisfy { index, task in
            Int(task.header.shard) == Int(first.header.shard) + index
                && shardRange(index, of: tasks.count, batchSize: total).count == task.rows
        }
    }

    /// The group's samples, shard after shard (labels, then pixels), numbered as the run
    /// numbers them.
    private static func batch(of tasks: [ValidatedTask], featureCount: Int) -> BatchView {
        let total = tasks.reduce(0) { $0 + $1.rows }
        let buffer = SharedBuffer(byteCount: max(1, total * (featureCount + 1)))
        var offset = 0
        for task in tasks {
            let bytes = task.rows * (featureCount + 1)
            task.withSamples { (buffer.pointer + offset).copyMemory(from: $0, byteCount: bytes) }
            offset += bytes
        }
        var batch = BatchView(buffer: buffer, sampleCount: total, featureCount: featureCount, shardCount: tasks.count,
                              sampleIndices: nil)
        batch.firstShard = Int(tasks[0].header.shard)
        return batch
    }

    /// Ends the children: told to shut down, then waited for (killed after a grace).
    func stop(reason: String) {
        server.shutdownWorkers(reason: reason)
        spawner.waitForExit(graceSeconds: 2)
    }
}
