import NeuralNet
import Training
import Wire
import XCTest

/// The pure parts of the parameter service: the split, and the update of one range, which
/// must equal the trainer's whole-vector update there bit for bit.
final class ParameterRangeTests: XCTestCase {
    func testTheSplitCoversEveryParameterOnAlignedBoundaries() throws {
        for (count, servers) in [(101_770, 1), (101_770, 2), (101_770, 3), (1000, 7), (17, 2), (16, 1)] {
            let ranges = try XCTUnwrap(ParameterRanges.split(parameterCount: count, into: servers))
            XCTAssertEqual(ranges.count, servers)
            XCTAssertEqual(ranges.first?.lower, 0)
            XCTAssertEqual(ranges.last?.upper, count)
            for (left, right) in zip(ranges, ranges.dropFirst()) {
                XCTAssertEqual(left.upper, right.lower)
                XCTAssertEqual(right.lower % ParameterRanges.alignment, 0)
            }
            XCTAssertTrue(ranges.allSatisfy { $0.count > 0 })
            // Whole blocks apart, and the last range shorter by the model's end.
            XCTAssertLessThan(ranges.map(\.count).max()! - ranges.map(\.count).min()!, 2 * ParameterRanges.alignment)
        }
        XCTAssertNil(ParameterRanges.split(parameterCount: 32, into: 3))
        XCTAssertNil(ParameterRanges.split(parameterCount: 0, into: 1))
    }

    /// Three steps of the trainer's update (tree sum with an empty shard, L2, SGD or Adam)
    /// on the whole vector, and on two or three ranges: the same bits.
    func testARangesUpdateEqualsTheWholeVectorsThere() throws {
        let spec = try ModelSpec.mlp(inputSize: 20, hidden: [7], classes: 3)
        let count = spec.parameterCount
        for kind in OptimizerKind.allCases {
            var config = TrainingConfig()
            config.optimizer = kind
            config.l2 = 1e-3
            config.learningRate = kind == .sgd ? 0.1 : 0.01
            var generator = SeededGenerator(seed: 3)
            var parameters = (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
            var optimizer = config.makeOptimizer(parameterCount: count)
            let ranges = try XCTUnwrap(ParameterRanges.split(parameterCount: count, into: kind == .sgd ? 2 : 3))
            let updates = ranges.map { range in
                RangeUpdate(state: RangeState(range: range, iteration: 0, parameters: Array(parameters[range.lower..<range.upper]),
                                              optimizerState: optimizer.state.map { Array($0[range.lower..<range.upper]) }),
                            settings: config.rangeOptimizerSettings, spec: spec, shardCount: 3)
            }
            let results = ShardResults(shardCount: 3, parameterCount: count)
            for _ in 0..<3 {
                results.reset()
                for shard in 0..<3 {
                    for i in 0..<count { results.gradient(shard)[i] = shard == 1 ? 0 : Float.random(in: -5...5, using: &generator) }
                    results.complete(shard, statistics: BatchStatistics())
                }
                // The trainer's way.
                let sum = results.reduce()
                L2Regularization.addGradient(coefficient: config.l2, spec: spec, parameters: parameters, sampleCount: 40, to: sum)
                // Each range's way, from the shard gradients (shard 1 empty).
                for update in updates {
                    update.apply(sampleCount: 40) { shard in
                        shard == 1 ? nil : UnsafePointer(results.gradient(shard) + update.range.lower)
                    }
                }
                optimizer.step(parameters: &parameters, gradientSum: sum, sampleCount: 40)
                XCTAssertEqual(updates.flatMap(\.parameters).map(\.bitPattern), parameters.map(\.bitPattern), "\(kind)")
                for (index, buffer) in optimizer.state.enumerated() {
                    XCTAssertEqual(updates.flatMap { $0.optimizer.state[index] }, buffer, "\(kind)")
                }
                XCTAssertTrue(updates.allSatisfy { $0.optimizer.iteration == optimizer.iteration })
            }
        }
    }

    /// A host's block as one range: shards 0..<2 and 4..<8 of eight pre-summed along their
    /// subtrees (as a host's processes sum them) and given to the range's update as blocks,
    /// the others one by one (shard 3 empty): the same bits as eight shards one by one.
    func testABlocksRangeUpdatesAsItsShardsWould() throws {
        let spec = try ModelSpec.mlp(inputSize: 20, hidden: [7], classes: 3)
        let count = spec.parameterCount
        var config = TrainingConfig()
        config.l2 = 1e-3
        var generator = SeededGenerator(seed: 5)
        let parameters = (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
        let optimizer = config.makeOptimizer(parameterCount: count)
        let range = try XCTUnwrap(ParameterRanges.split(parameterCount: count, into: 2)).last!
        func update() -> RangeUpdate {
            RangeUpdate(state: RangeState(range: range, iteration: 0, parameters: Array(parameters[range.lower..<range.upper]),
                                          optimizerState: optimizer.state.map { Array($0[range.lower..<range.upper]) }),
                        settings: config.rangeOptimizerSettings, spec: spec, shardCount: 8)
        }
        let shards = (0..<8).map { shard in (0..<count).map { _ in shard == 3 ? 0 : Float.random(in: -5...5, using: &generator) } }
        func blockSum(_ block: Range<Int>) -> [Float] {
            var sum = [Float](repeating: 0, count: count)
            shards.withUnsafeBufferPointers { pointers in
                sum.withUnsafeMutableBufferPointer {
                    ShardTree(shardCount: block.count).sum(count: count, values: { pointers[block.lowerBound + $0] }, into: $0.baseAddress!)
                }
            }
            return sum
        }
        let blocks = [0: blockSum(0..<2), 4: blockSum(4..<8)]
        let oneByOne = update()
        let withBlocks = update()
        for _ in 0..<2 {
            shards.withUnsafeBufferPointers { pointers in
                oneByOne.apply(sampleCount: 70) { $0 == 3 ? nil : pointers[$0] + range.lower }
            }
            blocks[0]!.withUnsafeBufferPointer { first in
                blocks[4]!.withUnsafeBufferPointer { second in
                    shards.withUnsafeBufferPointers { pointers in
                        withBlocks.apply(sampleCount: 70, gradient: { shard in
                            switch shard {
                            case 0: first.baseAddress! + range.lower
                            case 4: second.baseAddress! + range.lower
                            case 3: nil
                            default: pointers[shard] + range.lower
                            }
                        }, blockSize: { [0: 2, 4: 4][$0] ?? 1 })
                    }
                }
            }
            XCTAssertEqual(withBlocks.parameters.map(\.bitPattern), oneByOne.parameters.map(\.bitPattern))
        }
        // The block sums differ from a plain left-to-right sum somewhere, or this proves little.
        let leftToRight = (0..<count).map { i in (4..<8).reduce(Float(0)) { $0 + shards[$1][i] } }
        XCTAssertNotEqual(leftToRight.map(\.bitPattern), blocks[4]!.map(\.bitPattern))
    }
}

private extension Array where Element == [Float] {
    /// Each inner array's base address, valid inside `body` (the arrays are not changed).
    func withUnsafeBufferPointers<R>(_ body: ([UnsafePointer<Float>]) -> R) -> R {
        var pointers: [UnsafePointer<Float>] = []
        func nest(_ index: Int) -> R {
            guard index < count else { return body(pointers) }
            return self[index].withUnsafeBufferPointer { buffer in
                pointers.append(buffer.baseAddress!)
                return nest(index + 1)
            }
        }
        return nest(0)
    }
}
