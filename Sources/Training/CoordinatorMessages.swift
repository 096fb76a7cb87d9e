import Logging
import NeuralNet
import Wire

/// The coordinator's handling of incoming messages: decode, check, then act.
extension CoordinatorServer {
    /// Receives and handles whatever arrives within the timeout, on the socket and on the
    /// pipes of workers on this host.
    func pump(timeoutMilliseconds: Int) throws {
        var piped: [Int32: WorkerPeer] = [:]
        for peer in peers.values { if let pipe = peer.fromWorker { piped[pipe.descriptor] = peer } }
        let ready = try socket.waitForInput(timeoutMilliseconds: timeoutMilliseconds, alsoWatching: Array(piped.keys))
        for descriptor in ready.descriptors { if let peer = piped[descriptor] { drainPipe(of: peer) } }
        // Drain everything that is already queued on the socket, then return.
        guard ready.socket else { return }
        while let frames = try socket.receive(timeoutMilliseconds: 0) {
            counters.bytesReceived += frames.reduce(0) { $0 + $1.count }
            handle(frames[1...], from: frames[0].bytes)
        }
    }

    private func drainPipe(of peer: WorkerPeer) {
        guard let pipe = peer.fromWorker else { return }
        for frames in pipe.receive() {
            counters.bytesReceived += frames.reduce(0) { $0 + $1.count }
            handle(frames[...], from: peer.identity)
        }
        if let error = pipe.failure {
            reject(from: peer.identity, reason: "\(error)")
            peer.detach()
            if isAlive(peer) {
                apply(.linkFailed(peer.index, reason: "its pipe broke (\(error))"))
            } else {
                logger.notice("worker \(peer.name)'s pipe broke (\(error)); it is dropped")
            }
            return
        }
        if pipe.isClosed {
            // The worker held the only write end: it exited, or dropped the pipe.
            peer.detach()
            apply(.linkFailed(peer.index, reason: "its pipe closed (the worker exited, or gave up on the pipe)"))
        }
    }

    private func handle(_ frames: ArraySlice<ZMQMessage>, from identity: [UInt8]) {
        let envelope: Envelope
        do {
            envelope = try Envelope(frames: frames)
        } catch {
            reject(from: identity, reason: "\(error)")
            return
        }
        // A hello is a join, which the scheduler hears of once the welcome is out.
        if let peer = peers[identity], envelope.type != .hello {
            apply(.workerHeard(peer.index, answeredTask: envelope.type == .result))
        }
        switch envelope.type {
        case .hello:
            handleHello(envelope, from: identity)
        case .result:
            handleResult(envelope, from: identity)
        case .attach:
            handleAttach(envelope, from: identity)
        case .heartbeat:
            if peers[identity] == nil { askToRegister(identity, "heartbeat") }
        default:
            reject(from: identity, reason: "\(ProtocolError.unexpected(envelope.type))")
        }
    }

    private func handleHello(_ envelope: Envelope, from identity: [UInt8]) {
        let hello: Hello
        do { hello = try Hello(envelope) } catch {
            reject(from: identity, reason: "\(error)")
            return
        }
        if !options.runSecret.verifies(hello.proof, nonce: runNonce, pid: hello.pid, name: hello.name) {
            // No proof yet is the first half of every join; a wrong one is refused. Either way
            // the peer learns what to prove: a worker that answered this nonce already
            // holds the wrong secret, and gives up.
            if hello.proof.contains(where: { $0 != 0 }) {
                reject(from: identity, reason: "refused worker \(escapedForLog(hello.name)) (pid \(hello.pid)): its hello does not prove this run's secret")
            }
            sendRaw(Challenge(nonce: runNonce).encode(), to: identity)
            return
        }
        if !hello.acceptsAnyModel && hello.modelHash != modelHash {
            let reason = "model mismatch: this coordinator trains \(spec), and the worker was started for a different model"
            reject(from: identity, reason: "refused worker \(escapedForLog(hello.name)) (pid \(hello.pid)): \(reason)")
            sendRaw(Notice(reason: reason).encode(.reject), to: identity)
            return
        }
        let known = peers[identity]
        let peer = known ?? WorkerPeer(identity: identity, index: nextWorkerIndex,
                                       name: hello.name.isEmpty ? "worker-\(nextWorkerIndex)" : escapedForLog(hello.name, maximumLength: 64))
        if known == nil {
            nextWorkerIndex += 1
            peers[identity] = peer
            peersByIndex[peer.index] = peer
        }
        // A worker (re)starting its session attaches again if it shares this host.
        peer.detach()
        let welcome = Welcome(workerIndex: UInt32(peer.index),
                              heartbeatMilliseconds: UInt32(options.heartbeatSeconds * 1000),
                              precision: options.precision, spec: spec, dropout: options.dropout,
                              sharedWeights: weightsSegment?.info, sharedBatches: batchSegment?.info)
        sendRaw(welcome.encode(), to: identity)
        // After the welcome: joining may hand it shards at once (a step waiting for workers).
        apply(.workerJoined(peer.index))
        if known == nil { logger.notice("worker \(peer.name) (pid \(hello.pid)) joined; \(liveWorkerCount) live") }
    }

