import Foundation

/// Starts worker processes on this host for `coordinator --spawn-workers N`.
///
/// The workers are told this process's pid: each one exits as soon as its parent is gone,
/// so they never outlive the coordinator, even when it is killed with SIGKILL.
public final class WorkerSpawner {
    public private(set) var processes: [Process] = []
    /// How each one was started, by index, to start it again.
    private var plans: [LaunchPlan] = []

    /// The `worker` executable next to this one, or `$ZMQ_TRAINER_WORKER`.
    public static func workerExecutable() -> URL {
        if let override = ProcessInfo.processInfo.environment["ZMQ_TRAINER_WORKER"] {
            return URL(fileURLWithPath: override)
        }
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("worker")
    }

    public init() {}

    /// The environment variable through which a spawned worker gets its CURVE secret key
    /// (not the command line, which other users can read in `ps`).
    public static let secretKeyVariable = "ZMQ_TRAINER_CURVE_SECRET_KEY"

    /// With `pinning`, worker i is pinned to the i-th CPU this process may use, wrapping
    /// around (`worker --cpu`), so the scheduler cannot leave two workers queued on one CPU
    /// while another idles.
    /// Each worker gets `runSecret` in `RunSecret.environmentVariable`.
    public func spawn(count: Int, endpoint: String, extraArguments: [String] = [], secretKeys: [String] = [],
                      runSecret: RunSecret? = nil, servingCount: Int = 0, pinning: Bool = false) throws {
        let executable = Self.workerExecutable()
        guard FileManager.default.isExecutableFile(atPath: executable.path) else {
            throw SpawnError(reason: "no worker executable at \(executable.path); build it with `swift build`")
        }
        let plan = LaunchPlan(executable: executable, endpoint: endpoint, extraArguments: extraArguments,
                              secretKeys: secretKeys, runSecret: runSecret, servingCount: servingCount, pinning: pinning)
        for index in 0..<count {
            processes.append(try plan.launch(index))
            plans.append(plan)
        }
    }

    /// Starts again, with the same arguments, each spawned worker that has exited (the
    /// coordinator has no live worker left); returns how many were started.
    public func respawnExited() -> Int {
        var started = 0
        for index in processes.indices where !processes[index].isRunning {
            guard let process = try? plans[index].launch(index) else { continue }
            processes[index] = process
            started += 1
        }
        return started
    }

    /// Waits for the workers to exit, killing those still running after `graceSeconds`.
    public func waitForExit(graceSeconds: Double = 5) {
        let deadline = Date().addingTimeInterval(graceSeconds)
        for process in processes {
            while process.isRunning && Date() < deadline { usleep(20_000) }
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
    }

    /// Stops every worker now (on the coordinator's error path).
    public func terminateAll() {
        for process in processes where process.isRunning { process.terminate() }
    }
}

/// Everything a spawned worker is started with.
private struct LaunchPlan {
    let executable: URL
    let endpoint: String
    let extraArguments: [String]
    let secretKeys: [String]
    let runSecret: RunSecret?
    /// The first this many serve a parameter range (`worker --serve`, on a free loopback port).
    let servingCount: Int
    let pinning: Bool

    func launch(_ index: Int) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = ["--connect", endpoint, "--name", "worker-\(index)",
                             "--parent-pid", String(getpid())] + extraArguments
            + (pinning ? ["--cpu", String(CPUAffinity.allowedCPU(index))] : [])
            + (index < servingCount ? ["--serve", "tcp://127.0.0.1:0"] : [])
        var environment = ProcessInfo.processInfo.environment
        // Workers compute on one thread each: no OpenBLAS thread pool (it would be made
        // when the library loads, before the worker could pin itself).
        if environment["OPENBLAS_NUM_THREADS"] == nil { environment["OPENBLAS_NUM_THREADS"] = "1" }
        if index < secretKeys.count { environment[WorkerSpawner.secretKeyVariable] = secretKeys[index] }
        environment[RunSecret.environmentVariable] = runSecret?.hex
        process.environment = environment
        try process.run()
        return process
    }
}

public struct SpawnError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// The endpoint a local worker connects to for a bound endpoint: a wildcard address
/// (`tcp://0.0.0.0:P`, `tcp://*:P`) becomes loopback.
public func connectableEndpoint(_ bound: String) -> String {
    for wildcard in ["tcp://0.0.0.0:", "tcp://*:", "tcp://[::]:"] where bound.hasPrefix(wildcard) {
        return "tcp://127.0.0.1:" + bound.dropFirst(wildcard.count)
    }
    return bound
}
