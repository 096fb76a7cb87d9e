import Foundation
import NeuralNet
import Wire

/// Computing a checked task and sending its result: the gradient sum goes into a slot of
/// our shared segment or a zero-copy buffer of the pool. Nothing here can fail on what the
/// coordinator sent; only sending can fail, as this worker's `WorkerFailure`.
extension WorkerNode {
    func compute(_ task: ValidatedTask) throws {
        guard let model else { return }
        if host != nil { return queueForHost(task) }
        let start = MonotonicClock.now
        resultSentAt = nil
        let count = model.spec.parameterCount
        // Our segment whenever the step's weights came through shared memory (with parameter
        // servers too: they read it there); the servers' sockets when they sent the weights.
        let sharedSlot = takeSharedSlot(forStep: task.step)
        let gradient = sharedSlot == nil ? gradientPool.take() : nil
        let output = sharedSlot.map { gradientSegment!.slot($0) } ?? gradient!.pointer
        let statistics = computeGradientSum(task, model: model, into: output)
        let result = ResultHeader(shard: task.header.shard, sampleCount: task.header.sampleCount, lossSum: statistics.lossSum,
                                  correctCount: UInt32(statistics.correctCount),
                                  parameterCount: UInt32(count), precision: precision,
                                  computeMicroseconds: UInt64(min((MonotonicClock.now - start) * 1e6,
                                                                  Double(WireLimits.computeMicroseconds.upperBound))),
                                  sharedSlot: sharedSlot)
        let what = "the result of step \(task.step) shard \(task.header.shard)"
        if !serverLinks.isEmpty && !sharedActive, let gradient {
            let report = ShardReport(shard: Int(result.shard), worker: workerIndex, sampleCount: Int(result.sampleCount),
                                     lossSum: result.lossSum, correctCount: Int(result.correctCount),
                                     computeMicroseconds: Int(result.computeMicroseconds))
            try sendGradientRanges(step: task.step, report: report, gradient: gradient)
        } else if let gradient {
            try send(result.encode(step: task.step, gradient: gradient), what: what)
        } else {
            try send(result.encodeShared(step: task.step), what: what)
        }
        resultSentAt = MonotonicClock.now
        tasksDone += 1
        if case .gathered = task.samples { tasksGathered += 1 }
    }

    /// This step's n-th result goes to slot n of our segment; the coordinator reads it when
    /// the result message arrives, before it sends the next step's weights. Beyond the
    /// slots, and whenever the coordinator sends weights by socket, the socket carries it
    /// (nil).
    private func takeSharedSlot(forStep step: UInt64) -> Int? {
        if resultStep != step {
            resultStep = step
            resultsInStep = 0
        }
        defer { resultsInStep += 1 }
        guard sharedActive, let segment = gradientSegment, resultsInStep < segment.info.slotCount else { return nil }
        return resultsInStep
    }

    /// Forward and backward over the task's samples (scaled ahead when they were prepared),
    /// the gradient sum written to `output` in the wire precision.
    private func computeGradientSum(_ task: ValidatedTask, model: Sequential,
                                    into output: UnsafeMutableRawPointer) -> BatchStatistics {
        let rows = task.rows
        let count = model.spec.parameterCount
        let dropoutKey = Dropout.key(step: task.step, shard: task.header.shard)
        let prepared = preparedInput.flatMap { $0.step == task.step && $0.shard == task.header.shard ? $0.input : nil }
        preparedInput = nil  // the workspace is this task's now
        let labels = UnsafePointer(labelBuffer.pointer.assumingMemoryBound(to: UInt8.self))
        let input = prepared ?? task.withPixels { model.scaleInput(pixels: $0, rows: rows) }
        if precision == .fp32 {
            return model.computeGradientSum(input: input, labels: labels, rows: rows,
                                            gradient: output.bindMemory(to: Float.self, capacity: count),
                                            dropoutKey: dropoutKey)
        }
        return gradientScratch.withUnsafeMutableBufferPointer { scratch in
            let statistics = model.computeGradientSum(input: input, labels: labels, rows: rows,
                                                      gradient: scratch.baseAddress!, dropoutKey: dropoutKey)
            precision.encode(scratch.baseAddress!, count: count, into: output)
            return statistics
        }
    }
}
