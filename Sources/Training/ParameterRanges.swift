import NeuralNet
import Wire

/// How the flat parameter vector is cut among R parameter servers.
public enum ParameterRanges {
    /// Range boundaries fall on multiples of this many floats (64 bytes: no two servers'
    /// ranges share a cache line, and vector loops start aligned).
    public static let alignment = 16

    /// `0..<parameterCount` in `serverCount` contiguous ranges, as even as whole blocks of
    /// `alignment` floats allow (the first ranges take the extra blocks); nil when there are
    /// fewer blocks than servers.
    public static func split(parameterCount: Int, into serverCount: Int) -> [ParameterRange]? {
        guard parameterCount > 0, serverCount > 0 else { return nil }
        let blocks = (parameterCount + alignment - 1) / alignment
        guard blocks >= serverCount else { return nil }
        var ranges: [ParameterRange] = []
        var lower = 0
        for server in 0..<serverCount {
            let blockCount = blocks / serverCount + (server < blocks % serverCount ? 1 : 0)
            let upper = min(parameterCount, lower + blockCount * alignment)
            ranges.append(ParameterRange(lower: lower, count: upper - lower))
            lower = upper
        }
        return ranges
    }
}

extension TrainingConfig {
    /// What a parameter server needs to update its range as this run's trainer would.
    public var rangeOptimizerSettings: RangeOptimizerSettings {
        RangeOptimizerSettings(kind: optimizer, learningRate: learningRate, decay: decay, momentum: momentum,
                               beta1: beta1, beta2: beta2, epsilon: epsilon, l2: l2)
    }
}

extension RangeOptimizerSettings {
    /// The optimizer of `Trainer` for a range alone: the update rules are element by element,
    /// so on a range it computes exactly what the whole vector's optimizer does there.
    func makeOptimizer(for state: RangeState) -> Optimizer {
        var config = TrainingConfig()
        (config.optimizer, config.learningRate, config.decay, config.momentum) = (kind, learningRate, decay, momentum)
        (config.beta1, config.beta2, config.epsilon) = (beta1, beta2, epsilon)
        var optimizer = config.makeOptimizer(parameterCount: state.range.count)
        optimizer.iteration = state.iteration
        optimizer.state = state.optimizerState
        return optimizer
    }
}

/// One server's range of the model and its optimizer state, and the update of the trainer's
/// step on it: the shard gradients' sum along `ShardTree` (empty shards as zeros), L2, the
/// optimizer. Pure arithmetic, no I/O.
public final class RangeUpdate {
    public let range: ParameterRange
    public private(set) var parameters: [Float]
    public private(set) var optimizer: Optimizer
    private let settings: RangeOptimizerSettings
    private let spec: ModelSpec
    private let tree: ShardTree
    private let zeros: [Float]
    private var sum: [Float]

    public init(state: RangeState, settings: RangeOptimizerSettings, spec: ModelSpec, shardCount: Int) {
        precondition(state.parameters.count == state.range.count && state.range.upper <= spec.parameterCount)
        range = state.range
        parameters = state.parameters
        optimizer = settings.makeOptimizer(for: state)
        self.settings = settings
        self.spec = spec
        tree = ShardTree(shardCount: shardCount)
        zeros = Array(repeating: 0, count: state.range.count)
        sum = zeros
    }

    public var shardCount: Int { tree.shardCount }

    /// The range's state now (for a snapshot).
    public var state: RangeState {
        RangeState(range: range, iteration: optimizer.iteration, parameters: parameters, optimizerState: optimizer.state)
    }

    /// One step: `gradient(shard)` is that shard's gradient range (nil: an empty shard), or
    /// where `blockSize(shard)` is k > 1, the range of the aligned block `shard..<shard + k`'s
    /// sum (`ShardTree.sum`).
    public func apply(sampleCount: Int, gradient: (Int) -> UnsafePointer<Float>?, blockSize: ((Int) -> Int)? = nil) {
        zeros.withUnsafeBufferPointer { zeros in
            sum.withUnsafeMutableBufferPointer { sum in
                tree.sum(count: range.count, values: { gradient($0) ?? zeros.baseAddress! }, blockSize: blockSize,
                         into: sum.baseAddress!)
                parameters.withUnsafeBufferPointer { p in
                    L2Regularization.addGradient(coefficient: settings.l2, spec: spec, range: range.lower..<range.upper,
                                                 parameters: p.baseAddress!, sampleCount: sampleCount, to: sum.baseAddress!)
                }
            }
        }
        sum.withUnsafeBufferPointer { optimizer.step(parameters: &parameters, gradientSum: $0.baseAddress!, sampleCount: sampleCount) }
    }
}
