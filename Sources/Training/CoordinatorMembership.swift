import Foundation
import Wire

/// Who is in the run, for the steps' callers: the wait for workers at the start, the
/// summary's table, the shutdown.
extension CoordinatorServer {
    /// By name, numbers in names in numeric order (worker-2 before worker-10), then by the
    /// order they joined: spawned workers join in any order, and a table reads better sorted.
    public var workerSummaries: [WorkerSummary] {
        peers.values.sorted {
            switch $0.name.localizedStandardCompare($1.name) {
            case .orderedAscending: true
            case .orderedDescending: false
            case .orderedSame: $0.index < $1.index
            }
        }.map { $0.summary(scheduler.workers[$0.index]) }
    }

    /// Serves hellos until `count` workers are live.
    public func waitForWorkers(count: Int, timeoutSeconds: Double? = nil) throws {
        let start = MonotonicClock.now
        var lastNotice = start
        while liveWorkerCount < count {
            let now = MonotonicClock.now
            if let timeoutSeconds, now - start > timeoutSeconds {
                throw CoordinatorError.workersDidNotArrive(expected: count, arrived: liveWorkerCount, seconds: timeoutSeconds)
            }
            if now - lastNotice >= 5 {
                logger.notice("waiting for workers: \(liveWorkerCount) of \(count) connected on \(endpoint)")
                lastNotice = now
            }
            try pump(timeoutMilliseconds: 100)
            // Those already here hear from us while they wait: a worker that joined first
            // would otherwise take the silence for a coordinator that is gone.
            apply(.tick)
        }
    }

    /// Tells every worker to stop, and gives the messages a moment to leave. Lost workers
    /// too: one declared lost may still run (it hung for a while, or its link was cut), and
    /// should stop now rather than wait out its timeout for a coordinator that is gone.
    public func shutdownWorkers(reason: String) {
        for peer in peers.values.sorted(by: { $0.index < $1.index }) {
            let notice = Notice(reason: reason).encode(.shutdown)
            if isAlive(peer) {
                send(notice, to: peer)
            } else {
                peer.link.sendByEveryPath(notice)
            }
        }
        try? socket.setLinger(milliseconds: 1000)
    }
}
