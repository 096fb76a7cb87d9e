import Foundation
import NeuralNet
import Wire

/// A host agent's tasks (`worker --processes K`): checked as any worker's, then grouped
/// into aligned blocks of shards, each computed by the host's processes (`HostCompute`) and
/// answered with one result.
extension WorkerNode {
    /// How long the rest of a block may lag behind its first task before the tasks that
    /// came go out in smaller groups (the coordinator sends a block's tasks back to back;
    /// shards it reassigns come one by one).
    static let blockGraceSeconds = 0.02

    /// Starts this host's processes for a new session, or keeps those of the last one when
    /// they compute the same model the same way.
    func startHostProcesses(for welcome: Welcome) throws {
        hostTasks = []
        guard options.processes > 1 else { return }
        if let host, host.serves(welcome) { return }
        host?.stop(reason: "a new session with another model")
        host = nil
        host = try WorkerFailure.during("starting this host's compute processes") {
            try HostCompute(processes: options.processes, welcome: welcome, name: options.name,
                            logLevel: options.processLogLevel, logger: logger)
        }
    }

    /// A checked task of the step whose weights we hold waits for its block.
    func queueForHost(_ task: ValidatedTask) {
        hostTasks.removeAll { $0.step == task.step && $0.header.shard == task.header.shard }
        hostTasks.append(task)
        lastHostTaskAt = MonotonicClock.now
    }

    /// Keeps the host's processes served, and computes every whole block of waiting tasks;
    /// once no task came for `blockGraceSeconds`, the rest too, in the largest aligned
    /// groups they form.
    func runHostTasks() throws {
        guard let host else { return }
        host.pump()
        guard let model, let step = weightsStep else { return }
        hostTasks.removeAll { $0.step != step }
        guard !hostTasks.isEmpty else { return }
        let largest = host.processes
        let late = MonotonicClock.now - lastHostTaskAt > Self.blockGraceSeconds
        for group in Self.groups(of: hostTasks, largest: largest) where group.count == largest || late {
            let shards = Set(group.map(\.header.shard))
            hostTasks.removeAll { shards.contains($0.header.shard) }
            try computeOnHost(group, step: step, model: model, host: host)
        }
    }

    /// The tasks in shard order, cut left to right into the largest aligned blocks (up to
    /// `largest` shards) of consecutive shards that lay out as one batch.
    static func groups(of tasks: [ValidatedTask], largest: Int) -> [[ValidatedTask]] {
        let sorted = tasks.sorted { $0.header.shard < $1.header.shard }
        var groups: [[ValidatedTask]] = []
        var index = 0
        while index < sorted.count {
            let first = Int(sorted[index].header.shard)
            var size = largest
            while size > 1 {
                let candidate = sorted[index..<min(sorted.count, index + size)]
                if first % size == 0, candidate.count == size, HostCompute.formsBatch(Array(candidate)) { break }
                size /= 2
            }
            groups.append(Array(sorted[index..<index + size]))
            index += size
        }
        return groups
    }

    /// One group on the host's processes, answered upstream: to the coordinator a block's
    /// sum in fp32, one shard's gradient in the run's precision (as any worker's); to a
    /// parameter service each shard's gradient ranges, as any worker sends them.
    private func computeOnHost(_ group: [ValidatedTask], step: UInt64, model: Sequential, host: HostCompute) throws {
        let start = MonotonicClock.now
        let results = try host.compute(group, step: step, model: model)
        let microseconds = UInt64(min((MonotonicClock.now - start) * 1e6, Double(WireLimits.computeMicroseconds.upperBound)))
        tasksDone += group.count
        if !serverLinks.isEmpty {
            return try sendShardRanges(of: results, first: Int(group[0].header.shard), step: step,
                                       microseconds: Int(microseconds) / group.count)
        }
        let count = model.spec.parameterCount
        let resultPrecision = group.count > 1 ? WirePrecision.fp32 : precision
        let gradient = SharedBuffer(byteCount: count * resultPrecision.bytesPerValue)
        resultPrecision.encode(results.reduce(), count: count, into: gradient.pointer)
        let statistics = results.batchStatistics
        var result = ResultHeader(shard: group[0].header.shard, sampleCount: UInt32(statistics.sampleCount),
                                  lossSum: statistics.lossSum, correctCount: UInt32(statistics.correctCount),
                                  parameterCount: UInt32(count), precision: resultPrecision, computeMicroseconds: microseconds)
        result.blockCount = UInt32(group.count)
        try send(result.encode(step: step, gradient: gradient), what: "the result of step \(step) shards \(result.shards)")
    }

    /// With a parameter service: each shard's gradient, in the run's precision, as ranges to
    /// the servers (they add the shards along the tree themselves; a host does not pre-sum
    /// its block for them yet).
    private func sendShardRanges(of results: ShardResults, first: Int, step: UInt64, microseconds: Int) throws {
        let count = results.parameterCount
        for index in 0..<results.shardCount {
            // The sum was checked finite, so every shard is; the copy is this process's own.
            _ = results.copyInPlaceGradient(index)
            guard let statistics = results.statistics[index] else { continue }
            let gradient = SharedBuffer(byteCount: count * precision.bytesPerValue)
            precision.encode(results.gradient(index), count: count, into: gradient.pointer)
            let report = ShardReport(shard: first + index, worker: workerIndex, sampleCount: statistics.sampleCount,
                                     lossSum: statistics.lossSum, correctCount: statistics.correctCount,
                                     computeMicroseconds: microseconds)
            try sendGradientRanges(step: step, report: report, gradient: gradient)
        }
    }
}
