import Foundation
import NeuralNet
import Wire

/// The parameter service on the coordinator's host: no bulk value goes through a socket.
/// Workers here keep the coordinator's batch and weights slots (`SharedStepFeed`) and leave
/// each gradient in their own sealed segment; the coordinator tells every server where they are
/// (`ShardsInSegments`, a few results a message: `flushShardNoticesIfDue`), and each server
/// sums and updates its range and writes the new weights into a segment of its own, which the
/// coordinator copies, range by range, into its weights slot before the next step's weights
/// notice. The servers do the O(N·P) work; what stays
/// here is O(P) per step (the copy) and small messages.
extension CoordinatorServer {
    /// A server's weights segment for its generation: the layout its range needs, sealed
    /// against shrinking, mapped now. Anything else is refused (the caller logs it, naming
    /// the server), and the weights then go through the sockets.
    func takeRangeSegment(_ message: RangeSegmentMessage, server: Int, service: ParameterServiceState) throws {
        let info = message.segment
        let range = service.ranges[server]
        let byteCount = range.count * options.precision.bytesPerValue
        guard message.range == range, info.slotCount == 2, info.slotBytes == byteCount else {
            throw SharedSegmentError(name: info.name, reason: "a weights segment for range \(message.range) of \(info.slotCount) slots of \(info.slotBytes) bytes; this server's range \(range) needs 2 of \(byteCount)")
        }
        let segment = try SharedSegment(opening: info)
        guard segment.cannotShrink else { throw SharedSegmentError(name: info.name, reason: "not sealed against shrinking") }
        try segment.mapInAdvance()
        service.rangeSegments[server] = (message.generation, segment)
    }

    /// Whether every server shares this host (its worker attached shared memory).
    private func serversShareThisHost(_ service: ParameterServiceState) -> Bool {
        !service.servers.isEmpty && service.servers.allSatisfy { peersByIndex[$0]?.link.computesOnThisHost ?? false }
    }

    /// The weights of `step` for the workers on this host: every server's range copied from
    /// its segment into the feed's slot of the step's parity, each checked finite first.
    /// Nil when that cannot be (servers elsewhere, a segment refused or not offered within
    /// the worker timeout, a server's weights not finite: then that server is lost and the
    /// run rolls back); the workers then take the weights from the servers' sockets.
    func sharedServiceWeights(step: Int, service: ParameterServiceState) throws -> StepWeights? {
        guard let feed, serversShareThisHost(service), try awaitRangeSegments(service) else { return nil }
        let start = MonotonicClock.now
        defer { timing.sendSeconds += MonotonicClock.now - start }
        let precision = options.precision
        let slot = step % 2
        let destination = feed.weights.slot(slot)
        for (index, range) in service.ranges.enumerated() {
            guard let segment = service.rangeSegments[index]?.segment else { return nil }
            let source = try segment.mapped(slot: slot, offset: 0, byteCount: range.count * precision.bytesPerValue)
            let target = destination + range.lower * precision.bytesPerValue
            // Copied first, then checked where it now lies: the server cannot change it since.
            let finite: Bool
            if precision == .fp32 {
                finite = precision.decode(source, count: range.count, into: target.assumingMemoryBound(to: Float.self))
            } else {
                BulkCopy.copy(to: target, from: source, byteCount: range.count * precision.bytesPerValue)
                if service.weightsScratch.count < range.count { service.weightsScratch = Array(repeating: 0, count: range.count) }
                finite = service.weightsScratch.withUnsafeMutableBufferPointer { precision.decode(target, count: range.count, into: $0.baseAddress!) }
            }
            guard finite else {
                apply(.linkFailed(service.servers[index], reason: "its weights of step \(step) in shared memory are not all finite"))
                return nil
            }
        }
        let byteCount = spec.parameterCount * precision.bytesPerValue
        let weights = StepWeights(step: step, count: spec.parameterCount, precision: precision, pool: weightsPool) { [feed] out in
            BulkCopy.copy(to: out, from: feed.weights.slot(slot), byteCount: byteCount)
        }
        feed.adopt(weights)
        service.sharedSteps += 1
        if service.sharedLoggedGeneration != service.generation {
            service.sharedLoggedGeneration = service.generation
            logger.info("parameter service generation \(service.generation) from step \(step): through shared memory on this host")
        }
        return weights
    }

    /// Waits (serving messages) until every server's segment of this generation is in; false
    /// when one does not come within the worker timeout.
    private func awaitRangeSegments(_ service: ParameterServiceState) throws -> Bool {
        let start = MonotonicClock.now
        while service.servers.indices.contains(where: { service.rangeSegments[$0]?.generation != service.generation }) {
            guard service.lostServer == nil, giveUpReason == nil,
                  MonotonicClock.now - start < options.scheduling.workerTimeoutSeconds else { return false }
            try pump(timeoutMilliseconds: 10)
            apply(.tick)
        }
        return true
    }

