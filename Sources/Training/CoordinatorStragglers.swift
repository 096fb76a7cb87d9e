import Wire

/// What the coordinator does between a step's first result and its last when workers on
/// this host hold every CPU: the first worker to finish frees a CPU, and only that one.
extension CoordinatorServer {
    /// Gathers the next batch and sends its tasks ahead, then waits for the rest of the
    /// step's results — on the CPU the finished worker freed, polling, when it can.
    ///
    /// Why that CPU: woken by the first result, the kernel may run this thread on the CPU of
    /// a worker still computing, which then waits for the gather (0.07–0.09 ms here; a trace
    /// caught it in a quarter of the steps). Why poll: the last result then reaches a thread
    /// that is running, instead of one whose CPU may have halted (waking a halted virtual CPU
    /// took 40–90 µs here, sometimes milliseconds). The poll runs at idle priority and yields
    /// at every turn, so the finished worker on that CPU (scaling its next input, or polling
    /// for its weights) is never held up; after `busyWaitSeconds` this thread sleeps as
    /// before.
    func sendNextBatchAheadAndAwaitTheRest(_ next: () -> BatchView?, step: Int) {
        func sendAhead() { if let batch = next() { prefetch(batch, step: step + 1) } }
        let cpu = options.busyWaitSeconds > 0 ? cpuFreedForWaiting() : nil
        let moved = cpu.map { cpu in
            CPUAffinity.onCPU(cpu) {
                sendAhead()
                CPUAffinity.poll(until: MonotonicClock.now + options.busyWaitSeconds) { resultIsWaiting() }
            }
        } ?? false
        if !moved { sendAhead() }
    }

    /// The CPU of a worker on this host that has no shard left in this step, when every
    /// worker still computing is a worker on this host pinned to a CPU of its own (known
    /// from its attach): then polling on that CPU takes time from none of them.
    private func cpuFreedForWaiting() -> Int? {
        var computing = 0
        for peer in peers.values where isComputing(peer) {
            guard peer.link.resultsArriveOutsideTheSocket, peer.link.cpu != nil else { return nil }
            computing += 1
        }
        guard computing > 0 else { return nil }
        for peer in peers.values where isAlive(peer) && !isComputing(peer) {
            guard let cpu = peer.link.cpu, !peers.values.contains(where: { isComputing($0) && $0.link.cpu == cpu }) else { continue }
            return cpu
        }
        return nil
    }

    /// Whether the pipe of some worker still computing has something to read, a result or
    /// end of file, which the caller's next `pump` reads (true too if none is computing:
    /// nothing to wait for).
    private func resultIsWaiting() -> Bool {
        var computing = false
        for peer in peers.values where isComputing(peer) {
            if peer.link.mayHaveInput { return true }
            computing = true
        }
        return !computing
    }
}
