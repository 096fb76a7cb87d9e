import NeuralNet
import Training
import XCTest

final class ShardTreeTests: XCTestCase {
    /// The tree's sum against its definition, written recursively, bit for bit, for every
    /// shard count up to 9 and a length that is not a whole number of blocks.
    func testSumFollowsThePairwiseTreeBitForBit() {
        let count = 2 * 1024 + 37
        for shardCount in 1...9 {
            let shards = (0..<shardCount).map { randomFloats(count, seed: UInt64(10 * shardCount + $0)) }
            let tree = ShardTree(shardCount: shardCount)
            var sum = [Float](repeating: .nan, count: count)
            withPointers(shards) { pointers in tree.sum(count: count, values: { pointers[$0] }, into: &sum) }
            for i in stride(from: 0, to: count, by: 97) {
                let expected = definition(first: 0, size: tree.leafCount, shardCount: shardCount) { shards[$0][i] }
                XCTAssertEqual(sum[i].bitPattern, expected!.bitPattern, "S=\(shardCount), value \(i)")
            }
        }
    }

    /// Where the left fold and the tree part: ((a + b) + c) + d is 1, (a + b) + (c + d) is 0.
    func testFourShardsAreAddedInPairsNotLeftToRight() {
        let shards: [[Float]] = [[1e8], [1], [-1e8], [1]]
        let tree = ShardTree(shardCount: 4)
        var sum: [Float] = [.nan]
        withPointers(shards) { pointers in tree.sum(count: 1, values: { pointers[$0] }, into: &sum) }
        XCTAssertEqual(sum[0], 0)
        XCTAssertEqual(((shards[0][0] + shards[1][0]) + shards[2][0]) + shards[3][0], 1)
    }

    /// A process that owns an aligned block can pre-sum it: the whole tree over the blocks'
    /// sums gives the same bits as the tree over every shard.
    func testAlignedBlocksPreSummedGiveTheSameBits() {
        let count = 1500
        for (shardCount, blocks) in [(8, [0..<4, 4..<8]), (8, [0..<2, 2..<4, 4..<8]), (6, [0..<4, 4..<6]),
                                      (5, [0..<4, 4..<5]), (7, [0..<4, 4..<6, 6..<7])] {
            let shards = (0..<shardCount).map { randomFloats(count, seed: UInt64(100 + $0)) }
            var direct = [Float](repeating: .nan, count: count)
            withPointers(shards) { pointers in
                ShardTree(shardCount: shardCount).sum(count: count, values: { pointers[$0] }, into: &direct)
            }
            var grouped = [[Float]]()
            for block in blocks {
                XCTAssertTrue(ShardTree.isAlignedBlock(block), "\(block)")
                var partial = [Float](repeating: .nan, count: count)
                withPointers(Array(shards[block])) { pointers in
                    ShardTree(shardCount: block.count).sum(count: count, values: { pointers[$0] }, into: &partial)
                }
                grouped.append(partial)
            }
            // The blocks' sums stand at the nodes of the whole tree: re-add them level by level.
            let regrouped = recombine(grouped, blocks: blocks, leafCount: ShardTree(shardCount: shardCount).leafCount)
            XCTAssertEqual(regrouped.map(\.bitPattern), direct.map(\.bitPattern), "S=\(shardCount) blocks \(blocks)")
        }
    }

    /// The tree itself takes a block's pre-summed subtree as that node (`blockSize`): random
    /// shard counts, random aligned blocks, a length across several passes; bit for bit.
    func testTreeWithBlockNodesEqualsTheTreeOverEveryShard() {
        var generator = SeededGenerator(seed: 17)
        let count = 1024 + 300
        for trial in 0..<60 {
            let shardCount = Int.random(in: 1...24, using: &generator)
            let shards = (0..<shardCount).map { randomFloats(count, seed: UInt64(1000 * trial + $0)) }
            var direct = [Float](repeating: .nan, count: count)
            withPointers(shards) { pointers in
                ShardTree(shardCount: shardCount).sum(count: count, values: { pointers[$0] }, into: &direct)
            }
            // Cover the shards left to right with random aligned blocks (size 1 where none fits).
            var sizes = [Int](repeating: 1, count: shardCount)
            var values = shards
            var first = 0
            while first < shardCount {
                let fitting = [1, 2, 4, 8, 16].filter { first % $0 == 0 && first + $0 <= shardCount }
                let size = fitting.randomElement(using: &generator)!
                if size > 1 {
                    var partial = [Float](repeating: .nan, count: count)
                    withPointers(Array(shards[first..<first + size])) { pointers in
                        ShardTree(shardCount: size).sum(count: count, values: { pointers[$0] }, into: &partial)
                    }
                    values[first] = partial
                    for covered in first + 1..<first + size { values[covered] = [Float](repeating: .nan, count: count) }
                }
                sizes[first] = size
                first += size
            }
            var blocked = [Float](repeating: .nan, count: count)
            withPointers(values) { pointers in
                ShardTree(shardCount: shardCount).sum(count: count, values: { pointers[$0] }, blockSize: { sizes[$0] },
                                                      into: &blocked)
            }
            XCTAssertEqual(blocked.map(\.bitPattern), direct.map(\.bitPattern), "S=\(shardCount) sizes \(sizes)")
        }
    }

