import ArgumentParser
import Foundation
import Logging
import MNISTData
import NeuralNet
import Training
import Wire

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train on MNIST (the default command).",
        discussion: """
        Examples:
          coordinator --local --epochs 10 --summary run.json
          coordinator --spawn-workers 2 --batch-size 512 --save-model model.bin
          coordinator --workers 3 --bind tcp://127.0.0.1:5555 --shards 6
        """
    )

    @Option(help: "Folder with mnist_train.csv and mnist_test.csv, or MNIST-format IDX files.")
    var data = "data"

    @Option(help: "Passes over the training set.")
    var epochs = TrainingConfig().epochs

    @Option(help: "Samples per global batch (one optimizer step; default \(TrainingConfig().batchSize)).")
    var batchSize: Int?

    @Option(help: "Weak scaling, instead of --batch-size: samples per worker; the global batch is this times the workers the run is started for (--workers or --spawn-workers; --local counts one), fixed at start, so that who joins or leaves later changes neither the batch nor the weights.")
    var batchSizePerWorker: Int?

    @Option(help: "Hidden layer widths, comma-separated (e.g. 256,128); ReLU layers, then a softmax output. Default 128.")
    var hidden: String?

    @Option(help: "A network other than an MLP, its layers comma-separated: convKxC (K×K kernel, C channels, stride 1, padding K/2, ReLU), poolP (P×P max pooling), denseN (ReLU; the last one is the softmax output and has the class count). Example: conv5x32,pool2,conv5x64,pool2,dense128,dense10. Not with --hidden.")
    var model: String?

    @Option(help: "Initial learning rate lr0 (SGD or Adam).")
    var learningRate: Float = TrainingConfig().learningRate

    @Option(help: "Learning-rate decay: lr = lr0 / (1 + decay · step).")
    var decay: Float = TrainingConfig().decay

    @Option(help: "SGD momentum (ignored by Adam).")
    var momentum: Float = TrainingConfig().momentum

    @Option(help: "The update rule: sgd (momentum and decay, the default) or adam (use a smaller --learning-rate, e.g. 0.001).")
    var optimizer = TrainingConfig().optimizer.rawValue

    @Option(help: "Adam's first-moment decay β1.")
    var beta1: Float = TrainingConfig().beta1

    @Option(help: "Adam's second-moment decay β2.")
    var beta2: Float = TrainingConfig().beta2

    @Option(help: "L2 regularisation λ: adds λ/2·Σw² over the weights (not biases) to the loss (e.g. 1e-4).")
    var l2: Float = 0

    @Option(help: "Dropout rate on the hidden layers' outputs while training (e.g. 0.2); masks follow from the seed, so runs stay reproducible.")
    var dropout: Float = 0

    @Option(help: "Seed for the initial weights and the data order.")
    var seed: UInt64 = TrainingConfig().seed

    @Option(help: "Shards per batch (default: one per worker; 1 with --local). Same seed and shards give the same weights, bit for bit, with any number of workers.")
    var shards: Int?

    @Flag(help: "Train in this process, without sockets.")
    var local = false

    @Option(help: "Wait for this many workers before training starts.")
    var workers: Int?

    @Option(help: "Start this many local worker processes (implies --workers).")
    var spawnWorkers: Int?

    @Option(help: "ZeroMQ endpoint to bind.")
    var bind = "tcp://127.0.0.1:5555"

    @Flag(inversion: .prefixedNo, help: "Pin each spawned worker to a CPU of its own when there are no more workers than CPUs this process may use, as `mpirun --bind-to core` does; --no-pin-workers leaves them to the scheduler.")
    var pinWorkers = true

    @Flag(inversion: .prefixedNo, help: "Workers on this host move weights, gradients and batches through shared memory and the step's messages through pipes; --no-shared-memory sends everything through the socket.")
    var sharedMemory = true

    @Option(help: "With workers on this host pinned to CPUs (spawned ones are): microseconds to poll for the step's last results on a CPU the first finished worker freed, and, passed on to spawned workers, to poll for their next weights after a result, before sleeping. Polling runs at idle priority; waking a sleeping CPU can cost more than the wait on a virtual machine. 0 sleeps at once.")
    var busyWaitUs = 1000

    @Option(help: "Once bound, write the endpoint workers should connect to into this file (for launchers; the port filled in).")
    var endpointFile: String?

    @Option(help: ArgumentHelp("Write this run's secret here (created 0600, replaced atomically, removed at exit) for workers started by hand or by a launcher: `worker --secret-file PATH`. Every worker's hello must prove it. Default: \(RunSecret.defaultFolder)/run-secret-tcp-PORT, where workers on this host look by themselves; spawned workers get it in their environment.", valueName: "path"))
    var secretFile: String?

    @Option(help: "Precision of weights and gradients on the wire: fp32, fp16 or bf16 (16-bit halves the bytes; arithmetic stays fp32). --local rounds the same way, so it still matches a distributed run bit for bit.")
    var wirePrecision = "fp32"

    @Option(help: "CURVE: this coordinator's secret key file (from `coordinator keygen`; a file only, as a key on the command line would show in `ps`); encrypts all traffic and admits only --authorized-keys.")
    var curveSecretKey: String?

    @Option(help: "CURVE: a file of worker public keys (one per line) or a folder of .pub files.")
    var authorizedKeys: String?

    @Flag(help: "Allow binding to a non-loopback address without CURVE (anyone who reaches the port can join and read the data).")
    var insecure = false

    @Option(help: "With fewer live workers than this, training pauses until more join (default 1).")
    var minWorkers = 1

    @Option(help: "Seconds without an answer after which a worker is declared lost.")
    var workerTimeout: Double = 5

    @Option(help: "Seconds training may wait for workers (every one lost, or fewer than --min-workers) before the coordinator gives up with an error; the wait is reported every 10 s, and workers it spawned that exited are started again.")
    var noWorkersTimeout: Double = 300

    @Option(help: "Seconds to wait for the workers to connect.")
    var startupTimeout: Double = 120

    @Option(help: "Stop after this many steps (for quick experiments).")
    var maxSteps: Int?

    @Option(help: "Train on the first N training samples only.")
    var trainLimit: Int?

    @Option(help: "Write checkpoints to this file (atomically), at every epoch end and every --checkpoint-every steps.")
    var checkpoint: String?

    @Option(help: "Steps between checkpoints (besides epoch ends).")
    var checkpointEvery: Int?

    @Option(help: "Continue the run saved in this checkpoint (the same settings are required); keeps checkpointing there unless --checkpoint says otherwise.")
    var resume: String?

    @Option(help: "Write the trained model to this file.")
    var saveModel: String?

    @Option(help: "Write a JSON summary of the run to this file.")
    var summary: String?

    @Option(help: "Write metrics as JSON Lines to this file: one line per epoch (and per --metrics-every steps).")
    var metrics: String?

    @Option(help: "Also write a metrics line every K steps.")
    var metricsEvery: Int?

    @Flag(help: "Print no progress or summary, and log only warnings and errors.")
    var quiet = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "notice"

    func validate() throws {
        guard epochs > 0 else { throw ValidationError("--epochs must be positive") }
        try validateBatchSize()
        guard (try? parseHidden()) != nil else {
            throw ValidationError("--hidden must be positive integers separated by commas, e.g. 256,128 (got '\(hidden ?? "")')")
        }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive") }
        guard decay >= 0, momentum >= 0, momentum < 1 else {
            throw ValidationError("--decay must be ≥ 0 and --momentum in [0, 1)")
        }
        if let shards, shards < 1 || shards > globalBatchSize {
            throw ValidationError("--shards must be between 1 and the batch size (\(globalBatchSize))")
        }
        if local && (workers != nil || spawnWorkers != nil) {
            throw ValidationError("--local trains in this process; it cannot be combined with --workers or --spawn-workers")
        }
        if !local && workers == nil && spawnWorkers == nil {
            throw ValidationError("say how to train: --local, --spawn-workers N, or --workers N (workers started with the `worker` command)")
        }
        if (curveSecretKey == nil) != (authorizedKeys == nil) {
            throw ValidationError("--curve-secret-key and --authorized-keys go together")
        }
        if !local && curveSecretKey == nil && !insecure && !isLoopback(bind) {
            throw ValidationError("""
                refusing to bind \(bind) without encryption: anyone who reaches it could join the run. \
                Use CURVE (--curve-secret-key, --authorized-keys; see `coordinator keygen`), or say --insecure
                """)
        }
        if hidden != nil && model != nil {
            throw ValidationError("--hidden and --model both name the network: give one (--model ends with denseN for an MLP's layers)")
        }
        guard minWorkers >= 1 else { throw ValidationError("--min-workers must be at least 1") }
        guard noWorkersTimeout > 0, noWorkersTimeout <= 1e9 else {
            throw ValidationError("--no-workers-timeout must be a positive number of seconds (got \(noWorkersTimeout))")
        }
        guard (0...1_000_000).contains(busyWaitUs) else { throw ValidationError("--busy-wait-us must be 0 to 1000000 (got \(busyWaitUs))") }
        guard OptimizerKind(rawValue: optimizer) != nil else {
            throw ValidationError("--optimizer must be sgd or adam (got '\(optimizer)')")
        }
        guard dropout >= 0 && dropout < 1 else { throw ValidationError("--dropout must be in [0, 1) (got \(dropout))") }
        guard l2 >= 0 else { throw ValidationError("--l2 must not be negative (got \(l2))") }
        guard beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 else {
            throw ValidationError("--beta1 and --beta2 must be in [0, 1)")
        }
        if let metricsEvery, metricsEvery < 1 { throw ValidationError("--metrics-every must be at least 1") }
        if metricsEvery != nil && metrics == nil { throw ValidationError("--metrics-every needs --metrics PATH") }
        if let checkpointEvery, checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if checkpointEvery != nil && checkpoint == nil && resume == nil {
            throw ValidationError("--checkpoint-every needs --checkpoint PATH")
        }
        if let count = workers ?? spawnWorkers, count < 1 {
            throw ValidationError("the number of workers must be at least 1")
        }
        guard WirePrecision(name: wirePrecision) != nil else {
            throw ValidationError("--wire-precision must be fp32, fp16 or bf16 (got '\(wirePrecision)')")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    func parseHidden() throws -> [Int] {
        let widths = (hidden ?? "128").split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !widths.isEmpty, widths.allSatisfy({ ($0 ?? 0) > 0 }) else { throw ValidationError("bad --hidden") }
        return widths.map { $0! }
    }

    /// Loopback TCP addresses and host-local transports.
    func isLoopback(_ endpoint: String) -> Bool {
        if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
        guard endpoint.hasPrefix("tcp://") else { return false }
        let address = endpoint.dropFirst("tcp://".count)
        let host = address.hasPrefix("[") ? String(address.prefix { $0 != "]" }.dropFirst()) : String(address.prefix { $0 != ":" })
        return host.hasPrefix("127.") || host == "localhost" || host == "::1"
    }

    var precision: WirePrecision { WirePrecision(name: wirePrecision) ?? .fp32 }

    var config: TrainingConfig {
        var config = TrainingConfig()
        config.hidden = model == nil ? (try? parseHidden()) ?? [128] : []
        config.model = model
        config.epochs = epochs
        config.batchSize = globalBatchSize
        config.learningRate = learningRate
        config.decay = decay
        config.momentum = momentum
        config.optimizer = OptimizerKind(rawValue: optimizer) ?? .sgd
        config.beta1 = beta1
        config.beta2 = beta2
        config.l2 = l2
        config.dropout = dropout
        config.seed = seed
        config.shardCount = shards ?? (local ? 1 : (spawnWorkers ?? workers ?? 1))
        config.maximumSteps = maxSteps
        config.trainingLimit = trainLimit
        return config
    }

    func run() throws {
        var level = Logger.Level(rawValue: logLevel) ?? .notice
        if quiet && level < .warning { level = .warning }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        BLAS.setThreadCount(1)
        do {
            try train()
        } catch let error as CleanExit {
            throw error
        } catch {
            OutputFile.standardError.writeIgnoringErrors("error: \(error)\n")
            throw ExitCode.failure
        }
    }

    private func train() throws {
        let logger = Logger(label: "coordinator")
        let (trainSet, testSet) = try DataDirectory.loadTrainAndTest(from: data, trainLimit: trainLimit)
        logger.info("loaded \(trainSet.count) training and \(testSet.count) test samples from \(data)")

        let reporter = ConsoleReporter(quiet: quiet)
        let config = self.config
        // Before any socket is bound or worker started: a bad checkpoint is a mistake to
        // report at once, not after the workers joined.
        let resumed = try loadCheckpoint(config: config, train: trainSet)
        if let path = checkpoint ?? resume { AtomicFile.removeStaleTemporaries(of: path) }
        let summaryRecord: RunSummary
        if local {
            let trainer = try makeTrainer(config: config, train: trainSet, test: testSet,
                                          source: LocalShardSource(precision: precision), resumed: resumed)
            try run(trainer, reporter: reporter)
            summaryRecord = RunSummary(mode: "local", trainer: trainer, workers: 0)
            try finish(trainer: trainer, summary: summaryRecord, reporter: reporter)
        } else {
            try DistributedRun(command: self, config: config, logger: logger)
                .run(train: trainSet, test: testSet, resumed: resumed, reporter: reporter)
        }
    }

    /// `--resume`'s checkpoint, read and checked against this run's settings and data.
    private func loadCheckpoint(config: TrainingConfig, train: Dataset) throws -> Checkpoint? {
        guard let resume else { return nil }
        let checkpoint = try Checkpoint.load(from: resume)
        do {
            try checkpoint.validate(against: config,
                                    spec: config.modelSpec(input: train.imageShape, classes: train.classCount),
                                    trainCount: train.count,
                                    stepsPerEpoch: EpochOrder(sampleCount: train.count, batchSize: config.batchSize).batchCount,
                                    precision: precision)
        } catch let error as CheckpointError {
            throw CheckpointError(path: resume, reason: error.reason)
        }
        return checkpoint
    }

    /// Runs the trainer with the console reporter and the `--metrics` log attached.
    func run(_ trainer: Trainer, reporter: ConsoleReporter) throws {
        let log = try metrics.map { try MetricsLog(path: $0, every: metricsEvery, trainer: trainer) }
        try trainer.run(onStep: { report in
            try reporter.step(report)
            try log?.step(report, trainer: trainer)
        }, onEpoch: { report in
            try reporter.epoch(report, of: trainer.config.epochs)
            try log?.epoch(report, trainer: trainer)
        })
    }

    /// A trainer, continuing `resumed` (from `--resume`) if given, that writes `--checkpoint`s.
    func makeTrainer(config: TrainingConfig, train: Dataset, test: Dataset, source: ShardGradientSource,
                     resumed: Checkpoint?) throws -> Trainer {
        let trainer: Trainer
        do {
            trainer = try Trainer(config: config, train: train, test: test, source: source, resume: resumed)
        } catch let error as CheckpointError {
            throw CheckpointError(path: resume, reason: error.reason)
        }
        if let resumed, !quiet {
            try OutputFile.standardOutput.write(
                "resuming from \(resume!) at step \(resumed.step) (epoch \(resumed.epoch + 1), step \(resumed.stepInEpoch + 1) of it)\n")
        }
        if let resumed, resumed.wirePrecision == nil {
            OutputFile.standardError.writeIgnoringErrors(
                "warning: \(resume!) does not record its --wire-precision (an older format); continuing with \(precision) as given\n")
        }
        if let path = checkpoint ?? resume {
            trainer.checkpointEvery = checkpointEvery
            trainer.onCheckpoint = { try $0.save(to: path) }
        }
        return trainer
    }

    func finish(trainer: Trainer, summary: RunSummary, reporter: ConsoleReporter) throws {
        try reporter.summary(summary)
        if let saveModel {
            try ModelFile.save(spec: trainer.model.spec, parameters: trainer.model.parameters, to: saveModel)
            if !quiet { try OutputFile.standardOutput.write("  model saved to  \(saveModel)\n") }
        }
        if let path = self.summary {
            // In place, not through a renamed temporary file: the path may be a pipe or a
            // device (`/dev/stdout`), which a rename would replace.
            try OutputFile.write([UInt8](try summary.jsonData()), to: path)
        }
    }
}
