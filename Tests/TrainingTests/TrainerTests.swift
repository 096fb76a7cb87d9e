import MNISTData
import NeuralNet
import Training
import Wire
import XCTest

final class TrainerTests: XCTestCase {
    private func syntheticDataset() throws -> (Dataset, Dataset) {
        let folder = try makeSyntheticData(trainCount: 640, testCount: 100)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        return (try DataDirectory.load(.train, from: folder), try DataDirectory.load(.test, from: folder))
    }

    private func train(shards: Int, steps: Int, data: (Dataset, Dataset), seed: UInt64 = 3,
                       adjust: (inout TrainingConfig) -> Void = { _ in }) throws -> Trainer {
        var config = TrainingConfig()
        config.hidden = [32]
        config.batchSize = 64
        config.epochs = 100
        config.shardCount = shards
        config.maximumSteps = steps
        config.seed = seed
        adjust(&config)
        let trainer = try Trainer(config: config, train: data.0, test: data.1, source: LocalShardSource())
        try trainer.run()
        return trainer
    }

    /// Adam with L2 and dropout learns, is reproducible, and a checkpoint taken mid-run
    /// (with Adam's two moment buffers) continues to the same weights.
    func testAdamWithL2AndDropoutLearnsAndResumesExactly() throws {
        let data = try syntheticDataset()
        let regularised: (inout TrainingConfig) -> Void = {
            $0.optimizer = .adam
            $0.learningRate = 0.002
            $0.l2 = 1e-4
            $0.dropout = 0.3
        }
        let full = try train(shards: 2, steps: 60, data: data, adjust: regularised)
        XCTAssertEqual(full.model.parameters, try train(shards: 2, steps: 60, data: data, adjust: regularised).model.parameters)
        XCTAssertGreaterThan(full.history.last!.testAccuracy!, 0.9)
        XCTAssertNotEqual(full.model.parameters, try train(shards: 2, steps: 60, data: data).model.parameters)

        let half = try train(shards: 2, steps: 25, data: data, adjust: regularised)
        let saved = try Checkpoint.decode(half.checkpoint().encode(), path: "memory")
        XCTAssertEqual(saved.optimizerState.count, 2)
        var config = half.config
        config.maximumSteps = 60
        let resumed = try Trainer(config: config, train: data.0, test: data.1, source: LocalShardSource(), resume: saved)
        try resumed.run()
        XCTAssertEqual(resumed.model.parameters, full.model.parameters)

        // A checkpoint of an SGD run is refused by an Adam run, naming the setting.
        let sgd = try train(shards: 2, steps: 5, data: data).checkpoint()
        XCTAssertThrowsError(try Trainer(config: config, train: data.0, test: nil, source: LocalShardSource(), resume: sgd)) {
            XCTAssertTrue("\($0)".contains("--optimizer sgd"), "\($0)")
        }
    }

    func testLearnsAndIsReproducibleFromTheSeed() throws {
        let data = try syntheticDataset()
        let a = try train(shards: 1, steps: 60, data: data)
        let b = try train(shards: 1, steps: 60, data: data)
        let c = try train(shards: 1, steps: 60, data: data, seed: 4)
        XCTAssertEqual(a.step, 60)
        XCTAssertEqual(a.model.parameters, b.model.parameters)
        XCTAssertNotEqual(a.model.parameters, c.model.parameters)
        XCTAssertGreaterThan(a.history.last!.testAccuracy!, 0.9, "the synthetic classes are easy")
        XCTAssertLessThan(a.history.last!.trainLoss, a.history.first!.trainLoss)
        XCTAssertEqual(a.optimizer.iteration, 60)
    }

