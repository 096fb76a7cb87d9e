import ArgumentParser
import Foundation
import Logging
import MNISTData
import NeuralNet
import Training
import Wire

struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Data-parallel training over ZeroMQ: a worker.",
        discussion: """
        Connects to a coordinator, receives each step's weights and its shards of the batch, \
        and returns gradient sums. Needs no data files: the coordinator ships the samples; with \
        --data DIR the worker loads the training set itself, and a coordinator training on the \
        same samples (checked by SHA-256 at the hello) sends it only their indices. \
        Waits for a coordinator that is not up yet, and exits when it says shut down. When the \
        coordinator falls silent for --coordinator-timeout, the worker says hello again for up to \
        --connect-timeout: it rejoins once the link is back, or a coordinator restarted at the same \
        endpoint, and exits otherwise.

        Exit status: 0 when the coordinator said shut down (or the coordinator that spawned \
        it exited); 2 when the coordinator refused it or stayed unreachable; 1 when the \
        worker itself failed (its socket, a send), with a line naming what failed. A \
        malformed message from the coordinator is ignored and counted, and the first one logged.

        Examples:
          worker --connect tcp://10.0.0.1:5555
          worker --connect tcp://127.0.0.1:5555 --hidden 256,128
                                  join only a coordinator training 784-256-128-10
          worker --connect tcp://10.0.0.1:5555 --processes 4
                                  one link for this host, four compute processes
          worker --connect tcp://10.0.0.1:5555 --serve auto
                                  also offer to serve a parameter range, at this
                                  host's address towards 10.0.0.1 and a free port
        """
    )

    @Option(help: "Coordinator endpoint.")
    var connect = "tcp://127.0.0.1:5555"

    @Option(help: "Name shown in the coordinator's logs and summary (default: host-pid).")
    var name: String?

    @Option(help: "Only join a coordinator training this MLP (hidden widths, e.g. 128); default: any model.")
    var hidden: String?

    @Option(help: "Input width and classes of the model given with --hidden.")
    var inputSize = 784

    @Option(help: "Only join a coordinator training this network, typed as for `coordinator --model` (e.g. conv5x32,pool2,dense10); default: any model.")
    var model: String?

    @Option(help: "The image shape HxWxC the network given with --model reads.")
    var inputShape = "28x28x1"

    @Option(help: "Classes of the model given with --hidden.")
    var classes = 10

    @Option(help: "Seconds to keep trying to reach the coordinator: at start, and again after it fell silent.")
    var connectTimeout: Double = 120

    @Option(help: "Seconds of silence after which the worker says hello again (for up to --connect-timeout) to rejoin.")
    var coordinatorTimeout: Double = 10

    @Option(help: ArgumentHelp("The run secret's file, written by `coordinator --secret-file PATH` (mode 0600, this user's); '-' reads it from standard input. Default: $\(RunSecret.environmentVariable) (set for spawned workers), else the file a coordinator on this host writes for the --connect port (\(RunSecret.defaultFolder)/run-secret-tcp-PORT).", valueName: "path"))
    var secretFile: String?

    @Option(help: "CURVE: the coordinator's public key, or a file holding it.")
    var curveServerKey: String?

    @Option(help: "CURVE: this worker's secret key file (from `coordinator keygen`); a file only, as a key on the command line would show in `ps`.")
    var curveSecretKey: String?

    @Flag(inversion: .prefixedNo, help: "On the coordinator's host, move weights, gradients and batches through shared memory and the step's messages through pipes; --no-shared-memory uses the socket for everything.")
    var sharedMemory = true

    @Option(help: "Exit when this process is no longer the parent (set by --spawn-workers).")
    var parentPid: Int32?

    @Option(help: "Pin this worker and its threads to CPU N, and tell a coordinator on this host (coordinator --spawn-workers gives each spawned worker its own CPU by default).")
    var cpu: Int32?

    @Option(help: "With --cpu, on the coordinator's host: after sending a result, poll this many microseconds for the next step's weights before sleeping (at idle priority: anything else on the CPU goes first). Waking a sleeping CPU can cost more than the wait on a virtual machine. 0 sleeps at once.")
    var busyWaitUs = 1000

    @Option(help: ArgumentHelp("Load the training set from this folder (as `coordinator --data`): a coordinator with the same samples sends only their indices, else the samples as without it.", valueName: "dir"))
    var data: String?

    @Option(help: "With --data: use only the first N training samples (as `coordinator --train-limit`).")
    var trainLimit: Int?

    @Option(help: ArgumentHelp("Offer to serve a range of the parameters for a coordinator run with --parameter-servers, at tcp://HOST:PORT (port 0 picks a free one; other workers connect to it, so HOST must be an address they reach), or at auto (auto:PORT): the address this host uses to reach the coordinator (the source of its route there, as `ip route get` shows; 127.0.0.1 for a coordinator on loopback) and a free port (or PORT). The endpoint is announced to the other workers.", valueName: "endpoint"))
    var serve: String?

    @Option(help: ArgumentHelp("Compute processes behind this worker's one link (a power of two, 1 to \(Hello.maximumSlots)): the step's weights arrive once for the host and reach the K processes through shared memory; the host is given aligned blocks of K shards and sends one sum per block. 1 computes in this process.", valueName: "K"))
    var processes = 1

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "notice"

    func validate() throws {
        if let hidden, (try? parseHidden(hidden)) == nil {
            throw ValidationError("--hidden must be positive integers separated by commas (got '\(hidden)')")
        }
        if hidden != nil && model != nil { throw ValidationError("--hidden and --model both name the network: give one") }
        if model != nil { _ = try expectedSpec() }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        guard connectTimeout > 0, coordinatorTimeout > 0 else { throw ValidationError("timeouts must be positive") }
        if let cpu, cpu < 0 { throw ValidationError("--cpu must be a CPU number (0 or more)") }
        if let trainLimit, trainLimit <= 0 { throw ValidationError("--train-limit must be positive (got \(trainLimit))") }
        if trainLimit != nil && data == nil { throw ValidationError("--train-limit needs --data") }
        guard (0...1_000_000).contains(busyWaitUs) else { throw ValidationError("--busy-wait-us must be 0 to 1000000 (got \(busyWaitUs))") }
        guard processes >= 1, processes <= Int(Hello.maximumSlots), processes & (processes - 1) == 0 else {
            throw ValidationError("--processes must be a power of two from 1 to \(Hello.maximumSlots) (got \(processes)): a host sums an aligned block of shards, and blocks are powers of two")
        }
        if processes > 1 && cpu != nil { throw ValidationError("--cpu pins one process; with --processes the host's processes are not pinned") }
        if let serve, !ServeAddress.isValid(serve) {
            throw ValidationError("--serve takes tcp://HOST:PORT, auto or auto:PORT (got '\(serve)')")
        }
    }

    /// The model named by --hidden or --model (nil: any).
    private func expectedSpec() throws -> ModelSpec? {
        if let hidden { return try parseHidden(hidden) }
        guard let model else { return nil }
        let sizes = inputShape.split(separator: "x", omittingEmptySubsequences: false).compactMap { Int($0) }
        guard sizes.count == 3, sizes.allSatisfy({ (1...(1 << 16)).contains($0) }) else {
            throw ValidationError("--input-shape must be HxWxC, e.g. 28x28x1 (got '\(inputShape)')")
        }
        do {
            return try ModelSpec.parse(model, input: ImageShape(height: sizes[0], width: sizes[1], channels: sizes[2]),
                                       classes: classes)
        } catch {
            throw ValidationError("\(error)")
        }
    }

    private func parseHidden(_ text: String) throws -> ModelSpec {
        let widths = text.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard widths.count == text.split(separator: ",").count else { throw ValidationError("bad --hidden") }
        return try ModelSpec.mlp(inputSize: inputSize, hidden: widths, classes: classes)
    }

    func run() throws {
        // First, so that libzmq's I/O thread starts on the same CPU.
        let pinError = cpu.flatMap { CPUAffinity.pinCurrentThread(to: Int($0)) }
        let level = Logger.Level(rawValue: logLevel) ?? .notice
        let workerName = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        BLAS.setThreadCount(1)
        let logger = Logger(label: workerName)
        if let pinError, let cpu { logger.warning("could not pin to CPU \(cpu): \(pinError); running unpinned") }
        var options = WorkerOptions()
        options.endpoint = connect
        options.name = workerName
        options.expectedSpec = try expectedSpec()
        options.connectTimeoutSeconds = connectTimeout
        options.coordinatorTimeoutSeconds = coordinatorTimeout
        options.parentPID = parentPid
        options.sharedMemory = sharedMemory
        options.busyWaitSeconds = Double(busyWaitUs) / 1e6
        options.pinnedCPU = pinError == nil ? cpu.map(Int.init) : nil
        do {
            options.serveEndpoint = try serve.map { try ServeAddress.endpoint(for: $0, coordinator: connect) }
        } catch {
            FileHandle.standardError.write(Data("\(workerName): error: \(error)\n".utf8))
            throw ExitCode(WorkerFailure.exitStatus)
        }
        options.processes = processes
        options.processLogLevel = level < .notice ? level.rawValue : "warning"
        try addCredentials(to: &options)
        try addTrainingSet(to: &options, logger: logger)
        let exit: WorkerExit
        do {
            let node = try WorkerNode(options: options, logger: logger)
            exit = try node.run()
            if node.rejectedMessages > 0 {
                logger.notice("\(node.rejectedMessages) malformed messages from the coordinator were refused in all")
            }
            if let server = node.parameterServer {
                logger.notice("parameter server: applied \(server.stepsApplied) steps from \(server.rangesAccepted) gradient ranges, \(String(format: "%.3f", 1000 * server.applySeconds / Double(max(1, server.stepsApplied)))) CPU ms each to sum, update and send; refused \(server.rejectedMessages) messages, \(server.staleMessages) stale; \(server.unprovenConnectionsClosed()) connections closed before proving the run secret (\(server.refusedConnections) refused: too many open)")
            }
            if options.processes > 1 {
                logger.info("\(node.heartbeatsWhileComputing) heartbeats sent upstream while this host's processes computed")
            }
            if options.trainingSet != nil {
                logger.info("\(node.tasksGathered) of \(node.tasksDone) tasks gathered from this worker's own training set")
            }
        } catch {
            // A `WorkerFailure` names what failed; anything else failed while starting.
            FileHandle.standardError.write(Data("\(workerName): error: \(error)\n".utf8))
            throw ExitCode(WorkerFailure.exitStatus)
        }
        if exit.isSuccess {
            logger.info("\(exit)")
        } else {
            FileHandle.standardError.write(Data("\(workerName): \(exit) (coordinator \(connect))\n".utf8))
        }
        if exit.exitStatus != 0 { throw ExitCode(exit.exitStatus) }
    }

    /// The run secret (a file, standard input, or the environment of a spawned worker) and
    /// the CURVE keys.
    private func addCredentials(to options: inout WorkerOptions) throws {
        if let secretFile {
            options.runSecretPath = secretFile
            if secretFile == "-" { options.runSecret = try RunSecret.read(from: "-") }  // stdin cannot wait
        } else if let hex = ProcessInfo.processInfo.environment[RunSecret.environmentVariable] {
            options.runSecret = try RunSecret(hex: hex)
        } else {
            options.runSecretPath = RunSecret.defaultPath(forEndpoint: connect)
        }
        if let serverKey = curveServerKey {
            options.curveServerKey = try CurveKeys.load(serverKey)
            if let path = curveSecretKey {
                options.curveSecretKey = try CurveKeys.loadSecret(fromFile: path)
            } else if let secret = ProcessInfo.processInfo.environment[WorkerSpawner.secretKeyVariable] {
                options.curveSecretKey = secret
            } else {
                throw ValidationError("--curve-server-key needs this worker's --curve-secret-key")
            }
        }
    }

    /// `--data`: this worker's own copy of the training set; a folder it cannot load ends it
    /// with one line, as any failure of its own does.
    private func addTrainingSet(to options: inout WorkerOptions, logger: Logger) throws {
        guard let data else { return }
        do {
            var train = try DataDirectory.load(.train, from: data)
            if let trainLimit { train = train.prefix(trainLimit) }
            options.trainingSet = train
            logger.info("loaded \(train.count) training samples from \(data)")
        } catch {
            FileHandle.standardError.write(Data("\(options.name): error: --data: \(error)\n".utf8))
            throw ExitCode(WorkerFailure.exitStatus)
        }
    }
}
