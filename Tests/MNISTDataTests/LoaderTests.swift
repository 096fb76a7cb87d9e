import Foundation
import MNISTData
import NeuralNet
import XCTest

final class CSVLoaderTests: XCTestCase {
    private var folder: String!

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "mnist-tests-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func write(_ text: String, name: String = "data.csv") throws -> String {
        let path = folder + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    private func row(label: Int, pixel: Int = 0, count: Int = 4) -> String {
        ([String(label)] + (0..<count).map { String(($0 + pixel) % 256) }).joined(separator: ",")
    }

    func testHeaderWithCRLFAndPlainLFGiveTheSameData() throws {
        let lines = [row(label: 3, pixel: 7), row(label: 9, pixel: 250)]
        let withHeader = try write("label,1x1,1x2,1x3,1x4\r\n" + lines.joined(separator: "\r\n") + "\r\n", name: "a.csv")
        let plain = try write(lines.joined(separator: "\n") + "\n", name: "b.csv")
        let a = try CSVLoader.load(path: withHeader, featureCount: 4)
        let b = try CSVLoader.load(path: plain, featureCount: 4)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.labels, [3, 9])
        XCTAssertEqual(a.pixels, [7, 8, 9, 10, 250, 251, 252, 253])
        // No final newline is fine too.
        XCTAssertEqual(try CSVLoader.load(path: try write(lines.joined(separator: "\n"), name: "c.csv"), featureCount: 4), a)
    }

    func testEveryBadInputNamesFileLineAndProblem() throws {
        let good = row(label: 1)
        let cases: [(String, (String) -> DataError)] = [
            (good + "\n1,2,3\n", { .wrongFieldCount(path: $0, line: 2, expected: 5, got: 3) }),
            (good + "\n1,2,3,4,5,6\n", { .wrongFieldCount(path: $0, line: 2, expected: 5, got: 6) }),
            (good + "\n" + good + "\n1,2,x7,4,5\n", { .notAnInteger(path: $0, line: 3, field: 3, text: "x7") }),
            ("1,2,-3,4,5\n", { .notAnInteger(path: $0, line: 1, field: 3, text: "-3") }),
            ("1,2,,4,5\n", { .notAnInteger(path: $0, line: 1, field: 3, text: "") }),
            ("1,2,3,4,\n", { .notAnInteger(path: $0, line: 1, field: 5, text: "") }),
            ("1,2,300,4,5\n", { .pixelOutOfRange(path: $0, line: 1, field: 3, value: 300) }),
            ("10,2,3,4,5\n", { .labelOutOfRange(path: $0, line: 1, value: 10) }),
            ("", { .emptyFile(path: $0) }),
            ("label,a,b,c,d\n", { .emptyFile(path: $0) }),
        ]
        for (index, (text, expected)) in cases.enumerated() {
            let path = try write(text, name: "bad\(index).csv")
            XCTAssertThrowsError(try CSVLoader.load(path: path, featureCount: 4), "case \(index)") { error in
                XCTAssertEqual(error as? DataError, expected(path), "case \(index)")
            }
        }
        XCTAssertThrowsError(try CSVLoader.load(path: folder + "/missing.csv")) { error in
            XCTAssertEqual(error as? DataError, .missingFile(path: folder + "/missing.csv"))
            XCTAssertTrue("\(error)".contains("missing.csv: no such file"))
        }
        let message = DataError.pixelOutOfRange(path: "mnist_train.csv", line: 37, field: 5, value: 300).description
        XCTAssertEqual(message, "mnist_train.csv:37: field 5: pixel 300 is outside 0…255")
    }

    func testFormatRoundTrips() throws {
        let dataset = Dataset(featureCount: 3, pixels: [0, 1, 255, 9, 8, 7], labels: [4, 0])
        XCTAssertEqual(try CSVLoader.load(path: try write(CSVLoader.format(dataset)), featureCount: 3), dataset)
    }

    /// The digest a worker's `--data` is checked by: the same samples give the same one
    /// whichever files they came from (CSV, IDX, gzip); a prefix, one pixel or one label
    /// changed, or the same bytes cut into samples of another width give another.
    func testTheContentDigestIsTheSamplesNotTheFiles() throws {
        let pixels: [UInt8] = (0..<(3 * 2 * 2)).map { UInt8($0 * 20) }
        let labels: [UInt8] = [5, 0, 9]
        let dataset = Dataset(featureCount: 4, pixels: pixels, labels: labels)
        let fromCSV = try CSVLoader.load(path: try write(CSVLoader.format(dataset)), featureCount: 4)
        let images = try writeBytes(idx(dimensions: [3, 2, 2], values: pixels), name: "d-images", gzip: true)
        let fromIDX = try IDXLoader.load(images: images, labels: try writeBytes(idx(dimensions: [3], values: labels), name: "d-labels"))
        XCTAssertEqual(fromCSV.contentSHA256, dataset.contentSHA256)
        XCTAssertEqual(fromIDX.contentSHA256, dataset.contentSHA256)
        XCTAssertEqual(dataset.contentSHA256.count, 32)
        var otherPixel = dataset
        otherPixel.pixels[7] ^= 1
        var otherLabel = dataset
        otherLabel.labels[2] = 8
        let otherWidth = Dataset(featureCount: 2, pixels: pixels, labels: labels + labels)
        let digests = [dataset, dataset.prefix(2), otherPixel, otherLabel, otherWidth].map(\.contentSHA256)
        XCTAssertEqual(Set(digests).count, digests.count)
    }

    // MARK: IDX

    private func idx(type: UInt8 = 8, dimensions: [Int], values: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, type, UInt8(dimensions.count)]
        for d in dimensions { bytes += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
        return bytes + values
    }

    private func writeBytes(_ bytes: [UInt8], name: String, gzip: Bool = false) throws -> String {
        let path = folder + "/" + name
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        guard gzip else { return path }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-f", path]
        try process.run()
        process.waitUntilExit()
        return path + ".gz"
    }

    func testIDXPlainAndGzipAndDirectoryDiscovery() throws {
        let pixels: [UInt8] = (0..<(3 * 2 * 2)).map { UInt8($0 * 20) }
        let labels: [UInt8] = [5, 0, 9]
        for gzip in [false, true] {
            let images = try writeBytes(idx(dimensions: [3, 2, 2], values: pixels), name: "train-images-idx3-ubyte", gzip: gzip)
            let labelPath = try writeBytes(idx(dimensions: [3], values: labels), name: "train-labels-idx1-ubyte", gzip: gzip)
            let dataset = try IDXLoader.load(images: images, labels: labelPath)
            XCTAssertEqual(dataset.featureCount, 4)
            XCTAssertEqual(dataset.imageShape, ImageShape(height: 2, width: 2, channels: 1))
            XCTAssertEqual(dataset.pixels, pixels)
            XCTAssertEqual(dataset.labels, labels)
            XCTAssertEqual(try DataDirectory.load(.train, from: folder), dataset)
            for path in [images, labelPath] { try FileManager.default.removeItem(atPath: path) }
        }
        XCTAssertThrowsError(try DataDirectory.load(.test, from: folder)) { error in
            XCTAssertEqual(error as? DataError, .noDataset(directory: folder))
        }
    }

    /// IDX files keep their dimensions (a trailing one is the channels); CSV rows are
    /// square grey images when they can be, as MNIST's 784 pixels are 28×28.
    func testImageShapesComeFromTheData() throws {
        let colour = try writeBytes(idx(dimensions: [2, 3, 2, 2], values: [UInt8](repeating: 7, count: 24)), name: "c-images")
        let rows = try writeBytes(idx(dimensions: [2, 5], values: [UInt8](repeating: 7, count: 10)), name: "r-images")
        let labels = try writeBytes(idx(dimensions: [2], values: [1, 2]), name: "c-labels")
        XCTAssertEqual(try IDXLoader.load(images: colour, labels: labels).imageShape, ImageShape(height: 3, width: 2, channels: 2))
        XCTAssertEqual(try IDXLoader.load(images: rows, labels: labels).imageShape, ImageShape(height: 1, width: 5, channels: 1))
        XCTAssertEqual(Dataset.imageShape(featureCount: 784), ImageShape(height: 28, width: 28, channels: 1))
        XCTAssertEqual(Dataset.imageShape(featureCount: 6), ImageShape(height: 1, width: 6, channels: 1))
    }

    /// A set large enough (6 MB) for the loader to ask for huge pages before reading into
    /// them: every byte must still arrive where it belongs.
    func testLargeIDXLoadsIntactIntoHugePages() throws {
        let count = 8000
        let pixels = (0..<(count * 28 * 28)).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        let labels = (0..<count).map { UInt8($0 * 7 % 10) }
        let images = try writeBytes(idx(dimensions: [count, 28, 28], values: pixels), name: "large-images")
        let labelPath = try writeBytes(idx(dimensions: [count], values: labels), name: "large-labels")
        let dataset = try IDXLoader.load(images: images, labels: labelPath)
        XCTAssertEqual(dataset.count, count)
        XCTAssertTrue(dataset.pixels == pixels, "pixels differ after loading")
        XCTAssertEqual(dataset.labels, labels)
    }

    func testBadIDXFilesAreRefused() throws {
        let labels = try writeBytes(idx(dimensions: [2], values: [1, 2]), name: "labels")
        let truncated = try writeBytes(idx(dimensions: [2, 2, 2], values: [1, 2, 3]), name: "truncated")
        XCTAssertThrowsError(try IDXLoader.load(images: truncated, labels: labels)) { error in
            XCTAssertTrue("\(error)".contains("truncated"), "\(error)")
        }
        let floats = try writeBytes(idx(type: 0x0D, dimensions: [2, 1], values: [0, 0, 0, 0, 0, 0, 0, 0]), name: "floats")
        XCTAssertThrowsError(try IDXLoader.load(images: floats, labels: labels)) { error in
            XCTAssertTrue("\(error)".contains("not unsigned byte"), "\(error)")
        }
        let three = try writeBytes(idx(dimensions: [3, 1, 1], values: [1, 2, 3]), name: "three")
        XCTAssertThrowsError(try IDXLoader.load(images: three, labels: labels)) { error in
            XCTAssertTrue("\(error)".contains("3 images but"), "\(error)")
        }
        let badLabel = try writeBytes(idx(dimensions: [2], values: [1, 12]), name: "badlabel")
        let two = try writeBytes(idx(dimensions: [2, 1, 1], values: [1, 2]), name: "two")
        XCTAssertThrowsError(try IDXLoader.load(images: two, labels: badLabel)) { error in
            XCTAssertTrue("\(error)".contains("label 12 of sample 2"), "\(error)")
        }
        let garbage = try writeBytes(Array("hello world".utf8), name: "garbage")
        XCTAssertThrowsError(try IDXLoader.load(images: garbage, labels: labels)) { error in
            XCTAssertTrue("\(error)".contains("bad magic"), "\(error)")
        }
    }
}

