import NeuralNet
import XCTest

final class SeededGeneratorTests: XCTestCase {
    func testSameSeedSameStreamAndUniformIndices() {
        var a = SeededGenerator(seed: 7), b = SeededGenerator(seed: 7), c = SeededGenerator(seed: 8)
        let first = (0..<10).map { _ in a.next() }
        XCTAssertEqual(first, (0..<10).map { _ in b.next() })
        XCTAssertNotEqual(first, (0..<10).map { _ in c.next() })

        var counts = [Int](repeating: 0, count: 5)
        for _ in 0..<50_000 { counts[a.nextIndex(below: 5)] += 1 }
        for count in counts { XCTAssertEqual(Double(count), 10_000, accuracy: 500) }
    }

    func testShuffleIsAPermutationAndRestorableFromState() {
        var generator = SeededGenerator(seed: 3)
        let saved = generator
        var values = Array(0..<100)
        generator.shuffle(&values)
        XCTAssertEqual(values.sorted(), Array(0..<100))
        XCTAssertNotEqual(values, Array(0..<100))
        var restored = SeededGenerator(state: saved.state)
        var again = Array(0..<100)
        restored.shuffle(&again)
        XCTAssertEqual(values, again)
    }

    func testGaussianMoments() {
        var generator = SeededGenerator(seed: 99)
        let samples = (0..<100_000).map { _ in generator.nextGaussian() }
        let mean = samples.reduce(0, +) / Double(samples.count)
        let variance = samples.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(samples.count)
        XCTAssertEqual(mean, 0, accuracy: 0.02)
        XCTAssertEqual(variance, 1, accuracy: 0.02)
    }
}
