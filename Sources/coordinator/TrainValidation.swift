import ArgumentParser
import Foundation
import Logging
import MNISTData
import NeuralNet
import Training
import Wire

/// The checks of `train`'s options against each other, and the settings they make.
extension TrainCommand {
    func validate() throws {
        try validateTraining()
        try validateDistribution()
    }

    /// The training settings: the same whether it runs here or with workers.
    private func validateTraining() throws {
        guard epochs > 0 else { throw ValidationError("--epochs must be positive") }
        try validateBatchSize()
        guard (try? parseHidden()) != nil else {
            throw ValidationError("--hidden must be positive integers separated by commas, e.g. 256,128 (got '\(hidden ?? "")')")
        }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive") }
        guard decay >= 0, momentum >= 0, momentum < 1 else {
            throw ValidationError("--decay must be ≥ 0 and --momentum in [0, 1)")
        }
        if let shards, shards < 1 || shards > min(globalBatchSize, ParameterServiceLimits.maximumShards) {
            throw ValidationError("--shards must be between 1 and the batch size (\(globalBatchSize)), at most \(ParameterServiceLimits.maximumShards)")
        }
        if hidden != nil && model != nil {
            throw ValidationError("--hidden and --model both name the network: give one (--model ends with denseN for an MLP's layers)")
        }
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
        guard WirePrecision(name: wirePrecision) != nil else {
            throw ValidationError("--wire-precision must be fp32, fp16 or bf16 (got '\(wirePrecision)')")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
    }

    /// Where it trains: here, or with workers, and how they are admitted and waited for.
    private func validateDistribution() throws {
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
        guard minWorkers >= 1 else { throw ValidationError("--min-workers must be at least 1") }
        guard noWorkersTimeout > 0, noWorkersTimeout <= 1e9 else {
            throw ValidationError("--no-workers-timeout must be a positive number of seconds (got \(noWorkersTimeout))")
        }
        guard speculateAfter >= 0, speculateAfter <= 1000 else {
            throw ValidationError("--speculate-after must be 0 (off) to 1000 (got \(speculateAfter))")
        }
        guard (0...1_000_000).contains(busyWaitUs) else { throw ValidationError("--busy-wait-us must be 0 to 1000000 (got \(busyWaitUs))") }
        if let count = workers ?? spawnWorkers, count < 1 {
            throw ValidationError("the number of workers must be at least 1")
        }
        guard (0...ParameterServiceLimits.maximumServers).contains(parameterServers) else {
            throw ValidationError("--parameter-servers must be 0 to \(ParameterServiceLimits.maximumServers) (got \(parameterServers))")
        }
        if parameterServers > 0 && local { throw ValidationError("--parameter-servers needs workers, not --local") }
        if parameterServers > startingWorkerCount {
            throw ValidationError("--parameter-servers \(parameterServers) is more than the \(startingWorkerCount) workers the run starts with")
        }
        guard snapshotEvery >= 1 else { throw ValidationError("--snapshot-every must be at least 1") }
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
        config.shardCount = shards ?? startingWorkerCount
        config.maximumSteps = maxSteps
        config.trainingLimit = trainLimit
        return config
    }
}