final class BatchingTests: XCTestCase {
    func testEpochOrderVisitsEverySampleOnceInSeededOrder() {
        var order = EpochOrder(sampleCount: 10, batchSize: 4)
        XCTAssertEqual(order.batchCount, 3)
        var generator = SeededGenerator(seed: 1)
        order.shuffle(using: &generator)
        let batches = (0..<3).map { Array(order.batch($0)) }
        XCTAssertEqual(batches.map(\.count), [4, 4, 2])
        XCTAssertEqual(batches.flatMap { $0 }.sorted(), Array(0..<10))
        var again = EpochOrder(sampleCount: 10, batchSize: 4)
        var same = SeededGenerator(seed: 1)
        again.shuffle(using: &same)
        XCTAssertEqual(again.indices, order.indices)
        order.shuffle(using: &generator)
        XCTAssertNotEqual(again.indices, order.indices, "each epoch gets a new order")
    }

    func testShardRangesTileTheBatch() {
        for batchSize in [1, 7, 128, 512] {
            for shards in 1...min(batchSize, 6) {
                let ranges = (0..<shards).map { shardRange($0, of: shards, batchSize: batchSize) }
                XCTAssertEqual(ranges.first?.lowerBound, 0)
                XCTAssertEqual(ranges.last?.upperBound, batchSize)
                for (a, b) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound) }
                XCTAssertLessThanOrEqual(ranges.map(\.count).max()! - ranges.map(\.count).min()!, 1)
            }
        }
    }

    func testGatherCopiesTheChosenSamples() {
        let dataset = Dataset(featureCount: 2, pixels: [0, 1, 10, 11, 20, 21], labels: [7, 8, 9])
        var pixels = [UInt8](repeating: 0, count: 4)
        var labels = [UInt8](repeating: 0, count: 2)
        dataset.gather([2, 0], pixels: &pixels, labels: &labels)
        XCTAssertEqual(pixels, [20, 21, 0, 1])
        XCTAssertEqual(labels, [9, 7])
    }

    /// The prefetching gather against a plain copy, for batches shorter and longer than its
    /// prefetch distance, with repeats and the first and last rows.
    func testGatherMatchesAPlainCopyForAnyBatch() {
        var generator = SeededGenerator(seed: 5)
        let featureCount = 785, count = 300
        let dataset = Dataset(featureCount: featureCount,
                              pixels: (0..<(featureCount * count)).map { _ in UInt8(truncatingIfNeeded: generator.next()) },
                              labels: (0..<count).map { _ in UInt8(generator.nextIndex(below: 10)) })
        for batch in [1, 3, 8, 9, 64, 500] {
            let indices = [0, count - 1] + (0..<(batch - min(batch, 2))).map { _ in generator.nextIndex(below: count) }
            let chosen = Array(indices.prefix(batch))
            var pixels = [UInt8](repeating: 0, count: batch * featureCount)
            var labels = [UInt8](repeating: 0, count: batch)
            dataset.gather(chosen[...], pixels: &pixels, labels: &labels)
            XCTAssertEqual(pixels, chosen.flatMap { dataset.pixels[($0 * featureCount)..<(($0 + 1) * featureCount)] }, "\(batch)")
            XCTAssertEqual(labels, chosen.map { dataset.labels[$0] }, "\(batch)")
        }
    }
}

