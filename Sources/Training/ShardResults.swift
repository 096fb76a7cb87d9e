import NeuralNet

/// The gradient sums of one batch's shards, wherever they were computed, and their sum.
///
/// Shard sums are added strictly in shard order, `((s0 + s1) + s2) + …`, so the total does
/// not depend on which worker computed which shard or in what order they arrived: float
/// addition is not associative, and this is what makes runs bit-for-bit reproducible.
public final class ShardResults {
    public let shardCount: Int
    public let parameterCount: Int
    private let shardGradients: [UnsafeMutablePointer<Float>]
    private let total: UnsafeMutablePointer<Float>
    public private(set) var statistics: [BatchStatistics?]

    public init(shardCount: Int, parameterCount: Int) {
        precondition(shardCount > 0)
        self.shardCount = shardCount
        self.parameterCount = parameterCount
        shardGradients = (0..<shardCount).map { _ in .allocate(capacity: parameterCount) }
        total = .allocate(capacity: parameterCount)
        statistics = Array(repeating: nil, count: shardCount)
    }

    deinit {
        shardGradients.forEach { $0.deallocate() }
        total.deallocate()
    }

    /// Forgets the previous batch.
    public func reset() {
        for shard in 0..<shardCount { statistics[shard] = nil }
    }

    /// Where shard `shard`'s gradient sum goes.
    public func gradient(_ shard: Int) -> UnsafeMutablePointer<Float> { shardGradients[shard] }

    public func isComplete(_ shard: Int) -> Bool { statistics[shard] != nil }
    public var completeCount: Int { statistics.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    public var isComplete: Bool { completeCount == shardCount }

    /// Marks shard `shard` as done: its gradient is in `gradient(shard)`.
    public func complete(_ shard: Int, statistics value: BatchStatistics) {
        statistics[shard] = value
    }

    /// The batch's statistics, summed in shard order.
    public var batchStatistics: BatchStatistics {
        var sum = BatchStatistics()
        for value in statistics { if let value { sum += value } }
        return sum
    }

    /// The whole batch's gradient sum, adding the shards in shard order.
    public func reduce() -> UnsafeMutablePointer<Float> {
        precondition(isComplete, "reduce() before every shard arrived")
        if shardCount == 1 { return shardGradients[0] }
        let count = parameterCount
        let first = shardGradients[0], second = shardGradients[1]
        for i in 0..<count { total[i] = first[i] + second[i] }
        for shard in 2..<max(shardCount, 2) {
            let next = shardGradients[shard]
            for i in 0..<count { total[i] += next[i] }
        }
        return total
    }
}