    /// Different shard counts differ only by float rounding of the sums.
    func testShardCountsAgreeWithinRounding() throws {
        let data = try syntheticDataset()
        let one = try train(shards: 1, steps: 100, data: data).model.parameters
        for shards in [2, 3, 7] {
            let other = try train(shards: shards, steps: 100, data: data).model.parameters
            XCTAssertNotEqual(one, other, "sums over different shards round differently")
            let norm = sqrt(one.reduce(0.0) { $0 + Double($1 * $1) })
            let difference = sqrt(zip(one, other).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) })
            XCTAssertLessThan(difference / norm, 1e-4, "\(shards) shards")
        }
    }

    /// Shard sums are added along the shard tree whatever order they arrive in.
    func testShardResultsAddAlongTheShardTree() {
        let results = ShardResults(shardCount: 3, parameterCount: 1)
        // (1e8 + -1e8) + 1 = 1, but 1e8 + (-1e8 + 1) = 0 in Float: the order shows.
        for (shard, value) in [(2, Float(1)), (0, 1e8), (1, -1e8)] {
            results.gradient(shard).pointee = value
            results.complete(shard, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 1))
        }
        XCTAssertTrue(results.isComplete)
        XCTAssertEqual(results.reduce().pointee, 1)
        XCTAssertEqual(results.batchStatistics, BatchStatistics(sampleCount: 3, lossSum: 3, correctCount: 3))

        // Four shards pair up: (1e8 + 1) + (-1e8 + 1) = 0, where a left fold gives 1.
        let four = ShardResults(shardCount: 4, parameterCount: 1)
        for (shard, value) in [(3, Float(1)), (1, 1), (0, 1e8), (2, -1e8)] {
            four.gradient(shard).pointee = value
            four.complete(shard, statistics: BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 1))
        }
        XCTAssertEqual(four.reduce().pointee, 0)
    }

    /// Gradients read where workers wrote them add up in shard order exactly like copied
    /// ones; the sum is made once per batch, in the results' own memory; a copy taken for
    /// checking no longer follows the worker's memory.
    func testGradientsReadInPlaceSumLikeCopiedOnes() {
        let copied = ShardResults(shardCount: 3, parameterCount: 2)
        let inPlace = ShardResults(shardCount: 3, parameterCount: 2)
        let workerMemory = UnsafeMutablePointer<Float>.allocate(capacity: 4)
        defer { workerMemory.deallocate() }
        let values: [[Float]] = [[1e8, 2], [-1e8, 0.5], [1, -3]]
        let statistics = BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0)
        for shard in [2, 0, 1] {
            copied.gradient(shard).update(from: values[shard], count: 2)
            copied.complete(shard, statistics: statistics)
            if shard == 1 {
                inPlace.gradient(shard).update(from: values[shard], count: 2)
                inPlace.complete(shard, statistics: statistics)
            } else {
                (workerMemory + shard).update(from: values[shard], count: 2)
                inPlace.complete(shard, statistics: statistics, readingInPlace: workerMemory + shard, owner: self)
            }
        }
        XCTAssertEqual(inPlace.shardsReadInPlace, [0, 2])
        XCTAssertTrue(inPlace.readsAnyInPlace)
        XCTAssertFalse(copied.readsAnyInPlace)
        let sum = inPlace.reduce()
        XCTAssertEqual(Array(UnsafeBufferPointer(start: sum, count: 2)), Array(UnsafeBufferPointer(start: copied.reduce(), count: 2)))
        XCTAssertEqual(sum[0], 1)
        XCTAssertFalse(sum == workerMemory || sum == workerMemory + 2, "the sum lies in the results' own memory")
        workerMemory[0] = 5
        XCTAssertEqual(inPlace.reduce()[0], 1, "made once per batch")

        // A worker writes a NaN: the check on a copy sees it, and the copy stays put.
        workerMemory[3] = .nan
        XCTAssertFalse(inPlace.copyInPlaceGradient(2))
        XCTAssertTrue(inPlace.copyInPlaceGradient(0))
        XCTAssertEqual(inPlace.shardsReadInPlace, [])
        XCTAssertFalse(inPlace.readsAnyInPlace)
        workerMemory[3] = 7
        XCTAssertTrue(inPlace.gradient(2)[1].isNaN)
        XCTAssertFalse(inPlace.allFinite(inPlace.reduce()))

        // One shard read in place is still summed into the results' own memory.
        let single = ShardResults(shardCount: 1, parameterCount: 2)
        single.complete(0, statistics: statistics, readingInPlace: workerMemory, owner: self)
        let total = single.reduce()
        XCTAssertNotEqual(total, workerMemory)
        XCTAssertEqual(total[0], 5)
        single.reset()
        XCTAssertEqual(single.shardsReadInPlace, [])
    }

    /// A worker lost in the middle of a step lets go of its segment, whose mapping held a
    /// gradient already accepted for that step: the results keep the mapping until the next
    /// batch, so the sum still reads it (this crashed a coordinator when a worker was killed
    /// just after its result).
    func testAGradientReadInPlaceOutlivesItsWorkersSegment() throws {
        let parameterCount = 1024
        let worker = try SharedSegment(slotCount: 1, slotBytes: parameterCount * 4, sealed: true)
        let gradient = worker.slot(0).bindMemory(to: Float.self, capacity: parameterCount)
        for i in 0..<parameterCount { gradient[i] = Float(i) }
        var reader: SharedSegment? = try SharedSegment(opening: worker.info)  // the coordinator's view
        let results = ShardResults(shardCount: 2, parameterCount: parameterCount)
        let statistics = BatchStatistics(sampleCount: 1, lossSum: 1, correctCount: 0)
        let values = try reader!.mapped(slot: 0, offset: 0, byteCount: parameterCount * 4).assumingMemoryBound(to: Float.self)
        results.complete(0, statistics: statistics, readingInPlace: values, owner: reader!)
        weak let released = reader
        reader = nil  // the peer detached
        XCTAssertNotNil(released, "the results hold the segment until the batch is over")
        results.gradient(1).update(repeating: 0.5, count: parameterCount)
        results.complete(1, statistics: statistics)
        let sum = results.reduce()
        XCTAssertEqual((0..<parameterCount).map { sum[$0] }, (0..<parameterCount).map { Float($0) + 0.5 })
        results.reset()
        XCTAssertNil(released, "and let go of it with the batch")
    }

    func testInvalidConfigurationsAreRefused() throws {
        let data = try syntheticDataset()
        var config = TrainingConfig()
        config.shardCount = 500
        XCTAssertThrowsError(try Trainer(config: config, train: data.0, test: nil, source: LocalShardSource())) { error in
            XCTAssertTrue("\(error)".contains("--shards 500 exceeds --batch-size 128"), "\(error)")
        }
    }
}
