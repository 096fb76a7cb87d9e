import Foundation
import Wire

/// Shared memory and pipes with a coordinator on this host, and the choice between a pipe
/// and the socket for what the worker sends.
extension WorkerNode {
    /// On the coordinator's host (its segment opens and carries the announced nonce), makes
    /// our own gradient segment and offers it. Elsewhere everything stays on the socket.
    func attachSharedMemory(_ welcome: Welcome) throws {
        weightsSegment = nil
        batchSegment = nil
        gradientSegment = nil
        sharedActive = false
        dropPipes()
        // A host agent hands the weights on from its own model's parameters: it reads them
        // from messages, never from a coordinator's mapping (its processes use its segments).
        guard options.sharedMemory, options.processes == 1, let offered = welcome.sharedWeights else { return }
        do {
            let weights = try SharedSegment(opening: offered)
            let batches = try welcome.sharedBatches.map(SharedSegment.init(opening:))
            try weights.mapInAdvance()
            try batches?.mapInAdvance()
            // Sealed: the coordinator can then read our gradients in place, without a copy.
            let own = try SharedSegment(slotCount: 4, slotBytes: welcome.spec.parameterCount * welcome.precision.bytesPerValue,
                                        sealed: true)
            // Pipes are an extra: without them the step messages take the socket.
            let pipes = try? (toWorker: PipeChannel(forWriting: false), toCoordinator: PipeChannel(forWriting: true))
            try send(AttachMessage(segment: own.info, toWorkerPipe: pipes?.toWorker.path ?? "",
                                   toCoordinatorPipe: pipes?.toCoordinator.path ?? "", cpu: options.pinnedCPU).encode(),
                     what: "the offer of shared memory")
            // Only once all of it is open and offered: a failure leaves nothing half set.
            (weightsSegment, batchSegment, gradientSegment) = (weights, batches, own)
            (fromCoordinator, toCoordinator) = (pipes?.toWorker, pipes?.toCoordinator)
            logger.info("sharing memory with the coordinator on this host")
        } catch let failure as WorkerFailure {
            throw failure  // the socket itself failed: no fallback for that
        } catch {
            logger.info("no shared memory with the coordinator (\(error)); using the socket only")
        }
    }

    /// Handles the messages that came through the coordinator's pipe; drops the pipes when
    /// they failed or closed.
    func readPipe() throws -> WorkerExit? {
        guard let pipe = fromCoordinator else { return nil }
        for frames in pipe.receive() {
            lastHeard = MonotonicClock.now
            pipesActive = true
            if let exit = try handle(frames) { return exit }
        }
        if pipe !== fromCoordinator {
            // A message made us join again, with new pipes: this one is history.
        } else if let failure = pipe.failure {
            // Bytes that break the framing are the coordinator's; a failed read is ours.
            // Either way the pipe is lost, and the socket still works.
            if failure.readFailed {
                logger.warning("reading the coordinator's pipe failed (\(failure)); using the socket")
            } else {
                noteRejected(failure)
            }
            dropPipes()
        } else if pipe.isClosed {
            // The coordinator exited (or dropped the pipe). Back to the socket, where a
            // restarted coordinator will hear our heartbeats and ask us to say hello.
            logger.notice("the coordinator closed its pipe; waiting on the socket")
            dropPipes()
        }
        return nil
    }

    func dropPipes() {
        fromCoordinator = nil
        toCoordinator = nil
        pipesActive = false
    }

    /// Once a result has gone to a coordinator on this host, the next step's weights follow
    /// within a fraction of a millisecond (the other workers' results, the sum and the
    /// optimizer step). Sleeping for them costs more on a virtual machine: the CPU halts,
    /// and waking a halted virtual CPU took 40–90 µs, sometimes milliseconds, on the
    /// development machine, against under 10 µs for a thread that polls. So poll, for at
    /// most `busyWaitSeconds`, in the idle scheduling class: the coordinator, woken on this
    /// CPU, or anything else there runs at once, and the CPU counts as idle where the
    /// kernel places woken threads. Step messages come through the pipe; whatever comes on
    /// the socket meanwhile (a heartbeat, a shutdown) waits at most that long.
    ///
    /// Only a worker pinned to a CPU does this (spawned workers are, when there are no more
    /// of them than CPUs): an idle-class thread that shares its CPU with a busy one hardly
    /// runs, so it could see its weights late, where a sleeping one is woken as an equal.
    func pollForNextMessage() {
        guard options.pinnedCPU != nil, let since = resultSentAt, pipesActive, let pipe = fromCoordinator else { return }
        let deadline = since + options.busyWaitSeconds
        guard MonotonicClock.now < deadline else { return }
        // Yielding at each turn hands the CPU at once to the coordinator when it polls here
        // too, for the last results of a step.
        CPUAffinity.poll(until: deadline) { pipe.hasInput }
    }

    /// Sends through our pipe once the coordinator uses it (and the message fits), else the
    /// socket. A pipe that fails is dropped for the socket; a socket that fails is this
    /// worker's failure (`what` names the message), never the coordinator's. False when
    /// neither could take the message now (the socket's queue is full).
    @discardableResult
    func send(_ frames: [OutgoingFrame], what: @autoclosure () -> String) throws -> Bool {
        if pipesActive, let pipe = toCoordinator {
            do {
                if try pipe.send(frames) {
                    lastSent = MonotonicClock.now
                    return true
                }
            } catch {
                logger.warning("the pipe to the coordinator failed (\(error)); using the socket")
                dropPipes()
            }
        }
        let sent = try WorkerFailure.during("sending \(what()) to the coordinator at \(escapedForLog(options.endpoint))") {
            try socket.send(frames, dontWait: true)
        }
        if sent { lastSent = MonotonicClock.now }
        return sent
    }
}
