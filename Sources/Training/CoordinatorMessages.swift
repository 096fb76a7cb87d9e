import Logging
import NeuralNet
import Wire

/// The coordinator's handling of incoming messages: decode, check, then act.
extension CoordinatorServer {
    /// Receives and handles whatever arrives within the timeout, on the socket and on the
    /// links' own inputs (pipes of workers on this host).
    func pump(timeoutMilliseconds: Int) throws {
        defer { flushShardNoticesIfDue() }
        var watched: [Int32: WorkerPeer] = [:]
        for peer in peers.values { if let descriptor = peer.link.inputDescriptor { watched[descriptor] = peer } }
        // Notices held back for more results are due within a millisecond.
        let timeout = service?.notices != nil ? min(timeoutMilliseconds, 1) : timeoutMilliseconds
        let ready = try socket.waitForInput(timeoutMilliseconds: timeout, alsoWatching: Array(watched.keys))
        for descriptor in ready.descriptors { if let peer = watched[descriptor] { drainLink(of: peer) } }
        // Drain everything that is already queued on the socket, then return.
        guard ready.socket else { return }
        while let frames = try socket.receive(timeoutMilliseconds: 0) {
            counters.bytesReceived += frames.reduce(0) { $0 + $1.count }
            handle(frames[1...], from: frames[0].bytes)
        }
    }

    private func drainLink(of peer: WorkerPeer) {
        let input = peer.link.receive()
        for frames in input.messages {
            counters.bytesReceived += frames.reduce(0) { $0 + $1.count }
            handle(frames[...], from: peer.identity)
        }
        switch input.end {
        case .open:
            break
        case let .failed(error):
            reject(from: peer.identity, reason: error)
            peer.relink(socketLink(for: peer.identity))
            if isAlive(peer) {
                apply(.linkFailed(peer.index, reason: "its pipe broke (\(error))"))
            } else {
                logger.notice("worker \(peer.name)'s pipe broke (\(error)); it is dropped")
            }
        case .closed:
            peer.relink(socketLink(for: peer.identity))
            apply(.linkFailed(peer.index, reason: "its pipe closed (the worker exited, or gave up on the pipe)"))
        }
    }