    /// A host's block is taken only while none of its shards is complete, only aligned and
    /// inside the batch; taken, it gives the same sum as the shards one by one.
    func testShardResultsTakeABlockOnlyWhenNoneOfItsShardsIsComplete() {
        let shards: [[Float]] = [[1e8, 3], [1, 5], [-1e8, 7], [1, 11], [0.5, 13]]
        let perShard = ShardResults(shardCount: 5, parameterCount: 2)
        for (shard, values) in shards.enumerated() {
            perShard.gradient(shard).update(from: values, count: 2)
            perShard.complete(shard, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0))
        }
        let blocked = ShardResults(shardCount: 5, parameterCount: 2)
        XCTAssertFalse(blocked.acceptsBlock(1..<3), "misaligned")
        XCTAssertFalse(blocked.acceptsBlock(4..<6), "past the batch")
        XCTAssertFalse(blocked.acceptsBlock(0..<3), "not a power of two")
        blocked.gradient(2).update(from: shards[2], count: 2)
        blocked.complete(2, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0))
        XCTAssertFalse(blocked.completeBlock(0..<4, statistics: BatchStatistics()), "shard 2 is complete: the block is stale")
        XCTAssertFalse(blocked.isComplete(0))
        blocked.reset()
        // Shards 0…3 as one block, summed by their own tree; shard 4 alone.
        let block = ShardResults(shardCount: 4, parameterCount: 2)
        for shard in 0..<4 {
            block.gradient(shard).update(from: shards[shard], count: 2)
            block.complete(shard, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0))
        }
        blocked.gradient(0).update(from: block.reduce(), count: 2)
        XCTAssertTrue(blocked.completeBlock(0..<4, statistics: block.batchStatistics))
        XCTAssertFalse(blocked.isComplete)
        XCTAssertFalse(blocked.acceptsBlock(0..<2), "covered by the block")
        blocked.gradient(4).update(from: shards[4], count: 2)
        blocked.complete(4, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: blocked.reduce(), count: 2)).map(\.bitPattern),
                       Array(UnsafeBufferPointer(start: perShard.reduce(), count: 2)).map(\.bitPattern))
        XCTAssertEqual(blocked.batchStatistics.sampleCount, 5)
        XCTAssertEqual(blocked.reduce()[0], 0.5, "(1e8 + 1) + (-1e8 + 1) + 0.5 in the tree's order")
    }

    func testAlignedBlocks() {
        XCTAssertTrue(ShardTree.isAlignedBlock(4..<8))
        XCTAssertTrue(ShardTree.isAlignedBlock(6..<7))
        XCTAssertFalse(ShardTree.isAlignedBlock(2..<6))
        XCTAssertFalse(ShardTree.isAlignedBlock(0..<3))
        XCTAssertFalse(ShardTree.isAlignedBlock(3..<3))
    }

    // MARK: - Helpers

    /// The tree's definition: a node is left + right; an empty right subtree leaves the left.
    private func definition(first: Int, size: Int, shardCount: Int, leaf: (Int) -> Float) -> Float? {
        if first >= shardCount { return nil }
        if size == 1 { return leaf(first) }
        let left = definition(first: first, size: size / 2, shardCount: shardCount, leaf: leaf)
        let right = definition(first: first + size / 2, size: size / 2, shardCount: shardCount, leaf: leaf)
        guard let left else { return right }
        guard let right else { return left }
        return left + right
    }

    /// The whole tree, with some subtrees given as already-summed blocks (each block stands
    /// at the node whose leaves it covers).
    private func recombine(_ sums: [[Float]], blocks: [Range<Int>], leafCount: Int) -> [Float] {
        let shardCount = blocks.last!.upperBound
        func node(first: Int, size: Int, at i: Int) -> Float? {
            if first >= shardCount { return nil }
            if let index = blocks.firstIndex(where: { $0.lowerBound == first && $0.count == size }) {
                return sums[index][i]
            }
            let left = node(first: first, size: size / 2, at: i)
            let right = node(first: first + size / 2, size: size / 2, at: i)
            guard let left else { return right }
            guard let right else { return left }
            return left + right
        }
        return (0..<sums[0].count).map { node(first: 0, size: leafCount, at: $0)! }
    }

    private func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in (generator.nextUnitFloat() * 2 - 1) * 1000 }
    }

    private func withPointers(_ arrays: [[Float]], _ body: ([UnsafePointer<Float>]) -> Void) {
        var copies = arrays.map { array -> UnsafeMutablePointer<Float> in
            let pointer = UnsafeMutablePointer<Float>.allocate(capacity: array.count)
            pointer.initialize(from: array, count: array.count)
            return pointer
        }
        defer { copies.forEach { $0.deallocate() }; copies.removeAll() }
        body(copies.map { UnsafePointer($0) })
    }
}