/// Fashion-MNIST as Debian's `dataset-fashion-mnist` installs it (`scripts/fetch-mnist.sh
/// --fashion`): gzip IDX files that `--data` reads as they are. Skipped where it is not installed.
final class FashionMNISTTests: XCTestCase {
    func testDebiansFashionMNISTLoadsAsIs() throws {
        let folder = "/usr/share/datasets/fashion-mnist"
        try XCTSkipUnless(FileManager.default.fileExists(atPath: folder + "/train-images-idx3-ubyte.gz"),
                          "dataset-fashion-mnist is not installed")
        let (train, test) = try DataDirectory.loadTrainAndTest(from: folder)
        XCTAssertEqual(train.count, 60_000)
        XCTAssertEqual(test.count, 10_000)
        XCTAssertEqual(train.imageShape, ImageShape(height: 28, width: 28, channels: 1))
        XCTAssertEqual(train.classCount, 10)
        // Zalando's set is balanced: 6,000 training and 1,000 test images of each class.
        for (set, each) in [(train, 6_000), (test, 1_000)] {
            var counts = [Int](repeating: 0, count: 10)
            for label in set.labels { counts[Int(label)] += 1 }
            XCTAssertEqual(counts, [Int](repeating: each, count: 10))
        }
        XCTAssertGreaterThan(train.pixels.max() ?? 0, 200)
    }
}