    func socketLink(for identity: [UInt8]) -> SocketLink {
        SocketLink(identity: identity, socket: socket, sendsIndices: peers[identity]?.holdsTrainingSet ?? false)
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
        case .serveOffer, .receipt, .receipts, .rangeRefused, .applied, .snapshotAnswer, .rangeSegment:
            handleParameterService(envelope, from: identity)
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
                                       name: hello.name.isEmpty ? "worker-\(nextWorkerIndex)" : escapedForLog(hello.name, maximumLength: 64),
                                       link: socketLink(for: identity))
        if known == nil {
            nextWorkerIndex += 1
            peers[identity] = peer
            peersByIndex[peer.index] = peer
        }
        peer.holdsTrainingSet = holdsTrainingSet(hello, name: peer.name, logged: known == nil)
        peer.slots = Int(hello.slots)
        // A worker (re)starting its session attaches again if it shares this host; its
        // socket link sends indices or samples as its training set says.
        peer.relink(socketLink(for: identity))
        let welcome = Welcome(workerIndex: UInt32(peer.index),
                              heartbeatMilliseconds: UInt32(options.scheduling.heartbeatSeconds * 1000),
                              precision: options.precision, spec: spec, dropout: options.dropout,
                              sharedWeights: feed?.weightsInfo, sharedBatches: feed?.batchesInfo)
        sendRaw(welcome.encode(), to: identity)
        // After the welcome: joining may hand it shards at once (a step waiting for workers).
        apply(.workerJoined(peer.index, slots: peer.slots))
        sendServerMap(to: peer)
        if known == nil {
            logger.notice("worker \(peer.name) (pid \(hello.pid)\(peer.slots > 1 ? ", \(peer.slots) processes" : "")) joined; \(liveWorkerCount) live")
        }
    }

    /// Whether a worker's training set is this run's, byte for byte (`Dataset.contentSHA256`):
    /// then it gets sample indices. A different one is never trusted: one line says so, and
    /// the worker gets the samples, as does one without data.
    private func holdsTrainingSet(_ hello: Hello, name: String, logged: Bool) -> Bool {
        guard hello.hasData, let ours = options.trainingSetDigest else { return false }
        if hello.dataDigest == ours {
            if logged { logger.info("worker \(name) holds this run's training set: its tasks carry sample indices") }
            return true
        }
        if logged {
            logger.warning("worker \(name)'s training set differs from this coordinator's (sha256 \(Checksum.hex(Array(hello.dataDigest.prefix(8))))… vs \(Checksum.hex(Array(ours.prefix(8))))…): it gets the samples in its tasks")
        }
        return false
    }

    /// A worker on this host offers its gradient segment: from its next step on it gets its
    /// weights through shared memory too, which tells it to use the segment.
    private func handleAttach(_ envelope: Envelope, from identity: [UInt8]) {
        guard let peer = peers[identity] else {
            askToRegister(identity, "attach")
            return
        }
        do {
            let (link, pipeFailure) = try SameHostLink.admit(try AttachMessage(envelope), feed: feed,
                                                             gradientBytes: spec.parameterCount * options.precision.bytesPerValue,
                                                             fallback: socketLink(for: identity))
            peer.relink(link)
            if let pipeFailure { logger.info("worker \(peer.name): no pipes (\(pipeFailure)); small messages take the socket") }
            logger.info("worker \(peer.name) shares this host: weights and gradients go through shared memory\(link.hasPipes ? ", step messages through pipes" : "")")
        } catch {
            reject(from: identity, reason: "\(error)")
        }
    }


    private func handleResult(_ envelope: Envelope, from identity: [UInt8]) {
        guard let peer = peers[identity] else {
            askToRegister(identity, "result")
            return
        }
        // With parameter servers a result goes to them: from a worker on this host through
        // shared memory (`relayResult`); one from elsewhere is refused, and the shard's
        // deadline gives it to another.
        if let service { return relayResult(envelope, from: peer, service: service) }
        let start = MonotonicClock.now
        defer { timing.receiveSeconds += MonotonicClock.now - start }
        let header: ResultHeader
        let gradient: ZMQMessage?
        do {
            // A host's own coordinator numbers its block's shards as the run does.
            (header, gradient) = try ResultHeader.decode(envelope, parameterCount: spec.parameterCount,
                                                         shardCount: (currentBatch?.firstShard ?? 0) + stepShardCount)
        } catch {
            reject(from: identity, reason: "\(error)")
            return
        }
        if header.blockCount > 1 { return handleBlockResult(header, gradient: gradient, step: envelope.step, from: peer) }
        let shard = Int(header.shard) - (currentBatch?.firstShard ?? 0)
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
        switch peer.link.receiveGradient(header, frame: gradient, count: spec.parameterCount,
                                         into: results.gradient(shard), scratch: &sharedScratch) {
        case let .copied(allFinite):
            finite = allFinite
        case let .inPlace(values, owner):
            results.complete(shard, statistics: statistics, readingInPlace: values, owner: owner)
            finishResult(shard, from: peer, header: header)
            return
        case let .refused(reason):
            reject(from: identity, reason: reason)
            return
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

    /// `countsResult`: false for a block's shards after its first (one result, many shards).
    func finishResult(_ shard: Int, from peer: WorkerPeer, header: ResultHeader, countsResult: Bool = true) {
        resultSenders[shard] = peer.identity
        peer.shardsDone += 1
        if countsResult {
            peer.resultsDone += 1
            counters.gradientsReceived += 1
        }
        let compute = Double(header.computeMicroseconds) / 1e6 / Double(header.blockCount)
        peer.computeSeconds += compute
        peer.stepComputeSeconds += compute
        peer.lastStepCounted = currentStep
        apply(.resultAccepted(peer.index, shard: shard))
    }

    private func handleParameterService(_ envelope: Envelope, from identity: [UInt8]) {
        guard let peer = peers[identity] else { return askToRegister(identity, "\(envelope.type)") }
        do {
            if envelope.type == .serveOffer {
                let offer = try ServeOffer(envelope)
                if peer.serveOffer == nil { logger.info("worker \(peer.name) offers to serve parameters at \(offer.endpoint)") }
                peer.serveOffer = offer
            } else {
                try handleServerMessage(envelope, from: peer)
            }
        } catch {
            reject(from: identity, reason: "\(error)")
        }
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
