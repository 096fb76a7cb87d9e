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

    @Option(help: "Many hosts: R workers started with `worker --serve ENDPOINT` each own one range of the parameters and its optimizer state; workers send each server its range of every gradient and get that range of the new weights from it, and the coordinator only schedules. With --spawn-workers N, the first R spawned workers serve. 0: the coordinator updates everything (default).")
    var parameterServers = 0

    @Option(help: "With --parameter-servers: steps between the snapshots of the parameters the coordinator keeps in memory; a lost server's range is rebuilt from the last one and the steps since are replayed.")
    var snapshotEvery = 50

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

    @Option(help: ArgumentHelp("Re-run a shard on an idle worker once it has been outstanding FACTOR times the 90th percentile of recent shard times (and at least 50 ms); the first result wins, so the weights do not change. 0 turns re-runs off.", valueName: "factor"))
    var speculateAfter: Double = 3

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
}