    /// A worker on this host offers its gradient segment: from its next step on it gets its
    /// weights through shared memory too, which tells it to use the segment.
    private func handleAttach(_ envelope: Envelope, from identity: [UInt8]) {
        guard let peer = peers[identity] else {
            askToRegister(identity, "attach")
            return
        }
        do {
            let attach = try AttachMessage(envelope)
            guard weightsSegment != nil else { throw SharedSegmentError(name: attach.segment.name, reason: "shared memory is off in this run") }
            let needed = spec.parameterCount * options.precision.bytesPerValue
            // Exactly what a worker makes (a few slots of one gradient each): a bigger layout
            // would only make this process map and populate more of the peer's memory.
            guard attach.segment.slotBytes == needed, attach.segment.slotCount <= Self.maximumGradientSlots else {
                throw SharedSegmentError(name: attach.segment.name, reason: "\(attach.segment.slotCount) slots of \(attach.segment.slotBytes) bytes; a worker offers at most \(Self.maximumGradientSlots) of \(needed)")
            }
            // Ours are not the worker's to offer (and would be read as its gradients).
            guard attach.segment.name != weightsSegment?.info.name, attach.segment.name != batchSegment?.info.name else {
                throw SharedSegmentError(name: attach.segment.name, reason: "the coordinator's own segment, not the worker's")
            }
            let segment = try SharedSegment(opening: attach.segment)
            if segment.cannotShrink { try segment.mapInAdvance() }  // read in place from the first step
            peer.detach()
            peer.gradientSegment = segment
            peer.cpu = attach.cpu
            if !attach.toWorkerPipe.isEmpty {
                do {
                    let toWorker = try PipeChannel(opening: attach.toWorkerPipe, forWriting: true)
                    peer.fromWorker = try PipeChannel(opening: attach.toCoordinatorPipe, forWriting: false)
                    peer.toWorker = toWorker
                } catch {
                    logger.info("worker \(peer.name): no pipes (\(error)); small messages take the socket")
                }
            }
            logger.info("worker \(peer.name) shares this host: weights and gradients go through shared memory\(peer.toWorker == nil ? "" : ", step messages through pipes")")
        } catch {
            reject(from: identity, reason: "\(error)")
        }
    }

    static let maximumGradientSlots = 8

    private func handleResult(_ envelope: Envelope, from identity: [UInt8]) {
        guard let peer = peers[identity] else {
            askToRegister(identity, "result")
            return
        }
        let start = MonotonicClock.now
        defer { timing.receiveSeconds += MonotonicClock.now - start }
        let header: ResultHeader
        let gradient: ZMQMessage?
        do {
            (header, gradient) = try ResultHeader.decode(envelope, parameterCount: spec.parameterCount)
        } catch {
            reject(from: identity, reason: "\(error)")
            return
        }
        let shard = Int(header.shard)
        guard isWanted(shard, step: envelope.step, from: peer), let results = currentResults, let batch = currentBatch else { return }
        take(header, gradient: gradient, shard: shard, from: peer, results: results, batch: batch)
    }

    /// Whether the scheduler wants this result now; a stale one is counted, a wrong one
    /// rejected.
    private func isWanted(_ shard: Int, step: UInt64, from peer: WorkerPeer) -> Bool {
        switch scheduler.verdict(from: peer.index, step: Int(exactly: step) ?? Int.max, shard: shard, shardCount: stepShardCount) {
        case .accept where currentResults != nil:
            return true
        case .accept, .stale:
            counters.staleResults += 1  // a step that is over, a shard answered already, a task given to another
        case let .reject(reason):
            reject(from: peer.identity, reason: reason)
        }
        return false
    }

