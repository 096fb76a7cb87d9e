import Foundation
import NeuralNet
import XCTest

/// The checked reading layer every file decoder goes through: numbers from outside are
/// range-checked before they are converted, multiplied or allocated for.
final class HostileBytesTests: XCTestCase {
    private func read<T>(_ bytes: [UInt8], _ body: (inout ByteReader) throws -> T) throws -> T {
        try bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return try body(&reader)
        }
    }

    func testCheckedReadsRefuseOutOfRangeValuesWithoutTrapping() throws {
        // 2⁶³ does not fit an Int: a plain Int(UInt64) would trap.
        let huge: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0x80]
        XCTAssertThrowsError(try read(huge) { try $0.read(UInt64.self, in: 0...Int.max, field: "count") }) { error in
            XCTAssertEqual("\(error)", "count 9223372036854775808 at offset 0 is outside 0…9223372036854775807")
        }
        XCTAssertThrowsError(try read([0xFF, 0xFF, 0xFF, 0xFF]) { try $0.read(Int32.self, in: 0...10, field: "step") }) { error in
            XCTAssertTrue("\(error)".hasPrefix("step -1 at offset 0 is outside 0…10"), "\(error)")
        }
        XCTAssertEqual(try read([0, 0, 1, 2]) { try $0.read(UInt32.self, in: 0...1000, field: "size", bigEndian: true) }, 258)
        XCTAssertEqual(try read([7, 0]) { try $0.read(UInt16.self, in: 7...7, field: "version") }, 7)
        XCTAssertThrowsError(try read([1, 2, 3]) { try $0.read(UInt32.self, in: 0...10, field: "x") }) { error in
            XCTAssertTrue("\(error)".hasPrefix("truncated"), "\(error)")
        }
        XCTAssertThrowsError(try read([0, 0, 0, 0]) { try $0.readFloats(count: Int.max / 2) })
    }

    func testCheckedSizesReportOverflowAndLimits() {
        XCTAssertEqual(CheckedSize.product([28, 28, 60_000]), 47_040_000)
        XCTAssertNil(CheckedSize.product([Int(UInt32.max), Int(UInt32.max), 2]))
        XCTAssertNil(CheckedSize.product([10, 10], atMost: 99))
        XCTAssertNil(CheckedSize.product([-1, 5]))
        XCTAssertEqual(CheckedSize.product([0, Int.max]), 0)
        XCTAssertNil(CheckedSize.sum([Int.max, 1]))
        XCTAssertEqual(CheckedSize.sum([2, 3], atMost: 5), 5)
    }

    /// A version-1 model file (dense layers only) with a valid checksum whose header claims
    /// layers of 2³²−1 units: their parameter count overflows, and is far beyond what the
    /// file holds. Version 1 files still load, through the same checked decoder.
    func testModelFilesWithHugeLayerSizesAreRefused() throws {
        func modelFile(inputSize: UInt32, sizes: [UInt32], count: UInt64, parameterBytes: Int = 0) -> [UInt8] {
            var writer = ByteWriter()
            writer.write(raw: ModelFile.magic)
            writer.write(UInt16(1))
            writer.write(UInt16(sizes.count))
            writer.write(inputSize)
            for size in sizes {
                writer.write(size)
                writer.write(UInt32(Activation.relu.rawValue))
            }
            writer.write(count)
            writer.write(raw: [UInt8](repeating: 0, count: parameterBytes))
            writer.write(raw: Checksum.sha256(writer.bytes))
            return writer.bytes
        }
        let cases: [([UInt8], String)] = [
            (modelFile(inputSize: .max, sizes: [.max, .max], count: 10), "input size 4294967295"),
            (modelFile(inputSize: 1 << 24, sizes: [1 << 24, 10], count: 10), "past"),
            (modelFile(inputSize: 784, sizes: [1 << 20, 10], count: 100, parameterBytes: 400), "past"),
            (modelFile(inputSize: 2, sizes: [3], count: 1 << 63, parameterBytes: 36), "parameter count 9223372036854775808"),
            (modelFile(inputSize: 2, sizes: [3], count: 8, parameterBytes: 36), "holds 8 parameters"),
            (modelFile(inputSize: 0, sizes: [3], count: 0), "input size 0"),
            (modelFile(inputSize: 2, sizes: [], count: 0), "layer count 0"),
        ]
        for (bytes, reason) in cases {
            XCTAssertThrowsError(try ModelFile.decode(bytes, path: "crafted.bin")) { error in
                XCTAssertTrue("\(error)".hasPrefix("crafted.bin: ") && "\(error)".contains(reason), "\(error)")
            }
        }
        XCTAssertThrowsError(try ModelFile.load(from: "/dev/zero")) { error in
            XCTAssertEqual("\(error)", "/dev/zero: not a regular file")
        }
        // The same writer with sane sizes gives a model that loads.
        let good = try ModelFile.decode(modelFile(inputSize: 2, sizes: [3], count: 9, parameterBytes: 36))
        XCTAssertEqual(good.spec.description, "2-3(relu)")
    }

    /// One temporary name per target, created with the file's mode, gone after the write.
    func testAtomicWritesLeaveNoTemporaryFileAndHonourTheMode() throws {
        let folder = NSTemporaryDirectory() + "atomic-\(getpid())-\(UUID().uuidString.prefix(6))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/target"
        // Leftovers of writers killed mid-write, and a temporary file someone made readable.
        for stale in [path + ".tmp-123", path + ".tmp-99999", path + ".tmp"] {
            XCTAssertTrue(FileManager.default.createFile(atPath: stale, contents: Data([1]), attributes: [.posixPermissions: 0o666]))
        }
        try AtomicFile.write([1, 2, 3], to: path, mode: 0o600)
        var status = stat()
        XCTAssertEqual(stat(path, &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o600)
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data([1, 2, 3]))
        AtomicFile.removeStaleTemporaries(of: path)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["target"])
    }
}