    /// A result from a worker: with this step's weights in shared memory, every server hears
    /// (with other results, `flushShardNoticesIfDue`) where its gradient lies: in the worker's
    /// segment, or (a result beyond the worker's slots, which brings the values) in a slot of
    /// the coordinator's overflow segment.
    /// Checked first as any result is: step, shard, sample count, precision.
    func relayResult(_ envelope: Envelope, from peer: WorkerPeer, service: ParameterServiceState) {
        guard stepWeights != nil else {
            return reject(from: peer.identity, reason: "a result sent to the coordinator, but this run's gradients go to its parameter servers")
        }
        let start = MonotonicClock.now
        defer { timing.receiveSeconds += MonotonicClock.now - start }
        let header: ResultHeader
        let gradient: ZMQMessage?
        do {
            (header, gradient) = try ResultHeader.decode(envelope, parameterCount: spec.parameterCount, shardCount: stepShardCount)
        } catch {
            return reject(from: peer.identity, reason: "\(error)")
        }
        guard Int(exactly: envelope.step) == currentStep, let batch = currentBatch else { return counters.staleResults += 1 }
        let shard = Int(header.shard)
        guard header.blockCount == 1, header.precision == options.precision,
              Int(header.sampleCount) == batch.sampleCount(ofShard: shard) else {
            return reject(from: peer.identity, reason: "result for shard \(shard) of \(header.blockCount) shards, \(header.sampleCount) samples in \(header.precision); expected one shard of \(batch.sampleCount(ofShard: shard)) in \(options.precision)")
        }
        let report = ShardReport(shard: shard, worker: peer.index, sampleCount: Int(header.sampleCount), lossSum: header.lossSum,
                                 correctCount: Int(header.correctCount), computeMicroseconds: Int(header.computeMicroseconds))
        let place: (segment: SharedSegmentInfo, slot: Int)
        if let slot = header.sharedSlot, let segment = (peer.link as? SameHostLink)?.gradientSegmentInfo {
            place = (segment, slot)
        } else if let gradient, let (segment, slot) = overflowSlot(service) {
            gradient.withUnsafeBytes { BulkCopy.copy(to: segment.slot(slot), from: $0.baseAddress!, byteCount: $0.count) }
            place = (segment.info, slot)
        } else {
            return reject(from: peer.identity, reason: "a result of shard \(shard) whose gradient is in no segment the servers can read")
        }
        if let notices = service.notices, notices.generation != service.generation || notices.step != envelope.step {
            sendShardNotices()
        }
        if service.notices == nil {
            service.notices = ShardsInSegments(generation: service.generation, step: envelope.step, entries: [])
            service.noticesSince = MonotonicClock.now
        }
        service.notices?.entries.append(ShardsInSegments.Entry(report: report, segment: place.segment, slot: place.slot))
        if service.relayedThisStep.step != envelope.step { service.relayedThisStep = (envelope.step, 0) }
        service.relayedThisStep.count += 1
        if service.notices?.entries.count == ShardsInSegments.maximumEntries { sendShardNotices() }
    }

    /// Sends the relayed results once enough have gathered: a quarter of the step's shards,
    /// the step's last, or any that waited a millisecond. Each message wakes every server and
    /// brings back a receipt from each, and results come one or two a round, so a message per
    /// round would cost the coordinator about two messages per result and server; this way
    /// about eight per server and step, and the servers still sum while workers compute.
    func flushShardNoticesIfDue() {
        guard let service, let notices = service.notices else { return }
        let pending = max(1, service.pending.count)
        let allIn = service.relayedThisStep.step == notices.step && service.relayedThisStep.count >= pending
        guard allIn || notices.entries.count * 4 >= pending || MonotonicClock.now - service.noticesSince >= 0.001 else { return }
        sendShardNotices()
    }

    /// The results relayed since the last call, in one message to every server.
    func sendShardNotices() {
        guard let service, let notices = service.notices else { return }
        service.notices = nil
        let start = MonotonicClock.now
        defer { timing.sendSeconds += MonotonicClock.now - start }
        let message = notices.encode()
        for server in service.servers { if let target = peersByIndex[server] { sendEvenIfSuspect(message, to: target) } }
    }

    /// The next free slot of the overflow segments this step (sealed memfds of the
    /// coordinator's, made on first need): written only here, and again only in a later
    /// step, once every server applied this one. Nil beyond one slot per shard.
    private func overflowSlot(_ service: ParameterServiceState) -> (SharedSegment, Int)? {
        if service.overflowStep != currentStep { (service.overflowStep, service.overflowUsed) = (currentStep, 0) }
        let index = service.overflowUsed
        let slotsPerSegment = 64
        guard index < stepShardCount else { return nil }
        if index / slotsPerSegment == service.overflowSegments.count {
            guard let segment = try? SharedSegment(slotCount: slotsPerSegment, slotBytes: spec.parameterCount * options.precision.bytesPerValue,
                                                   sealed: true), segment.cannotShrink else { return nil }
            service.overflowSegments.append(segment)
        }
        service.overflowUsed += 1
        return (service.overflowSegments[index / slotsPerSegment], index % slotsPerSegment)
    }

    /// Spawned workers: a server that was lost is started again, and the run waits (up to
    /// the startup timeout) until enough serving workers are live to seed every range.
    func respawnLostServers(_ service: ParameterServiceState) throws {
        guard let respawn = respawnExitedWorkers, !service.servers.isEmpty else { return }
        let start = MonotonicClock.now
        while servingCandidates.count < service.serverCount && MonotonicClock.now - start < options.startupTimeoutSeconds {
            if respawn() > 0 { logger.warning("restarted a spawned serving worker that had exited") }
            try pump(timeoutMilliseconds: 100)
            apply(.tick)
        }
    }
}
