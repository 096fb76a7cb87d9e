import Foundation
import Logging
import NeuralNet
import Wire

/// A parameter server on its coordinator's host (`sharesHost`): bulk values stay in shared
/// memory. Each worker's gradient stays in that worker's own sealed segment, where the
/// coordinator says it is (`ShardsInSegments`); the server reads its range of it there. The
/// range's new weights go into a sealed segment of the server's own (two slots by step
/// parity), which the coordinator copies into its weights slot for the workers on this host.
///
/// Why the workers' segments and not one board the coordinator owns: a board slot would be
/// written by whichever worker computes the shard, a re-run or late copy included, while a
/// server reads it; a worker's own segment is written only by that worker, for its own
/// results, and a step's slots are written again only once every server applied the step.
/// Everything read from a segment is checked as a message would be: its layout against the
/// model, sealed against shrinking before it is mapped, the slot and range inside it, and
/// every value finite.
extension ParameterServer {
    /// Gradient segments kept open at once (a run has one per worker on this host).
    static let maximumOpenSegments = 1024
    /// Steps a gradient segment stays open unused: a lost worker's, or one a respawned worker
    /// replaced, is closed (unmapped) after these; a live worker idle longer is opened again.
    static let maximumIdleSegmentSteps: UInt64 = 16

    /// Once per step: the segments unused for `maximumIdleSegmentSteps`, or last used in a
    /// step past this one (before a rollback), closed.
    private func closeIdleGradientSegments() {
        guard gradientSegmentsSweptAt != step else { return }
        gradientSegmentsSweptAt = step
        gradientSegments = gradientSegments.filter { _, open in
            open.lastStep <= step && step - open.lastStep <= Self.maximumIdleSegmentSteps
        }
    }

    /// After an assignment: the seed's weights into our segment's slot of its step, and the
    /// segment offered to the coordinator. Without it the weights go through the socket only.
    func offerWeightsSegment(_ update: RangeUpdate, generation: UInt32) {
        let byteCount = update.range.count * precision.bytesPerValue
        do {
            if weightsSegment?.info.slotBytes != byteCount {
                weightsSegment = try SharedSegment(slotCount: 2, slotBytes: byteCount, sealed: true)
            }
            guard let segment = weightsSegment, segment.cannotShrink else {
                throw SharedSegmentError(name: weightsSegment?.info.name ?? "", reason: "memfd sealing is not available")
            }
            writeWeightsSegment(update)
            outbox.append(RangeSegmentMessage(generation: generation, step: step, range: update.range, segment: segment.info).encode())
        } catch {
            weightsSegment = nil
            logger.notice("parameter server: no shared memory for the weights (\(error)); they go through the socket")
        }
    }

    /// The range's weights of `step` into the slot of its parity.
    func writeWeightsSegment(_ update: RangeUpdate) {
        guard let weightsSegment else { return }
        update.parameters.withUnsafeBufferPointer {
            precision.encode($0.baseAddress!, count: $0.count, into: weightsSegment.slot(Int(step % 2)))
        }
    }

    /// Workers' gradients of shards in their segments: the message checked as a whole first
    /// (every shard of a step, the step not ahead of ours), then each checked as a gradient
    /// range is and our range of it read from the mapping. A segment that fails its checks
    /// is that worker's fault: refused (the coordinator gives the shard to another).
    func shardsInSegments(_ message: ShardsInSegments) throws {
        guard let update, let generation, let spec else { return staleMessages += 1 }
        if let report = message.entries.first(where: { $0.report.shards.upperBound > update.shardCount })?.report {
            throw ProtocolError.malformed(.shardsInSegments, "\(report.shardsDescription), but a step has \(update.shardCount)")
        }
        // A host's block sum travels in fp32 and only by socket (its agent shares no memory).
        if let report = message.entries.first(where: { $0.report.blockCount != 1 })?.report {
            throw ProtocolError.malformed(.shardsInSegments, "\(report.shardsDescription) as one block in shared memory")
        }
        guard message.generation == generation, message.step == step else {
            if message.generation > generation || (message.generation == generation && message.step > step) {
                throw ProtocolError.malformed(.shardsInSegments, "step \(message.step) (generation \(message.generation)); this server is at step \(step) (generation \(generation))")
            }
            return inReceiptRound {
                for entry in message.entries { acknowledgeStale(entry.report, step: message.step, generation: message.generation) }
            }
        }
        closeIdleGradientSegments()
        try inReceiptRound { try takeEntries(of: message, update: update, generation: generation, parameterCount: spec.parameterCount) }
    }

