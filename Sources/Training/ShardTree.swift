/// The one order in which shard gradients are added: a fixed pairwise tree over shard indices.
///
/// The S shards are the leaves 0…S−1 of a complete binary tree with `leafCount` leaves
/// (S rounded up to a power of two); an inner node is `left + right`, and a node whose right
/// subtree holds no shard is its left subtree unchanged. For S = 4: `(s0 + s1) + (s2 + s3)`;
/// for S = 3: `(s0 + s1) + s2`; for S = 6: `((s0 + s1) + (s2 + s3)) + (s4 + s5)`.
///
/// Float addition is not associative, so this order is the reproducibility contract: the sum
/// does not depend on which process computed which shard or when it arrived, and any process
/// that owns an aligned block of shards (`first` a multiple of a power-of-two `size`) can add
/// that block's subtree on its own and hand on one value, which the tree then uses as is.
public final class ShardTree {
    public let shardCount: Int
    public let leafCount: Int
    /// Values summed per pass: a block's partial sums stay in L1 while its levels are added.
    static let blockCount = 1024
    /// Two blocks of partial sums per tree level above the leaves: one for a left subtree
    /// that waits for its sibling, one for the right subtree being made beside it.
    private let levels: UnsafeMutablePointer<Float>
    private let levelCount: Int
    /// The pending subtrees of a block, left to right: at most one per level.
    private var pending: [(values: UnsafePointer<Float>?, level: Int)]

    public init(shardCount: Int) {
        precondition(shardCount > 0, "A tree needs a shard.")
        self.shardCount = shardCount
        var leaves = 1
        var depth = 0
        while leaves < shardCount { leaves *= 2; depth += 1 }
        leafCount = leaves
        levelCount = depth
        levels = .allocate(capacity: 2 * (depth + 1) * Self.blockCount)
        pending = []
        pending.reserveCapacity(depth + 2)
    }

    deinit { levels.deallocate() }

    /// Whether `shards` is a block one process may pre-sum: a power-of-two count of shards
    /// starting at a multiple of that count.
    public static func isAlignedBlock(_ shards: Range<Int>) -> Bool {
        let size = shards.count
        return size > 0 && size & (size - 1) == 0 && shards.lowerBound % size == 0
    }

    /// Writes the tree's sum of shards `0..<shardCount` (each `count` values at `values(shard)`)
    /// into `destination`, which may not overlap them.
    ///
    /// `blockSize(shard)` is 1 for a shard's own gradient, or k > 1 when `values(shard)` is
    /// the already-added subtree of the aligned block `shard..<shard + k` (a host's sum of
    /// its processes' shards): that value is used as the subtree's node and the covered
    /// leaves are skipped, which gives the same bits as adding them one by one here.
    public func sum(count: Int, values: (Int) -> UnsafePointer<Float>, blockSize: ((Int) -> Int)? = nil,
                    into destination: UnsafeMutablePointer<Float>) {
        var offset = 0
        while offset < count {
            let length = min(Self.blockCount, count - offset)
            sumBlock(offset: offset, length: length, values: values, blockSize: blockSize, into: destination + offset)
            offset += length
        }
    }

    /// The level of an aligned block's node (log2 of its size); nil when `shards` is not an
    /// aligned block inside this tree's shards.
    public func blockLevel(_ shards: Range<Int>) -> Int? {
        guard Self.isAlignedBlock(shards), shards.upperBound <= shardCount else { return nil }
        return shards.count.trailingZeroBitCount
    }

    /// One block of values, leaves pushed left to right; equal-level neighbours merge at once
    /// (a binary counter), so at most one pending subtree per level is ever held.
    private func sumBlock(offset: Int, length: Int, values: (Int) -> UnsafePointer<Float>, blockSize: ((Int) -> Int)?,
                          into destination: UnsafeMutablePointer<Float>) {
        pending.removeAll(keepingCapacity: true)
        var leaf = 0
        while leaf < leafCount {
            // An aligned block enters at its own level: the stack then holds only levels above
            // it (its start is a multiple of its size), so the merges below go on unchanged.
            let size = leaf < shardCount ? blockSize?(leaf) ?? 1 : 1
            precondition(leaf >= shardCount || blockLevel(leaf..<leaf + size) != nil, "shards \(leaf)..<\(leaf + size) are no aligned block")
            var node: (values: UnsafePointer<Float>?, level: Int) =
                (leaf < shardCount ? values(leaf) + offset : nil, size.trailingZeroBitCount)
            leaf += size
            while let top = pending.last, top.level == node.level {
                pending.removeLast()
                let level = node.level + 1
                let isRightChild = pending.last?.level == level
                node = (merge(top.values, node.values, into: target(level: level, isRightChild: isRightChild,
                                                                    destination: destination),
                              length: length), level)
            }
            pending.append(node)
        }
        guard let root = pending.first?.values else { return }
        if root != UnsafePointer(destination) { destination.update(from: root, count: length) }
    }

    /// Where a node made at `level` goes: the root straight into `destination`, the others
    /// into their level's block for their side.
    private func target(level: Int, isRightChild: Bool, destination: UnsafeMutablePointer<Float>)
        -> UnsafeMutablePointer<Float> {
        if level == levelCount { return destination }
        return levels + (2 * level + (isRightChild ? 1 : 0)) * Self.blockCount
    }

    /// `left + right` into `target`; an empty subtree on either side adds nothing.
    private func merge(_ left: UnsafePointer<Float>?, _ right: UnsafePointer<Float>?,
                       into target: UnsafeMutablePointer<Float>, length: Int) -> UnsafePointer<Float>? {
        guard let left else { return right }
        guard let right else { return left }
        for i in 0..<length { target[i] = left[i] + right[i] }
        return UnsafePointer(target)
    }
}
