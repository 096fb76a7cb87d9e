import CZlib
import Foundation
import MNISTData
import XCTest

/// The inputs of `coordinator predict`: PGM, PNG and CSV rows, and their bad cases.
final class ImageInputTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = NSTemporaryDirectory() + "image-input-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    private func write(_ name: String, _ bytes: [UInt8]) -> String {
        let path = folder + "/" + name
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    /// A 4×3 test pattern.
    private let pattern: [UInt8] = (0..<12).map { UInt8($0 * 20) }

    func testPGMTextAndBinary() throws {
        let text = "P2\n# a comment\n4 3\n255\n" + pattern.map(String.init).joined(separator: " ") + "\n"
        let binary = Array("P5\n4 3\n255\n".utf8) + pattern
        for path in [write("a.pgm", Array(text.utf8)), write("b.pgm", binary)] {
            let image = try ImageFile.load(path: path)
            XCTAssertEqual([image.width, image.height], [4, 3])
            XCTAssertEqual(image.pixels, pattern, path)
        }
        // A 4-bit maximum is scaled to 0–255.
        let scaled = try ImageFile.load(path: write("c.pgm", Array("P2 1 2 15 0 15".utf8)))
        XCTAssertEqual(scaled.pixels, [0, 255])
    }

    /// PNGs written here with every row filter, as grey and as RGB.
    func testPNGGreyAndRGBWithEveryFilter() throws {
        for channels in [1, 3] {
            let path = write("p\(channels).png", png(width: 4, height: 3, channels: channels, pixels: pattern))
            let image = try ImageFile.load(path: path)
            XCTAssertEqual([image.width, image.height], [4, 3])
            XCTAssertEqual(image.pixels, pattern, "\(channels) channels")
        }
    }

    func testBadImagesAreRefusedWithAReason() throws {
        let cases: [(String, [UInt8], String)] = [
            ("x.pgm", Array("P5\n4 3\n255\n".utf8) + [1, 2], "truncated"),
            ("y.pgm", Array("P2 2 2 65535 0 0 0 0".utf8), "8-bit only"),
            ("z.png", [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + Array("IHDR".utf8) + [0, 0], "truncated IHDR"),
            ("w.jpg", Array("JFIF".utf8), "not a PGM (P2/P5) or PNG"),
        ]
        for (name, bytes, reason) in cases {
            XCTAssertThrowsError(try ImageFile.load(path: write(name, bytes))) { error in
                XCTAssertTrue("\(error)".contains(name) && "\(error)".contains(reason), "\(error)")
            }
        }
        let image = write("small.pgm", Array("P5\n4 3\n255\n".utf8) + pattern)
        XCTAssertThrowsError(try PredictionInput.load(path: image, featureCount: 784)) { error in
            XCTAssertTrue("\(error)".contains("4×3"), "\(error)")
        }
    }

    func testCSVRowsWithAndWithoutLabelsAndHeader() throws {
        let pixels = (0..<12).map { String($0 * 20) }.joined(separator: ",")
        let path = write("rows.csv", Array("label,p1\r\n7,\(pixels)\r\n\(pixels)\r\n".utf8))
        let inputs = try PredictionInput.load(path: path, featureCount: 12)
        XCTAssertEqual(inputs.map(\.label), [7, nil])
        XCTAssertEqual(inputs.map(\.source), [path + ":2", path + ":3"])
        XCTAssertEqual(inputs[1].pixels, pattern)

        let bad: [(String, String)] = [
            ("1,2,3\n", "bad.csv:1: expected 13"),
            ("\(pixels)\n3,\(pixels.replacingOccurrences(of: "220", with: "x"))\n", "bad.csv:2: field 13 is \"x\""),
            ("\(pixels.replacingOccurrences(of: "220", with: "256"))\n", "bad.csv:1: field 12: pixel 256"),
            ("12,\(pixels)\n", "bad.csv:1: label 12"),
            ("\n", "holds no samples"),
        ]
        for (text, message) in bad {
            XCTAssertThrowsError(try PredictionInput.load(path: write("bad.csv", Array(text.utf8)), featureCount: 12)) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error) should contain \(message)")
            }
        }
    }

    /// A PNG of 8-bit grey (1) or RGB (3) pixels; row r uses filter r % 5, so every filter
    /// type is decoded. For RGB every channel holds the grey value.
    private func png(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> [UInt8] {
        let stride = width * channels
        var raw: [UInt8] = []
        var previous = [UInt8](repeating: 0, count: stride)
        for row in 0..<height {
            let current = (0..<width).flatMap { Array(repeating: pixels[row * width + $0], count: channels) }
            let filter = row % 5
            raw.append(UInt8(filter))
            for i in 0..<stride {
                let a = i >= channels ? Int(current[i - channels]) : 0, b = Int(previous[i])
                let c = i >= channels ? Int(previous[i - channels]) : 0
                let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                let predictor = [0, a, b, (a + b) / 2, pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)][filter]
                raw.append(current[i] &- UInt8(truncatingIfNeeded: predictor))
            }
            previous = current
        }
        var compressedLength = compressBound(uLong(raw.count))
        var compressed = [UInt8](repeating: 0, count: Int(compressedLength))
        XCTAssertEqual(compress(&compressed, &compressedLength, raw, uLong(raw.count)), Z_OK)
        compressed = Array(compressed.prefix(Int(compressedLength)))
        func chunk(_ type: String, _ body: [UInt8]) -> [UInt8] {
            let length = UInt32(body.count)
            let typed = Array(type.utf8) + body
            let crc = UInt32(crc32(0, typed, uInt(typed.count)))
            return bigEndian(length) + typed + bigEndian(crc)
        }
        let header = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, channels == 1 ? 0 : 2, 0, 0, 0]
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", compressed) + chunk("IEND", [])
    }

    private func bigEndian(_ value: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) } }
}
