import CZlib
import Foundation
import MNISTData
import XCTest

/// Crafted data files: each is refused with a one-line error naming it, never a trap, a huge
/// allocation or a silently wrong data set.
final class HostileFileTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "hostile-files-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    private func write(_ name: String, _ bytes: [UInt8]) -> String {
        let path = folder + "/" + name
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        return path
    }

    private func idx(dimensions: [UInt32], values: [UInt8] = []) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 8, UInt8(dimensions.count)]
        for d in dimensions { bytes += [UInt8(d >> 24), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
        return bytes + values
    }

    private func gzip(_ bytes: [UInt8], name: String) -> String {
        let path = folder + "/" + name
        let file = gzopen(path, "wb")!
        XCTAssertEqual(Int(gzwrite(file, bytes, UInt32(bytes.count))), bytes.count)
        gzclose(file)
        return path
    }

    func testIDXDimensionsThatOverflowOrExceedTheFileAreRefused() throws {
        let labels = write("labels", idx(dimensions: [2], values: [1, 2]))
        let cases: [([UInt32], String)] = [
            ([.max, .max, .max, .max], "claim more data"),  // the product overflows 64 bits
            ([2, 1 << 20, 1 << 20], "claim more data"),  // 2 TiB from a 20-byte file
            ([2, 0, 28], "hold no pixels"),
        ]
        for (index, (dimensions, reason)) in cases.enumerated() {
            for path in [write("images\(index)", idx(dimensions: dimensions, values: [1, 2, 3, 4])),
                         gzip(idx(dimensions: dimensions, values: [1, 2, 3, 4]), name: "images\(index).gz")] {
                XCTAssertThrowsError(try IDXLoader.load(images: path, labels: labels)) { error in
                    XCTAssertTrue("\(error)".hasPrefix(path + ": ") && "\(error)".contains(reason), "\(error)")
                }
            }
        }
    }

    func testPNGClaimingHugeDimensionsIsRefused() throws {
        func png(width: UInt32, height: UInt32) -> [UInt8] {
            func be32(_ value: UInt32) -> [UInt8] { [UInt8(value >> 24), UInt8(value >> 16 & 255), UInt8(value >> 8 & 255), UInt8(value & 255)] }
            func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
                let typed = Array(type.utf8) + body
                let crc = typed.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
                return be32(UInt32(body.count)) + typed + be32(crc)
            }
            var compressed = [UInt8](repeating: 0, count: 64)
            var length = uLongf(compressed.count)
            _ = compress(&compressed, &length, [0, 0, 0], 3)
            return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
                + chunk("IHDR", be32(width) + be32(height) + [8, 0, 0, 0, 0])
                + chunk("IDAT", Array(compressed.prefix(Int(length)))) + chunk("IEND", [])
        }
        let cases: [(UInt32, UInt32, String)] = [
            (.max, .max, "is not supported"),  // the product overflows 64 bits
            (1 << 31, 1 << 31, "is not supported"),
            (4000, 4000, "cannot come from"),  // 16 MB claimed by a 70-byte file
        ]
        for (width, height, reason) in cases {
            let path = write("huge-\(width).png", png(width: width, height: height))
            XCTAssertThrowsError(try ImageFile.load(path: path)) { error in
                XCTAssertTrue("\(error)".hasPrefix(path + ": ") && "\(error)".contains(reason), "\(error)")
            }
        }
        XCTAssertEqual(try ImageFile.load(path: write("ok.png", png(width: 2, height: 1))).pixels, [0, 0])
        let pgm = write("huge.pgm", Array("P5 999999999 999999999 255\n".utf8))
        XCTAssertThrowsError(try ImageFile.load(path: pgm)) { XCTAssertTrue("\($0)".contains("999999999×999999999"), "\($0)") }
    }

    /// 40 MB of blank lines once asked for 31 GB (a row's worth of pixels per line).
    func testACSVOfBlankLinesIsEmptyNotAHugeAllocation() throws {
        let blank = [UInt8](repeating: UInt8(ascii: "\n"), count: 40_000_000)
        XCTAssertThrowsError(try blank.withUnsafeBufferPointer { try CSVLoader.parse($0, path: "blank.csv") }) { error in
            XCTAssertEqual(error as? DataError, .emptyFile(path: "blank.csv"))
        }
    }

    func testAByteOrderMarkDoesNotCostTheFirstRow() throws {
        let rows = "3,0,1,2,3\n7,4,5,6,7\n"
        let path = write("bom.csv", [0xEF, 0xBB, 0xBF] + Array(rows.utf8))
        let dataset = try CSVLoader.load(path: path, featureCount: 4)
        XCTAssertEqual(dataset.labels, [3, 7])
        XCTAssertEqual(dataset.pixels, [0, 1, 2, 3, 4, 5, 6, 7])
        // With a header after the mark, the header is still skipped.
        let headed = write("bom-header.csv", [0xEF, 0xBB, 0xBF] + Array(("label,a,b,c,d\n" + rows).utf8))
        XCTAssertEqual(try CSVLoader.load(path: headed, featureCount: 4).labels, [3, 7])
        let inputs = try PredictionInput.load(path: path, featureCount: 4)
        XCTAssertEqual(inputs.map(\.label), [3, 7])
        XCTAssertEqual(inputs.first?.source, path + ":1")
    }

    /// A test set of 10×10 images beside a 28×28 training set gave a bogus accuracy; 2×2 a
    /// segfault.
    func testATestSetOfAnotherImageSizeIsRefusedNamingIt() throws {
        let train = (0..<3).map { "\($0 % 10)," + Array(repeating: "0", count: 784).joined(separator: ",") }
        _ = write("mnist_train.csv", Array((train.joined(separator: "\n") + "\n").utf8))
        for side in [10, 2] {
            let images = write("t10k-images-idx3-ubyte",
                               idx(dimensions: [2, UInt32(side), UInt32(side)], values: [UInt8](repeating: 9, count: 2 * side * side)))
            _ = write("t10k-labels-idx1-ubyte", idx(dimensions: [2], values: [1, 2]))
            XCTAssertThrowsError(try DataDirectory.loadTrainAndTest(from: folder)) { error in
                XCTAssertTrue("\(error)".hasPrefix(images + ": images of \(side * side) pixels"), "\(error)")
                XCTAssertTrue("\(error)".contains("mnist_train.csv has 784"), "\(error)")
            }
        }
    }
}