    private func takeEntries(of message: ShardsInSegments, update: RangeUpdate, generation: UInt32, parameterCount: Int) throws {
        for entry in message.entries {
            // The step may complete with an entry before the last (the rest are re-runs).
            guard message.step == step else {
                acknowledgeStale(entry.report, step: message.step, generation: generation)
                continue
            }
            try shardInSegment(entry, update: update, generation: generation, parameterCount: parameterCount)
        }
    }

    private func shardInSegment(_ entry: ShardsInSegments.Entry, update: RangeUpdate, generation: UInt32, parameterCount: Int) throws {
        let report = entry.report
        let values: UnsafeRawPointer
        do {
            values = try mappedGradientRange(entry, range: update.range, parameterCount: parameterCount)
        } catch {
            noteRefusedSegment(report, "\(error)")
            outbox.append(ShardVerdictMessage(generation: generation, step: step, report: report, refusal: "\(error)").encode())
            return
        }
        try take(report, generation: generation, refuse: { noteRefusedSegment(report, $0) }) { buffer in
            // Part of this server's serial work (the socket path's decode happens as messages come).
            let start = ThreadCPUClock.now
            defer { applySeconds += ThreadCPUClock.now - start }
            return precision.decode(values, count: update.range.count, into: buffer)
        }
    }

    /// Our range of the slot the message names, mapped read-only from the worker's segment
    /// (opened once, and only if it is exactly a gradient's layout and sealed).
    private func mappedGradientRange(_ message: ShardsInSegments.Entry, range: ParameterRange, parameterCount: Int) throws -> UnsafeRawPointer {
        let info = message.segment
        // parameterCount ≤ WireLimits.maximumParameters: these products fit.
        let gradientBytes = parameterCount * precision.bytesPerValue
        guard info.slotBytes == gradientBytes else {
            throw SharedSegmentError(name: info.name, reason: "slots of \(info.slotBytes) bytes; a gradient here is \(gradientBytes)")
        }
        let segment: SharedSegment
        if let open = gradientSegments[info.name], open.segment.info == info {
            segment = open.segment
        } else {
            if gradientSegments.count >= Self.maximumOpenSegments { gradientSegments = [:] }
            let opened = try SharedSegment(opening: info)
            // A segment that can shrink would fault this process where it is mapped.
            guard opened.cannotShrink else { throw SharedSegmentError(name: info.name, reason: "not sealed against shrinking") }
            segment = opened
        }
        gradientSegments[info.name] = OpenGradientSegment(segment: segment, lastStep: step)
        return try segment.mapped(slot: message.slot, offset: range.lower * precision.bytesPerValue,
                                  byteCount: range.count * precision.bytesPerValue)
    }

    /// Counted; the first refusal per worker logged, naming it.
    private func noteRefusedSegment(_ report: ShardReport, _ reason: String) {
        rejectedMessages += 1
        guard loggedSegmentWorkers.insert(report.worker).inserted else { return }
        logger.warning("parameter server: refused worker #\(report.worker)'s gradient of shard \(report.shard) in shared memory: \(escapedForLog(reason, maximumLength: 400)) (further refusals for it are counted, not logged)")
    }
}

extension ParameterServer {
    /// Messages held for an assignment, at most (older ones are dropped first).
    static let maximumHeldMessages = 4096

    /// Holds a message of a generation newer than the one served (or of any, before the
    /// first assignment); true if held.
    func overtookItsAssignment(_ envelope: Envelope) -> Bool {
        guard let incoming = envelope.leadingGeneration, generation.map({ incoming > $0 }) ?? true else { return false }
        heldForAssignment.append(envelope)
        if heldForAssignment.count > Self.maximumHeldMessages { heldForAssignment.removeFirst() }
        return true
    }

    /// After an assignment: the messages that came ahead of it, in order; those of a
    /// generation still newer wait on, the others are handled (what fails is counted).
    func handleHeldMessages() {
        let held = heldForAssignment
        heldForAssignment = []
        for envelope in held {
            do { try handleFromCoordinator(envelope) } catch { rejectedMessages += 1 }
        }
    }
}

/// A worker's gradient segment a server has mapped, and the step it last read from it.
struct OpenGradientSegment {
    let segment: SharedSegment
    let lastStep: UInt64
}
