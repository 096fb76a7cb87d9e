import Wire

/// What a feeder of workers on its own host (the coordinator; later a per-host aggregator)
/// shares with all of them: two slots of weights and two of batches, by step parity, in
/// segments it owns. The workers map them once; a step's weights and batch are then
/// written here at most once, whatever the number of workers that read them.
public final class SharedStepFeed {
    /// Two slots of weights, by step parity.
    let weights: SharedSegment
    /// Two slots of batches (labels and pixels), by step parity, and the step each holds.
    let batches: SharedSegment?
    private var batchSlotSteps = [-1, -1]
    /// The batch each slot was copied from (weak: a freed batch is no other batch's twin).
    /// A host's agent computes several batches of one step (its blocks, then shards given
    /// to it alone); only the first goes through the slot.
    private var batchSlotSources: [WeakBatchBuffer] = [WeakBatchBuffer(), WeakBatchBuffer()]
    /// The batch slots as buffers a trainer builds batches in (no copy for these workers).
    private var batchSlotBuffers: [SharedBuffer] = []
    /// The weights last written (weak: once a step is over they are gone): written again
    /// for other weights of the same step too, as a host's agent has after its coordinator
    /// restarted, or another one took over at its endpoint.
    private weak var weightsInSlot: StepWeights?

    /// Segments for weights of `weightBytes` and batches of `batchSlotBytes` (0: no batch
    /// segment; the samples then travel in the tasks even on this host).
    public init(weightBytes: Int, batchSlotBytes: Int) throws {
        weights = try SharedSegment(slotCount: 2, slotBytes: weightBytes)
        batches = batchSlotBytes > 0 ? try SharedSegment(slotCount: 2, slotBytes: batchSlotBytes) : nil
        if let batches {
            batchSlotBuffers = (0..<2).map { SharedBuffer(borrowing: batches.slot($0), byteCount: batches.info.slotBytes, owner: batches) }
        }
    }

    /// What a welcome tells a worker to map.
    public var weightsInfo: SharedSegmentInfo { weights.info }
    public var batchesInfo: SharedSegmentInfo? { batches?.info }

    /// Whether `name` is one of these segments (a worker offering it as its own is wrong).
    func owns(segmentNamed name: String) -> Bool { name == weights.info.name || name == batches?.info.name }

    /// The slot holding `step`'s weights, written on first use.
    func weightsSlot(for stepWeights: StepWeights) -> Int {
        let slot = stepWeights.step % 2
        if weightsInSlot !== stepWeights {
            stepWeights.encode(into: weights.slot(slot))
            weightsInSlot = stepWeights
        }
        return slot
    }

    /// `stepWeights` were written into their slot by someone else (the parameter service's
    /// ranges, copied in): the slot is not written again for them.
    func adopt(_ stepWeights: StepWeights) {
        weightsInSlot = stepWeights
    }

    /// The batch slot of `step`'s parity, for the trainer to build that step's batch in; nil
    /// while a message to a worker elsewhere still points into it (zero-copy sends), or when
    /// there is no batch segment.
    func batchBuffer(forStep step: Int) -> SharedBuffer? {
        // Free of libzmq (its I/O thread let go, in order) and of this thread's own holders:
        // a batch view of an earlier step still in use keeps a reference.
        guard !batchSlotBuffers.isEmpty, batchSlotBuffers[step % 2].isFree,
              isKnownUniquelyReferenced(&batchSlotBuffers[step % 2]) else { return nil }
        batchSlotSteps[step % 2] = -1  // being overwritten
        return batchSlotBuffers[step % 2]
    }

    /// Copies the batch of `step` into the batch slot of its parity, once; the slot, or nil
    /// if there is no batch segment or the batch does not fit. The other slot may still be
    /// read by a worker computing the step before, never this one: every result of step
    /// s - 2 came in before step s began (late answers are dropped as stale).
    func batchSlot(placing batch: BatchView, step: Int) -> Int? {
        let slot = step % 2
        let bytes = batch.sampleCount * (batch.featureCount + 1)
        guard let batches, bytes <= batches.info.slotBytes else { return nil }
        if batch.buffer === batchSlotBuffers[slot] {
            batchSlotSteps[slot] = step  // built there: nothing to copy
        } else if batchSlotSteps[slot] == step {
            // Another batch of this step: its samples travel in its tasks, so that a
            // worker still reading the slot for the first never sees them.
            guard batchSlotSources[slot].buffer === batch.buffer else { return nil }
        } else {
            // Never under a zero-copy message that is still going out from the slot.
            guard batchSlotBuffers[slot].isFree, isKnownUniquelyReferenced(&batchSlotBuffers[slot]) else { return nil }
            BulkCopy.copy(to: batches.slot(slot), from: batch.buffer.pointer, byteCount: bytes)
            batchSlotSteps[slot] = step
            batchSlotSources[slot].buffer = batch.buffer
        }
        return slot
    }
}

/// One step's weights, encoded for whichever link asks: into a shared slot or a send buffer,
/// each at most once.
final class StepWeights {
    let step: Int
    let count: Int
    let precision: WirePrecision
    private let pool: SharedBufferPool
    private let encodeValues: (UnsafeMutableRawPointer) -> Void
    private var bulkBuffer: SharedBuffer?

    /// `encode` writes the `count` values in `precision` to the address it is given.
    init(step: Int, count: Int, precision: WirePrecision, pool: SharedBufferPool,
         encode: @escaping (UnsafeMutableRawPointer) -> Void) {
        self.step = step
        self.count = count
        self.precision = precision
        self.pool = pool
        self.encodeValues = encode
    }

    func encode(into destination: UnsafeMutableRawPointer) { encodeValues(destination) }

    /// The weights in a buffer of the pool, for zero-copy sends; made on first use.
    func bulk() -> SharedBuffer {
        if let bulkBuffer { return bulkBuffer }
        let buffer = pool.take()
        encodeValues(buffer.pointer)
        bulkBuffer = buffer
        return buffer
    }
}

/// A batch's buffer, held weakly.
private struct WeakBatchBuffer {
    weak var buffer: SharedBuffer?
}
