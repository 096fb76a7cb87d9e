import CAffinity
import Foundation

/// Which CPUs this process runs on: `taskset`, cgroup cpusets and `mpirun --bind-to` all
/// narrow it, so CPUs are counted within the allowed set, never by raw number.
public enum CPUAffinity {
    /// How many CPUs this process may use.
    public static var allowedCount: Int { max(1, Int(zmqt_allowed_cpu_count())) }

    /// The `index`-th allowed CPU (wrapping around), by its kernel number.
    public static func allowedCPU(_ index: Int) -> Int {
        let cpu = zmqt_allowed_cpu(Int32(index % allowedCount))
        return cpu >= 0 ? Int(cpu) : index
    }

    /// The CPU the calling thread runs on at this moment (nil if the kernel cannot say).
    public static var currentCPU: Int? {
        let cpu = zmqt_current_cpu()
        return cpu >= 0 ? Int(cpu) : nil
    }

    /// Runs `body` with the calling thread in the idle scheduling class, where anything else
    /// that becomes runnable on its CPU takes the CPU at once; the usual class afterwards.
    /// Where the kernel refuses, `body` runs as it is.
    public static func atIdlePriority<R>(_ body: () throws -> R) rethrows -> R {
        let switched = zmqt_set_idle_policy(1) == 0
        defer { if switched { zmqt_set_idle_policy(0) } }
        return try body()
    }

    /// Polls `isReady` until it says true or `deadline` (a `MonotonicClock` time) passes, in
    /// the idle scheduling class and yielding at every turn: a thread that would otherwise
    /// sleep on a CPU with nothing else to do, kept awake so that what it waits for reaches
    /// it at once, while anything else on that CPU (another such poller too) runs first.
    public static func poll(until deadline: Double, _ isReady: () -> Bool) {
        atIdlePriority {
            while !isReady() && MonotonicClock.now < deadline { sched_yield() }
        }
    }

    /// Runs `body` with the calling thread on `cpu` alone, then lets it run wherever it could
    /// before; false (and `body` not run) if the kernel would not move it there.
    public static func onCPU(_ cpu: Int, _ body: () throws -> Void) rethrows -> Bool {
        // On the stack: the coordinator does this every step.
        try withUnsafeTemporaryAllocation(byteCount: zmqt_affinity_mask_bytes(), alignment: 8) { mask in
            guard zmqt_get_affinity(mask.baseAddress) == 0, zmqt_pin_to_cpu(Int32(cpu)) == 0 else { return false }
            defer { zmqt_set_affinity(mask.baseAddress) }
            try body()
            return true
        }
    }

    /// Pins the calling thread (and the threads it starts afterwards) to `cpu`; nil, or why not.
    @discardableResult
    public static func pinCurrentThread(to cpu: Int) -> String? {
        zmqt_pin_to_cpu(Int32(cpu)) == 0 ? nil : String(cString: strerror(errno))
    }
}
