import Foundation
import Logging
import MNISTData
import NeuralNet
import Training
import Wire

/// `coordinator --workers N` / `--spawn-workers N`: serve the workers, train, shut them down.
struct DistributedRun {
    let command: TrainCommand
    let config: TrainingConfig
    let logger: Logger

    func run(train: Dataset, test: Dataset, resumed: Checkpoint?, reporter: ConsoleReporter) throws {
        let spec = try config.modelSpec(input: train.imageShape, classes: train.classCount)
        // Workers refuse a welcome for a model whose gradient cannot travel in one message.
        guard spec.parameterCount <= WireLimits.maximumParameters else {
            throw ModelTooLargeError(reason: "a model of \(spec.parameterCount) parameters is more than a distributed run can send (at most \(WireLimits.maximumParameters)); use --local or a smaller --hidden or --model")
        }
        let workerCount = command.startingWorkerCount
        var (options, spawnedWorkerSecrets) = try makeOptions(workerCount: workerCount)
        // Workers started with `--data` prove they hold these very samples with it.
        options.trainingSetDigest = train.contentSHA256
        let secret = options.runSecret
        let server = try CoordinatorServer(options: options, spec: spec, logger: logger)
        logger.info("listening on \(server.endpoint) for \(workerCount) workers, training \(spec)")
        let secretPath = try writeSecret(secret, endpoint: server.endpoint)
        defer { if let secretPath { secret.remove(at: secretPath) } }

        if let path = command.endpointFile {
            // For launchers (scripts/cluster.sh): workers read where to connect from here.
            try AtomicFile.write(Array((connectableEndpoint(server.endpoint) + "\n").utf8), to: path)
        }
        let spawner = WorkerSpawner()
        if let count = command.spawnWorkers {
            var arguments = ["--log-level", command.logLevel, "--busy-wait-us", String(command.busyWaitUs)]
            if let secret = options.curveSecretKey { arguments += ["--curve-server-key=" + (try CurveKeys.publicKey(forSecret: secret))] }
            try spawner.spawn(count: count, endpoint: connectableEndpoint(server.endpoint), extraArguments: arguments,
                              secretKeys: spawnedWorkerSecrets, runSecret: secret,
                              servingCount: min(count, command.parameterServers),
                              pinning: command.pinWorkers && count <= CPUAffinity.allowedCount)
            server.respawnExitedWorkers = { spawner.respawnExited() }
        }
        do {
            try server.waitForWorkers(count: workerCount, timeoutSeconds: options.startupTimeoutSeconds)
            if options.parameterServers > 0 {
                try server.waitForParameterServers(count: options.parameterServers, timeoutSeconds: options.startupTimeoutSeconds)
            }
            let trainer = try command.makeTrainer(config: config, train: train, test: test, source: server, resumed: resumed)
            try command.run(trainer, reporter: reporter)
            server.shutdownWorkers(reason: "training finished")
            var summary = RunSummary(mode: "distributed", trainer: trainer, workers: workerCount,
                                     network: server.counters, workerStats: server.workerSummaries)
            summary.parameterService = server.parameterServiceSummary
            if let service = summary.parameterService {
                let servers = service.servers.map { "\($0.name) (\($0.parameters) parameters)" }.joined(separator: ", ")
                logger.notice("parameter service: \(servers); \(service.receipts) receipts, \(service.rollbacks) rollbacks, generation \(service.generation)")
            }
            try command.finish(trainer: trainer, summary: summary, reporter: reporter)
        } catch {
            server.shutdownWorkers(reason: "the coordinator stopped: \(error)")
            spawner.terminateAll()
            spawner.waitForExit(graceSeconds: 2)
            throw error
        }
        spawner.waitForExit()
    }

    /// The coordinator's options from the command line, and the secret keys of the workers
    /// it will spawn (throw-away CURVE keys, admitted with the others).
    private func makeOptions(workerCount: Int) throws -> (CoordinatorOptions, spawnedWorkerSecrets: [String]) {
        var options = CoordinatorOptions()
        options.bindEndpoint = command.bind
        options.expectedWorkers = workerCount
        options.scheduling.minimumWorkers = min(command.minWorkers, workerCount)
        options.scheduling.workerTimeoutSeconds = command.workerTimeout
        options.scheduling.noWorkersTimeoutSeconds = command.noWorkersTimeout
        options.scheduling.speculation.factor = command.speculateAfter
        options.scheduling.speculation.isEnabled = command.speculateAfter > 0
        options.startupTimeoutSeconds = command.startupTimeout
        options.precision = command.precision
        options.dropout = config.dropoutMasks
        options.parameterServers = command.parameterServers
        options.shardCount = config.shardCount
        // With a parameter service whose servers share this host, the workers here keep the
        // shared batch and weights slots, and the servers read their gradients where they lie.
        options.sharedMemory = command.sharedMemory
        options.batchSlotSamples = config.batchSize
        options.busyWaitSeconds = Double(command.busyWaitUs) / 1e6
        var spawnedWorkerSecrets: [String] = []
        if let secretPath = command.curveSecretKey, let authorized = command.authorizedKeys {
            options.curveSecretKey = try CurveKeys.loadSecret(fromFile: secretPath)
            options.authorizedKeys = try CurveKeys.loadAuthorized(authorized)
            // Workers this process starts get throw-away keys of their own.
            for _ in 0..<(command.spawnWorkers ?? 0) {
                let pair = try CurveKeys.generate()
                options.authorizedKeys.insert(pair.publicKey)
                spawnedWorkerSecrets.append(pair.secretKey)
            }
        }
        return (options, spawnedWorkerSecrets)
    }

    /// Writes the run secret for workers started by hand or by a launcher: to --secret-file,
    /// or where a worker on this host looks by itself. Without --secret-file a failure is
    /// only a warning: spawned workers get the secret in their environment anyway.
    private func writeSecret(_ secret: RunSecret, endpoint: String) throws -> String? {
        if let path = command.secretFile {
            try secret.write(to: path)
            return path
        }
        guard let path = RunSecret.defaultPath(forEndpoint: endpoint) else { return nil }
        do {
            try secret.write(to: path)
            logger.info("the run secret for workers on this host is in \(path)")
            return path
        } catch {
            logger.warning("could not write the run secret (\(error)); workers not spawned by this coordinator need --secret-file")
            return nil
        }
    }
}

struct ModelTooLargeError: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
