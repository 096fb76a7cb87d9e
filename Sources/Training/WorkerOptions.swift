import Foundation
import MNISTData
import NeuralNet
import Wire

public struct WorkerOptions: Sendable {
    public var endpoint = "tcp://127.0.0.1:5555"
    public var name = "worker"
    /// The model this worker was started for; nil takes whatever the coordinator trains.
    public var expectedSpec: ModelSpec?
    /// How long to keep trying to reach a coordinator that is not up yet, or back.
    public var connectTimeoutSeconds = 120.0
    /// Silence from the coordinator after which the worker says hello again (for up to
    /// `connectTimeoutSeconds`), to rejoin it once its link is back, or a new one.
    public var coordinatorTimeoutSeconds = 10.0
    /// Exit as soon as this process (the coordinator that spawned us) is gone.
    public var parentPID: Int32?
    /// CURVE: the coordinator's public key and this worker's secret key.
    public var curveServerKey: String?
    public var curveSecretKey: String?
    /// Move weights and gradients through shared memory when the coordinator shares this host.
    public var sharedMemory = true
    /// The CPU this worker pinned itself to (`worker --cpu`), told to a coordinator on this host.
    public var pinnedCPU: Int?
    /// After a result goes to a coordinator on this host, how long a worker pinned to a CPU
    /// polls for its next message (at idle priority) before sleeping; 0 sleeps at once. See
    /// `pollForNextMessage`.
    public var busyWaitSeconds = 0.001
    /// The run secret to prove in hellos, or the file to read it from when the coordinator
    /// asks (read then, not at start: the coordinator writes it once it is up).
    public var runSecret: RunSecret?
    public var runSecretPath: String?
    /// The training set this worker loaded itself (`worker --data DIR`): a coordinator that
    /// trains on the same bytes sends only sample indices. Nil: the samples come in the tasks.
    public var trainingSet: Dataset?
    /// Serve a range of the parameters at this endpoint when the coordinator asks
    /// (`--parameter-servers`); `tcp://HOST:0` picks a free port. Nil: do not serve.
    public var serveEndpoint: String?
    /// Compute processes behind this worker's one link (`worker --processes K`, a power of
    /// two): 1 computes in this process; K > 1 spawns K processes on this host and sends one
    /// result per aligned block of K shards (`HostCompute`).
    public var processes = 1
    /// The log level the spawned compute processes log at.
    public var processLogLevel = "warning"

    public init() {}
}

/// How a worker's run ended, when the coordinator (or its absence) ended it. The worker's
/// own failures are thrown as `WorkerFailure` instead.
public enum WorkerExit: Equatable, CustomStringConvertible {
    case shutdown(reason: String)
    case rejected(reason: String)
    case coordinatorLost(seconds: Double)
    case neverConnected(seconds: Double)
    case parentExited
    case noRunSecret(reason: String)

    public var description: String {
        switch self {
        case let .shutdown(reason): "coordinator said shut down: \(escapedForLog(reason))"
        case let .rejected(reason): "coordinator refused this worker: \(escapedForLog(reason))"
        case let .noRunSecret(reason): "cannot prove this run's secret: \(reason)"
        case let .coordinatorLost(seconds): String(format: "no word from the coordinator for %.0f s; it is gone", seconds)
        case let .neverConnected(seconds): String(format: "no coordinator answered within %.0f s", seconds)
        case .parentExited: "the coordinator that started this worker has exited"
        }
    }

    public var isSuccess: Bool { if case .shutdown = self { true } else { false } }

    /// The worker's exit status: 0 when its run is over (told to shut down, or the
    /// coordinator that spawned it is gone), 2 when refused or without a coordinator.
    /// `WorkerFailure.exitStatus` (1) is the third.
    public var exitStatus: Int32 {
        switch self {
        case .shutdown, .parentExited: 0
        case .rejected, .coordinatorLost, .neverConnected, .noRunSecret: 2
        }
    }
}

/// A failure of this worker itself (a send, a pipe or socket call, shared memory), as
/// opposed to a malformed message from the coordinator, which is rejected and counted. It
/// ends the worker: `action` names what failed, `reason` why.
public struct WorkerFailure: Error, CustomStringConvertible {
    public let action: String
    public let reason: String

    public var description: String { "\(action) failed: \(reason)" }

    /// The worker's exit status for its own failures (see `WorkerExit.exitStatus`).
    public static let exitStatus: Int32 = 1

    /// Runs `body`, a local operation: any error it throws becomes a `WorkerFailure` for
    /// `action`, so that nothing mistakes it for the coordinator's fault.
    static func during<R>(_ action: @autoclosure () -> String, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let failure as WorkerFailure {
            throw failure
        } catch {
            throw WorkerFailure(action: action(), reason: "\(error)")
        }
    }
}
