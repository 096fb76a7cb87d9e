import Wire

/// A worker on this host, fed through memory: it maps the feeder's `SharedStepFeed` (weights
/// and batches by step parity) and leaves its gradients in a segment of its own; the small
/// messages of every step go through two named pipes. What does not fit a pipe, or all of it
/// when the worker offered no pipes, goes through `fallback` (the socket).
///
/// Built from the worker's attach by `admit`, which holds every check of what it offers; it
/// knows nothing of who feeds it, so a per-host aggregator can feed its own workers with it.
final class SameHostLink: WorkerLink {
    /// A worker offers at most this many gradient slots (it makes a few).
    static let maximumGradientSlots = 8

    private let feed: SharedStepFeed
    private let fallback: WorkerLink
    /// Where the worker leaves its gradients; nil once broken (weights, tasks and gradients
    /// then travel in messages, through the pipes or the socket).
    private var gradients: SharedSegment?
    private var toWorker: PipeChannel?
    private var fromWorker: PipeChannel?
    let cpu: Int?

    private init(feed: SharedStepFeed, fallback: WorkerLink, gradients: SharedSegment,
                 pipes: (toWorker: PipeChannel, fromWorker: PipeChannel)?, cpu: Int?) {
        self.feed = feed
        self.fallback = fallback
        self.gradients = gradients
        (toWorker, fromWorker) = (pipes?.toWorker, pipes?.fromWorker)
        self.cpu = cpu
    }

    /// The link `attach` offers, after every check: the gradient segment exactly what a
    /// worker makes (a bigger layout would only make this process map and populate more of
    /// the peer's memory), not one of the feed's own, and mapped. Pipes that cannot be opened
    /// are no failure (`pipeFailure` says why there are none).
    static func admit(_ attach: AttachMessage, feed: SharedStepFeed?, gradientBytes: Int,
                      fallback: WorkerLink) throws -> (link: SameHostLink, pipeFailure: Error?) {
        let name = attach.segment.name
        guard let feed else { throw SharedSegmentError(name: name, reason: "shared memory is off in this run") }
        guard attach.segment.slotBytes == gradientBytes, attach.segment.slotCount <= maximumGradientSlots else {
            throw SharedSegmentError(name: name, reason: "\(attach.segment.slotCount) slots of \(attach.segment.slotBytes) bytes; a worker offers at most \(maximumGradientSlots) of \(gradientBytes)")
        }
        // Ours are not the worker's to offer (and would be read as its gradients).
        guard !feed.owns(segmentNamed: name) else {
            throw SharedSegmentError(name: name, reason: "the coordinator's own segment, not the worker's")
        }
        let segment = try SharedSegment(opening: attach.segment)
        if segment.cannotShrink { try segment.mapInAdvance() }  // read in place from the first step
        var pipes: (PipeChannel, PipeChannel)?
        var pipeFailure: Error?
        if !attach.toWorkerPipe.isEmpty {
            do {
                let toWorker = try PipeChannel(opening: attach.toWorkerPipe, forWriting: true)
                pipes = (toWorker, try PipeChannel(opening: attach.toCoordinatorPipe, forWriting: false))
            } catch {
                pipeFailure = error
            }
        }
        return (SameHostLink(feed: feed, fallback: fallback, gradients: segment, pipes: pipes, cpu: attach.cpu), pipeFailure)
    }

    var hasPipes: Bool { toWorker != nil }

    /// Where the worker leaves its gradients (for parameter servers on this host to read).
    var gradientSegmentInfo: SharedSegmentInfo? { gradients?.info }

    // MARK: Out

    /// Through the pipe when there is one and the message fits, else the fallback. A full
    /// pipe sends through the fallback too: a worker given many shards a step reads its pipe
    /// only between tasks, and a pipe holds a few hundred task messages, where the socket's
    /// queue holds every shard of two steps. A worker that stopped is still caught by its
    /// deadline, or once that queue is full as well.
    func send(_ frames: [OutgoingFrame]) throws -> SentBytes? {
        if let toWorker {
            do {
                if try toWorker.send(frames) { return frames.byteCount }
            } catch let error as PipeChannelError where error.pipeFull {
                // Nothing was written (a message fits PIPE_BUF, so a write is all or nothing).
            }
        }
        return try fallback.send(frames)
    }

    /// Only the slot when the worker reads weights from memory; the values otherwise.
    func sendWeights(_ weights: StepWeights) throws -> SentBytes? {
        guard gradients != nil else { return try send(weights.bulkFrames()) }
        let slot = feed.weightsSlot(for: weights)
        return try send(WeightsMessage.encodeShared(step: UInt64(weights.step), slot: slot, count: weights.count,
                                                    precision: weights.precision))
    }

    /// A slot and an offset when the batch is in the feed's slot; the samples otherwise.
    func sendTask(_ shard: Int, of batch: BatchView, step: Int) throws -> SentBytes? {
        guard gradients != nil, let slot = feed.batchSlot(placing: batch, step: step) else {
            return try send(batch.taskFrames(shard, step: step))
        }
        return try send(batch.taskHeader(shard).encodeShared(step: UInt64(step), slot: slot, offset: batch.offset(ofShard: shard)))
    }

    /// Both ways: a pipe keeps it, in order, for a worker that is stopped; a worker saying
    /// hello again reads only the socket until it is welcomed.
    func sendByEveryPath(_ frames: [OutgoingFrame]) {
        _ = try? toWorker?.send(frames)
        fallback.sendByEveryPath(frames)
    }

    // MARK: In

    func receiveGradient(_ header: ResultHeader, frame: ZMQMessage?, count: Int,
                         into destination: UnsafeMutablePointer<Float>, scratch: inout [UInt8]) -> GradientArrival {
        guard let slot = header.sharedSlot, let segment = gradients else {
            return fallback.receiveGradient(header, frame: frame, count: count, into: destination, scratch: &scratch)
        }
        do {
            if header.precision == .fp32 && segment.cannotShrink && header.lossSum.isFinite {
                // Summed straight from the worker's sealed segment, no copy; the sum is
                // checked for NaN and infinity once every shard is in. (A loss that is not
                // finite takes the copy below and is recomputed, as from the socket.)
                let values = try segment.mapped(slot: slot, offset: 0, byteCount: count * 4)
                return .inPlace(values.assumingMemoryBound(to: Float.self), owner: segment)
            }
            return .copied(finite: try segment.readValues(slot: slot, count: count, precision: header.precision,
                                                          into: destination, scratch: &scratch))
        } catch {
            gradients = nil  // broken: back to messages from the next step on
            return .refused("\(error)")
        }
    }

    var inputDescriptor: Int32? { fromWorker?.descriptor }

    func receive() -> LinkInput {
        guard let fromWorker else { return LinkInput() }
        var input = LinkInput(messages: fromWorker.receive())
        if let failure = fromWorker.failure {
            input.end = .failed("\(failure)")
        } else if fromWorker.isClosed {
            input.end = .closed
        }
        return input
    }

    var mayHaveInput: Bool { fromWorker?.hasInput ?? true }
    var computesOnThisHost: Bool { gradients != nil }
    var resultsArriveOutsideTheSocket: Bool { fromWorker != nil }

    func close() {
        gradients = nil
        toWorker = nil
        fromWorker = nil
    }
}
