import NeuralNet
import Wire

/// The gradient sums of one batch's shards, wherever they were computed, and their sum.
///
/// Shard sums are added along one fixed tree over shard indices (`ShardTree`), so the total
/// does not depend on which worker computed which shard or in what order they arrived: float
/// addition is not associative, and this is what makes runs bit-for-bit reproducible.
public final class ShardResults {
    public let shardCount: Int
    public let parameterCount: Int
    private let shardGradients: [UnsafeMutablePointer<Float>]
    /// Gradients left where a worker wrote them (a sealed shared segment), instead of
    /// copied into `shardGradients`, each with the object that keeps that memory mapped:
    /// held until the next `reset()`, so that a worker dropped in the middle of a step (its
    /// segment let go) cannot take the memory away before the sum is made.
    private var inPlace: [(values: UnsafePointer<Float>, owner: AnyObject)?]
    private let total: UnsafeMutablePointer<Float>
    private let tree: ShardTree
    /// The sum, once `reduce()` made it for this batch.
    private var reduced: UnsafeMutablePointer<Float>?
    public private(set) var statistics: [BatchStatistics?]
    /// Per shard: 1 for its own gradient, k > 1 where a block `shard..<shard + k` (summed by
    /// one host) starts, its value in `gradient(shard)`; 0 for the shards a block covers.
    private var blockSizes: [Int]
    /// What `shardGradients` and `total` were carved from.
    private let allocations: [UnsafeMutableRawPointer]

    /// Where in a page the buffers start. The optimizer's loop loads the gradient sum and
    /// stores into the parameters and velocity, Swift arrays whose values start 48 bytes
    /// into a page when malloc maps them; the sum's loop stores the total and loads the
    /// gradients of workers' segments, 64 bytes into a page. Streams that start a few dozen
    /// bytes apart modulo 4 KiB make the CPU take loads for reads of stores still in flight
    /// ("4K aliasing") and wait: with the total where malloc put it, 16 bytes into a page,
    /// the optimizer's pass took 15–40% longer than with it here.
    static let pageOffset = 1536

    public init(shardCount: Int, parameterCount: Int) {
        precondition(shardCount > 0)
        self.shardCount = shardCount
        self.parameterCount = parameterCount
        allocations = (0...shardCount).map { _ in
            .allocate(byteCount: Self.pageOffset + parameterCount * MemoryLayout<Float>.stride, alignment: 4096)
        }
        let buffers = allocations.map { allocation in
            let buffer = (allocation + Self.pageOffset).bindMemory(to: Float.self, capacity: parameterCount)
            buffer.initialize(repeating: 0, count: parameterCount)  // now, not as page faults in the first step
            return buffer
        }
        shardGradients = Array(buffers.dropLast())
        total = buffers.last!
        statistics = Array(repeating: nil, count: shardCount)
        inPlace = Array(repeating: nil, count: shardCount)
        blockSizes = Array(repeating: 1, count: shardCount)
        tree = ShardTree(shardCount: shardCount)
    }

    deinit {
        allocations.forEach { $0.deallocate() }
    }

    /// Forgets the previous batch.
    public func reset() {
        for shard in 0..<shardCount {
            statistics[shard] = nil
            inPlace[shard] = nil
            blockSizes[shard] = 1
        }
        reduced = nil
    }

    /// Where shard `shard`'s gradient sum goes.
    public func gradient(_ shard: Int) -> UnsafeMutablePointer<Float> { shardGradients[shard] }

    /// The shards whose gradients are read in place, in shard order.
    public var shardsReadInPlace: [Int] { (0..<shardCount).filter { inPlace[$0] != nil } }
    /// Whether any is (without making an array every step).
    public var readsAnyInPlace: Bool { inPlace.contains { $0 != nil } }

    public func isComplete(_ shard: Int) -> Bool { statistics[shard] != nil }
    public var completeCount: Int { statistics.reduce(0) { $0 + ($1 == nil ? 0 : 1) } }
    public var isComplete: Bool { completeCount == shardCount }

    /// Marks shard `shard` as done: its gradient is in `gradient(shard)`.
    public func complete(_ shard: Int, statistics value: BatchStatistics) {
        statistics[shard] = value
        inPlace[shard] = nil
        blockSizes[shard] = 1
        reduced = nil
    }

    /// Whether `shards` could be taken as one block now: an aligned block inside the batch
    /// (`ShardTree.isAlignedBlock`) none of whose shards is complete. A block that lost the
    /// race to per-shard re-runs of any of its shards is stale.
    public func acceptsBlock(_ shards: Range<Int>) -> Bool {
        tree.blockLevel(shards) != nil && !shards.contains { statistics[$0] != nil }
    }

    /// Marks the aligned block `shards` as done: the sum of its subtree (`ShardTree` over its
    /// shards) is in `gradient(shards.lowerBound)`, and `value` is the block's statistics.
    /// False, and nothing changed, unless `acceptsBlock(shards)`.
    @discardableResult
    public func completeBlock(_ shards: Range<Int>, statistics value: BatchStatistics) -> Bool {
        guard acceptsBlock(shards) else { return false }
        if shards.count == 1 {
            complete(shards.lowerBound, statistics: value)
            return true
        }
        for shard in shards {
            statistics[shard] = shard == shards.lowerBound ? value : BatchStatistics()
            inPlace[shard] = nil
            blockSizes[shard] = 0
        }
        blockSizes[shards.lowerBound] = shards.count
        reduced = nil
        return true
    }

    /// Marks shard `shard` as done with its gradient at `gradient`, read there rather than
    /// copied: memory that must stay unchanged until the sum is made, and that `owner`
    /// keeps mapped (it is held until the next batch).
    public func complete(_ shard: Int, statistics value: BatchStatistics, readingInPlace gradient: UnsafePointer<Float>,
                         owner: AnyObject) {
        complete(shard, statistics: value)
        inPlace[shard] = (gradient, owner)
    }

    /// Copies a gradient read in place into this shard's own buffer, so that its values no
    /// longer depend on memory another process can write; false if any is NaN or infinite.
    public func copyInPlaceGradient(_ shard: Int) -> Bool {
        guard let source = inPlace[shard]?.values else { return true }
        BulkCopy.copy(to: shardGradients[shard], from: source, count: parameterCount)
        inPlace[shard] = nil
        reduced = nil
        return allFinite(shardGradients[shard])
    }

    /// True if no value of a gradient (`parameterCount` floats) is NaN or infinite.
    public func allFinite(_ values: UnsafePointer<Float>) -> Bool {
        WirePrecision.allFinite(values, count: parameterCount)
    }

    /// The batch's statistics, summed in shard order.
    public var batchStatistics: BatchStatistics {
        var sum = BatchStatistics()
        for value in statistics { if let value { sum += value } }
        return sum
    }

    /// The whole batch's gradient sum, adding the shards along `ShardTree`'s fixed order;
    /// made once per batch, always in this object's own memory.
    public func reduce() -> UnsafeMutablePointer<Float> {
        precondition(isComplete, "reduce() before every shard arrived")
        if let reduced { return reduced }
        if blockSizes[0] == shardCount && inPlace[0] == nil {
            reduced = shardGradients[0]
            return shardGradients[0]
        }
        tree.sum(count: parameterCount, values: { self.inPlace[$0]?.values ?? UnsafePointer(self.shardGradients[$0]) },
                 blockSize: { self.blockSizes[$0] }, into: total)
        reduced = total
        return total
    }
}
