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

    /// While the host's processes compute, what the agent's loop does that reads no message
    /// (the messages wait for the loop): a heartbeat upstream when nothing went there for
    /// `heartbeatSeconds`, exactly as the loop sends one, so a long step does not look like
    /// a silent host; and this host's parameter server, if it serves, kept serving. A
    /// message waiting on the socket is word from the coordinator all the same: a step
    /// longer than `--coordinator-timeout` does not make the host say hello again.
    func keepUpstreamAlive() throws {
        if let parameterServer {
            parameterServer.drain()
            try flushServerOutbox()
        }
        let now = MonotonicClock.now
        if now - lastSent > heartbeatSeconds, try send(Heartbeat.encode(), what: "a heartbeat") {
            heartbeatsWhileComputing += 1
        }
        // Through the pipe too, when the coordinator shares this host (its end closing reads
        // as input as well: the loop finds out at once after the step).
        let waiting = try WorkerFailure.during("polling the coordinator's socket") { try socket.waitForInput(timeoutMilliseconds: 0) }
        if waiting || (pipesActive && fromCoordinator?.hasInput == true) { lastHeard = now }
    }

    /// One group on the host's processes, answered with one gradient: a block's sum in fp32,
    /// one shard's gradient in the run's precision (as any worker's). To the coordinator as
    /// one result; to a parameter service as one range per server, for the whole group.
    private func computeOnHost(_ group: [ValidatedTask], step: UInt64, model: Sequential, host: HostCompute) throws {
        let start = MonotonicClock.now
        let results = try host.compute(group, step: step, model: model) { [unowned self] in try keepUpstreamAlive() }
        let microseconds = UInt64(min((MonotonicClock.now - start) * 1e6, Double(WireLimits.computeMicroseconds.upperBound)))
        tasksDone += group.count
        let count = model.spec.parameterCount
        let resultPrecision = group.count > 1 ? WirePrecision.fp32 : precision
        let gradient = SharedBuffer(byteCount: count * resultPrecision.bytesPerValue)
        resultPrecision.encode(results.reduce(), count: count, into: gradient.pointer)
        let statistics = results.batchStatistics
        let first = Int(group[0].header.shard)
        if !serverLinks.isEmpty {
            let report = ShardReport(shard: first, worker: workerIndex, sampleCount: statistics.sampleCount,
                                     lossSum: statistics.lossSum, correctCount: statistics.correctCount,
                                     computeMicroseconds: Int(microseconds), blockCount: group.count)
            return try sendGradientRanges(step: step, report: report, gradient: gradient, rangePrecision: resultPrecision)
        }
        var result = ResultHeader(shard: group[0].header.shard, sampleCount: UInt32(statistics.sampleCount),
                                  lossSum: statistics.lossSum, correctCount: UInt32(statistics.correctCount),
                                  parameterCount: UInt32(count), precision: resultPrecision, computeMicroseconds: microseconds)
        result.blockCount = UInt32(group.count)
        try send(result.encode(step: step, gradient: gradient), what: "the result of step \(step) shards \(result.shards)")
    }
}
