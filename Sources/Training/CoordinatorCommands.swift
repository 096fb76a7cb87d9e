import Foundation
import Wire

/// The server carrying out what the scheduler decides: events in, commands out, and the
/// sockets, pipes, logs and clock here.
extension CoordinatorServer {
    /// Tells the scheduler of `event` and carries out its commands, and those of what they
    /// cause: a send that fails loses that worker, whose shards then go to others.
    func apply(_ event: SchedulerEvent) {
        var commands = scheduler.handle(event, now: MonotonicClock.now)
        if case .stepStarted = event { commands = wakingThisCPULast(commands) }
        var next = 0
        while next < commands.count {
            execute(commands[next])
            next += 1
            while !failedSends.isEmpty {
                let (id, reason) = failedSends.removeFirst()
                commands += scheduler.handle(.linkFailed(id, reason: reason), now: MonotonicClock.now)
            }
        }
    }

    /// Which worker gets which shard is the scheduler's; the order of the sends is not. A
    /// woken worker pinned to the CPU this thread runs on may take that CPU at once, so the
    /// workers elsewhere are woken first and that one last (each worker's own order kept).
    private func wakingThisCPULast(_ commands: [SchedulerCommand]) -> [SchedulerCommand] {
        let here = CPUAffinity.currentCPU
        func onThisCPU(_ command: SchedulerCommand) -> Bool {
            switch command {
            case let .sendWeights(id, _), let .sendTask(id, _, _, _): peersByIndex[id]?.link.cpu == here && here != nil
            default: false
            }
        }
        return commands.filter { !onThisCPU($0) } + commands.filter(onThisCPU)
    }

    private func execute(_ command: SchedulerCommand) {
        switch command {
        case let .sendWeights(id, step):
            if let peer = peersByIndex[id], step == currentStep { sendWeights(to: peer) }
        case let .sendTask(id, step, shard, reason):
            guard let peer = peersByIndex[id], let batch = step == currentStep ? currentBatch : aheadBatch else { return }
            describe(reason, shard: shard, step: step, worker: peer)
            sendTask(shard, of: batch, step: step, to: peer)
        case let .sendHeartbeat(id, step):
            if let peer = peersByIndex[id] { send(Heartbeat.encode(step: UInt64(step)), to: peer) }
        case let .declareLost(id, reason):
            counters.lostWorkers += 1
            logger.warning("worker \(name(of: id)) is lost: \(reason)")
            noteLost(id)
        case let .welcomeBack(id):
            logger.notice("worker \(name(of: id)) is back")
            if let peer = peersByIndex[id] { sendServerMap(to: peer) }
        case let .waitForWorkers(live, needed, waited):
            reportWait(live: live, needed: needed, waitedSeconds: waited)
        case .respawnWorkers:
            if let restarted = respawnExitedWorkers?(), restarted > 0 {
                logger.warning("restarted \(restarted) spawned workers that had exited")
            }
        case let .giveUp(reason):
            giveUpReason = reason
        }
    }

    private func describe(_ reason: TaskReason, shard: Int, step: Int, worker: WorkerPeer) {
        switch reason {
        case .assigned, .prefetched:
            break
        case .reassigned:
            logger.notice("shard \(shard) of step \(step) goes to worker \(worker.name)")
        case .probation:
            logger.info("shard \(shard) of step \(step) also goes to worker \(worker.name) on probation: an answer within --worker-timeout gives it full work again")
        case let .rerun(late):
            counters.rerunShards += 1
            let times = scheduler.workers[late]?.timesLate ?? 0
            logger.notice("shard \(shard) of step \(step) is late on worker \(name(of: late)) (late \(times) times so far); re-run on worker \(worker.name)")
        }
    }

    /// A warning, so that it shows under --quiet too: the run is not moving.
    private func reportWait(live: Int, needed: Int, waitedSeconds: Double) {
        if waitedSeconds == 0 {
            logger.warning("only \(live) live workers, \(needed) needed; waiting for more to join on \(endpoint) (giving up after \(Int(options.scheduling.noWorkersTimeoutSeconds)) s)")
        } else {
            logger.warning("still waiting for workers after \(Int(waitedSeconds)) s: \(live) live, \(needed) needed; giving up after \(Int(options.scheduling.noWorkersTimeoutSeconds)) s (--no-workers-timeout)")
        }
    }

    func name(of id: WorkerID) -> String { peersByIndex[id]?.name ?? "#\(id)" }
}
