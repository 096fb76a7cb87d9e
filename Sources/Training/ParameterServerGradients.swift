import Foundation
import NeuralNet
import Wire

/// A server's gradient ranges of the step: checked, kept (a host's block for its shards),
/// and summed and applied once every shard with samples is in.
extension ParameterServer {
    /// Checks a gradient range through and through; keeps the first finite one per shard
    /// (a host's block counts for each of its shards).
    func gradientRange(_ envelope: Envelope, from identity: [UInt8]) throws {
        guard let update, let generation, let spec else { return staleMessages += 1 }
        let header = try RangeValuesHeader(envelope, parameterCount: spec.parameterCount)
        guard let report = header.report else { throw ProtocolError.unexpected(envelope.type) }
        let shards = report.shards
        // A block's sum travels in fp32: rounding it would change the tree's bits.
        let expected = shards.count > 1 ? WirePrecision.fp32 : precision
        // What is wrong in any step first, then whether it is this step's.
        guard header.range == update.range else { return reject(identity, "gradient range \(header.range), this server owns \(update.range)") }
        guard header.precision == expected else { return reject(identity, "gradient of \(report.shardsDescription) in \(header.precision), expected \(expected)") }
        guard shards.upperBound <= update.shardCount else { return reject(identity, "\(report.shardsDescription), but a step has \(update.shardCount)") }
        guard header.generation == generation, envelope.step == step else {
            if header.generation > generation || (header.generation == generation && envelope.step > step) {
                return reject(identity, "gradient for step \(envelope.step) (generation \(header.generation)); this server is at step \(step) (generation \(generation))")
            }
            return acknowledgeStale(report, step: envelope.step, generation: header.generation)
        }
        try take(report, generation: generation, refuse: { reject(identity, $0) }) { try header.decodeValues(envelope, into: $0) }
    }

    /// Keeps the first gradient range of each shard of this step (`decode` writes it and
    /// says whether every value is finite), from a message or a worker's shared segment.
    func take(_ report: ShardReport, generation: UInt32, refuse: (String) -> Void,
              decode: (UnsafeMutablePointer<Float>) throws -> Bool) throws {
        let shards = report.shards
        if let plan, let empty = shards.first(where: { !plan.nonEmpty[$0] }) {
            return refuse("shard \(empty) has no samples in step \(step)")
        }
        // A re-run: the first one counts. A block some of whose shards are here already (their
        // re-runs won the race here, maybe not at the other servers) replaces them: its node is
        // their sum along the tree, the same bits, and every server then holds every shard of
        // it, which the coordinator, told of the block by the first receipt, counts on. Aligned
        // blocks nest, so whatever is held inside it lies wholly inside it.
        guard shards.contains(where: { coveredBy[$0] == nil }) else { return acknowledgeStale(report, step: step, generation: generation) }
        let buffer = spareBuffers.popLast() ?? .allocate(capacity: bufferCount)
        let finite: Bool
        do { finite = try decode(buffer) } catch {
            spareBuffers.append(buffer)
            throw error
        }
        // A finite loss with a non-finite gradient is a broken worker: refused, and the
        // coordinator gives the shard to another. A non-finite loss is a run that diverged:
        // taken as it is, so that the coordinator stops the run with the usual error.
        guard finite || !report.lossSum.isFinite else {
            spareBuffers.append(buffer)
            refuse("NaN or infinite gradient for \(report.shardsDescription) of step \(step)")
            outbox.append(ShardVerdictMessage(generation: generation, step: step, report: report, refusal: "NaN or infinite gradient range").encode())
            return
        }
        for first in Set(shards.compactMap { coveredBy[$0] }) { release(first) }
        gradients[report.shard] = buffer
        if shards.count > 1 { blockSizes[report.shard] = shards.count }
        for shard in shards { coveredBy[shard] = report.shard }
        rangesAccepted += 1
        receipt(report, step: step, generation: generation)
        completeIfReady()
    }

    /// A late or duplicate gradient is not used, but the coordinator hears that its worker
    /// answered (its deadline for that task is met), as from a stale result.
    func acknowledgeStale(_ report: ShardReport, step: UInt64, generation: UInt32) {
        staleMessages += 1
        receipt(report, step: step, generation: generation)
    }

    /// A receipt for the coordinator, gathered with the others of its step until the round
    /// of messages that caused them ends (`inReceiptRound`) or the step is applied.
    func receipt(_ report: ShardReport, step: UInt64, generation: UInt32) {
        if let batch = receiptBatch, batch.generation != generation || batch.step != step
            || batch.reports.count == ShardReceipts.maximumReports {
            flushReceipts()
        }
        if receiptBatch == nil { receiptBatch = ShardReceipts(generation: generation, step: step, reports: []) }
        receiptBatch?.reports.append(report)
    }

    /// The receipts gathered so far into the outbox, as one message (a single one as a plain
    /// `receipt`).
    func flushReceipts() {
        guard let batch = receiptBatch else { return }
        receiptBatch = nil
        outbox.append(batch.reports.count == 1 ? batch.verdicts[0].encode() : batch.encode())
    }

    /// Runs `body` (a round of messages), then sends the receipts it caused.
    func inReceiptRound<T>(_ body: () throws -> T) rethrows -> T {
        defer { flushReceipts() }
        return try body()
    }

    /// With the plan and every shard that has samples in: the update, the next weights out,
    /// and `applied` to the coordinator.
    func completeIfReady() {
        guard let plan, let update, let generation else { return }
        for (shard, full) in plan.nonEmpty.enumerated() where full && coveredBy[shard] == nil { return }
        let start = ThreadCPUClock.now
        defer { applySeconds += ThreadCPUClock.now - start }
        update.apply(sampleCount: plan.sampleCount, gradient: { self.gradients[$0].map { UnsafePointer($0) } },
                     blockSize: { self.blockSizes[$0] ?? 1 })
        for shard in Array(gradients.keys) { release(shard) }
        self.plan = nil
        step += 1
        writeWeightsSegment(update)  // before `applied`: the coordinator copies it then
        flushReceipts()  // the step's receipts before its `applied`
        outbox.append(GenerationMessage.encode(.applied, step: step - 1, generation: generation))
        stepsApplied += 1
        sendWeights(update, generation: generation, to: Array(admitted))
    }

    /// The shards a held gradient keyed `first` covers.
    func shards(from first: Int) -> Range<Int> { first..<(first + (blockSizes[first] ?? 1)) }

    /// Lets go of the gradient keyed `first` (a shard's or a block's).
    func release(_ first: Int) {
        for shard in shards(from: first) { coveredBy[shard] = nil }
        blockSizes[first] = nil
        if let buffer = gradients.removeValue(forKey: first) { spareBuffers.append(buffer) }
    }
}
