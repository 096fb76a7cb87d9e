import NeuralNet
import Wire

extension Checkpoint {
    /// Refuses a checkpoint that this run cannot continue exactly: one of another run (the
    /// settings that decide the weights differ), or one whose contents do not fit together
    /// (arrays of the wrong length, a position outside the epoch, counters that would
    /// overflow). The only gate between a checkpoint's bytes and the trainer's state, whether
    /// it came from a file or was built in memory.
    /// - Parameter precision: the wire precision of this run; a checkpoint that does not
    ///   record one (format version 2) is taken to match it.
    public func validate(against other: TrainingConfig, spec otherSpec: ModelSpec, trainCount otherCount: Int,
                  stepsPerEpoch: Int, precision: WirePrecision) throws {
        try checkSameRun(other, spec: otherSpec, trainCount: otherCount, precision: precision)
        func fail(_ reason: String) -> CheckpointError { CheckpointError(path: nil, reason: reason) }
        let bufferCount = other.makeOptimizer(parameterCount: 0).state.count
        guard parameters.count == otherSpec.parameterCount,
              optimizerState.count == bufferCount,
              optimizerState.allSatisfy({ $0.count == otherSpec.parameterCount }) else {
            throw fail("its arrays do not fit \(otherSpec): \(parameters.count) parameters and "
                       + "\(optimizerState.map(\.count)) optimizer values, expected \(otherSpec.parameterCount) and \(bufferCount) × \(otherSpec.parameterCount)")
        }
        guard parameters.allSatisfy(\.isFinite), optimizerState.allSatisfy({ $0.allSatisfy(\.isFinite) }) else {
            throw fail("its parameters or optimizer state hold NaN or infinite values")
        }
        guard epoch >= 0, (0..<stepsPerEpoch).contains(stepInEpoch),
              let epochSteps = CheckedSize.product([epoch, stepsPerEpoch]),
              let expectedStep = CheckedSize.sum([epochSteps, stepInEpoch]),
              step == expectedStep, iteration == step else {
            throw fail("its position does not add up: step \(step), optimizer iteration \(iteration), "
                       + "epoch \(epoch), step \(stepInEpoch) of \(stepsPerEpoch) in the epoch")
        }
        // The current epoch's statistics count on from here; at an epoch's start (where they
        // still describe the epoch before) they are not used.
        let samplesSoFar = CheckedSize.product([stepInEpoch, other.batchSize]) ?? .max
        guard stepInEpoch == 0 || ((0...samplesSoFar).contains(epochStatistics.sampleCount)
                                   && (0...epochStatistics.sampleCount).contains(epochStatistics.correctCount)
                                   && epochStatistics.lossSum.isFinite && epochStatistics.lossSum >= 0
                                   && epochSeconds.isFinite && epochSeconds >= 0),
              trainSeconds.isFinite, trainSeconds >= 0 else {
            throw fail("its statistics of the current epoch are out of range")
        }
        guard generatorState.count == 4, generatorState.contains(where: { $0 != 0 }) else {
            throw fail("invalid data-order generator state")
        }
    }

    /// The settings that decide the weights must match.
    private func checkSameRun(_ other: TrainingConfig, spec otherSpec: ModelSpec, trainCount otherCount: Int,
                              precision: WirePrecision) throws {
        var differences: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T, _ b: T) {
            if a != b { differences.append("\(name) \(a) (checkpoint) vs \(b)") }
        }
        compare("--hidden", config.hidden, other.hidden)
        compare("--model", config.model ?? "none", other.model ?? "none")
        compare("--batch-size", config.batchSize, other.batchSize)
        compare("--learning-rate", config.learningRate, other.learningRate)
        compare("--decay", config.decay, other.decay)
        compare("--momentum", config.momentum, other.momentum)
        compare("--optimizer", config.optimizer.rawValue, other.optimizer.rawValue)
        compare("--beta1", config.beta1, other.beta1)
        compare("--beta2", config.beta2, other.beta2)
        compare("--l2", config.l2, other.l2)
        compare("--dropout", config.dropout, other.dropout)
        compare("--seed", config.seed, other.seed)
        compare("--shards", config.shardCount, other.shardCount)
        if let wirePrecision { compare("--wire-precision", wirePrecision, precision) }
        if spec != otherSpec {
            // The description shows the widths; layers that disagree only inside get both shown whole.
            differences.append(spec.description != otherSpec.description
                ? "model \(spec) (checkpoint) vs \(otherSpec)"
                : "model layers \(spec.layers) (checkpoint) vs \(otherSpec.layers)")
        }
        compare("training samples", trainCount, otherCount)
        guard differences.isEmpty else {
            throw CheckpointError(path: nil, reason: "it belongs to another run: " + differences.joined(separator: "; "))
        }
    }
}