    /// The numeric checks, then the gradient into the shard's buffer (or read in place).
    private func take(_ header: ResultHeader, gradient: ZMQMessage?, shard: Int, from peer: WorkerPeer,
                      results: ShardResults, batch: BatchView) {
        let identity = peer.identity
        guard Int(header.sampleCount) == batch.sampleCount(ofShard: shard) else {
            reject(from: identity, reason: "result for shard \(shard) counts \(header.sampleCount) samples; the shard has \(batch.sampleCount(ofShard: shard))")
            return
        }
        var statistics = BatchStatistics(sampleCount: Int(header.sampleCount), lossSum: header.lossSum,
                                         correctCount: Int(header.correctCount))
        guard header.precision == options.precision else {
            reject(from: identity, reason: "gradient in \(header.precision), this run uses \(options.precision)")
            return
        }
        let finite: Bool
        if let slot = header.sharedSlot {
            guard let segment = peer.gradientSegment else {
                reject(from: identity, reason: "gradient in shared slot \(slot), but the worker attached no segment")
                return
            }
            do {
                if header.precision == .fp32 && segment.cannotShrink && header.lossSum.isFinite {
                    // Summed straight from the worker's sealed segment, no copy; the sum is
                    // checked for NaN and infinity once every shard is in. (A loss that is
                    // not finite takes the copy below and is recomputed, as from the socket.)
                    let values = try segment.mapped(slot: slot, offset: 0, byteCount: spec.parameterCount * 4)
                    results.complete(shard, statistics: statistics, readingInPlace: values.assumingMemoryBound(to: Float.self),
                                     owner: segment)
                    finishResult(shard, from: peer, header: header)
                    return
                }
                finite = try segment.readValues(slot: slot, count: spec.parameterCount, precision: header.precision,
                                                into: results.gradient(shard), scratch: &sharedScratch)
            } catch {
                peer.gradientSegment = nil  // broken: back to the socket from the next step on
                reject(from: identity, reason: "\(error)")
                return
            }
        } else {
            finite = gradient!.withUnsafeBytes {
                header.precision.decode($0.baseAddress!, count: spec.parameterCount, into: results.gradient(shard))
            }
        }
        if !finite || !header.lossSum.isFinite {
            statistics = recompute(shard, of: batch, into: results, rejecting: identity) ?? statistics
        }
        results.complete(shard, statistics: statistics)
        finishResult(shard, from: peer, header: header)
    }

    /// Either the run diverged or the worker is broken: recomputes a shard whose gradient or
    /// loss is NaN or infinite here, and lets the Trainer's finite-loss check decide which.
    func recompute(_ shard: Int, of batch: BatchView, into results: ShardResults, rejecting identity: [UInt8]) -> BatchStatistics? {
        reject(from: identity, reason: "non-finite gradient or loss for shard \(shard); recomputed by the coordinator")
        return currentModel?.computeGradientSum(pixels: batch.pixels(ofShard: shard), labels: batch.labels(ofShard: shard),
                                                rows: batch.sampleCount(ofShard: shard), gradient: results.gradient(shard))
    }

    private func finishResult(_ shard: Int, from peer: WorkerPeer, header: ResultHeader) {
        resultSenders[shard] = peer.identity
        peer.shardsDone += 1
        let compute = Double(header.computeMicroseconds) / 1e6
        peer.computeSeconds += compute
        peer.stepComputeSeconds += compute
        peer.lastStepCounted = currentStep
        apply(.resultAccepted(peer.index, shard: shard))
    }

    /// A worker of an earlier run of this coordinator (it restarted, say from a checkpoint)
    /// still talks as if it were registered: the message is refused, and the worker is told
    /// to say hello again.
    private func askToRegister(_ identity: [UInt8], _ what: String) {
        reject(from: identity, reason: "\(what) from a peer that never said hello")
        sendRaw(Notice(reason: WireProtocol.unknownWorkerReason).encode(.reject), to: identity)
    }

    /// Counts a refused message and logs the first one from each peer.
    func reject(from identity: [UInt8], reason rawReason: String) {
        counters.rejectedMessages += 1
        // Reasons quote what the peer sent (names, paths): never raw into the log.
        let reason = escapedForLog(rawReason, maximumLength: 400)
        let name = peers[identity]?.name ?? describe(identity: identity)
        if loggedPeers.insert(identity).inserted {
            logger.warning("rejected a message from \(name): \(reason) (further rejects from this peer are counted, not logged)")
        } else {
            logger.debug("rejected a message from \(name): \(reason)")
        }
    }

    /// Sends to a routing id that may not be a registered worker (replies to hellos).
    func sendRaw(_ frames: [OutgoingFrame], to identity: [UInt8]) {
        _ = try? socket.send([.bytes(identity)] + frames, dontWait: true)
    }
}
