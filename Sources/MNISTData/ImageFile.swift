import CZlib
import Foundation
import NeuralNet

/// Single images for `coordinator predict`: PGM (P2 text or P5 binary) and PNG (8-bit,
/// non-interlaced, grey, grey+alpha, RGB or RGBA; colour is averaged to grey). Images must
/// have the model's size (28×28 for MNIST), as MNIST's white digits on black.
public enum ImageFile {
    public struct Image: Equatable, Sendable {
        public let width: Int
        public let height: Int
        public let pixels: [UInt8]
    }

    /// Far above any model's input: a header claiming more is refused before anything is
    /// allocated for it.
    static let maximumPixels = 1 << 24

    public static func load(path: String) throws -> Image {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.missingFile(path: path) }
        let bytes: [UInt8]
        do {
            bytes = try RegularFile.read(path)
        } catch let error as ModelFileError {
            throw DataError.unreadable(path: path, reason: error.reason)
        }
        if bytes.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return try decodePNG(bytes, path: path) }
        if bytes.count >= 2, bytes[0] == UInt8(ascii: "P"), bytes[1] == UInt8(ascii: "2") || bytes[1] == UInt8(ascii: "5") {
            return try decodePGM(bytes, path: path)
        }
        throw DataError.unreadable(path: path, reason: "not a PGM (P2/P5) or PNG image")
    }

    // MARK: PGM

    static func decodePGM(_ bytes: [UInt8], path: String) throws -> Image {
        var position = 2
        func token() throws -> Int {
            while position < bytes.count {
                if bytes[position] == UInt8(ascii: "#") {
                    while position < bytes.count && bytes[position] != UInt8(ascii: "\n") { position += 1 }
                } else if bytes[position] == 0x20 || (0x09...0x0D).contains(bytes[position]) {
                    position += 1
                } else { break }
            }
            var value = 0, digits = 0
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]), digits < 9 {
                value = value * 10 + Int(bytes[position] - UInt8(ascii: "0"))
                position += 1
                digits += 1
            }
            guard digits > 0 else { throw DataError.unreadable(path: path, reason: "malformed PGM header or pixel") }
            return value
        }
        let binary = bytes[1] == UInt8(ascii: "5")
        let width = try token(), height = try token(), maximum = try token()
        guard width > 0, height > 0, CheckedSize.product([width, height], atMost: maximumPixels) != nil,
              (1...255).contains(maximum) else {
            throw DataError.unreadable(path: path, reason: "PGM of \(width)×\(height) with maximum \(maximum) is not supported (8-bit only)")
        }
        var pixels = [UInt8](repeating: 0, count: width * height)
        if binary {
            position += 1  // the single whitespace after the maximum
            guard bytes.count - position >= pixels.count else {
                throw DataError.unreadable(path: path, reason: "PGM data is truncated")
            }
            for i in pixels.indices { pixels[i] = bytes[position + i] }
        } else {
            for i in pixels.indices {
                let value = try token()
                guard value <= maximum else { throw DataError.unreadable(path: path, reason: "pixel \(value) above the maximum \(maximum)") }
                pixels[i] = UInt8(value)
            }
        }
        if maximum != 255 { pixels = pixels.map { UInt8(Int($0) * 255 / maximum) } }
        return Image(width: width, height: height, pixels: pixels)
    }

    // MARK: PNG

    /// What a PNG's header says, as far as this decoder reads it.
    struct PNGHeader {
        var width = 0, height = 0, channels = 0
    }

    static func decodePNG(_ bytes: [UInt8], path: String) throws -> Image {
        func fail(_ reason: String) -> DataError { .unreadable(path: path, reason: "PNG: \(reason)") }
        let (header, compressed) = try readPNGChunks(bytes, fail: fail)
        let raw = try inflatePNG(compressed, header: header, fail: fail)
        return Image(width: header.width, height: header.height, pixels: try unfilterPNG(raw, header: header, fail: fail))
    }

    /// The header and the concatenated image data of a PNG's chunks.
    private static func readPNGChunks(_ bytes: [UInt8], fail: (String) -> DataError) throws -> (PNGHeader, [UInt8]) {
        func be32(_ at: Int) -> Int { Int(bytes[at]) << 24 | Int(bytes[at + 1]) << 16 | Int(bytes[at + 2]) << 8 | Int(bytes[at + 3]) }
        var position = 8
        var header = PNGHeader()
        var compressed: [UInt8] = []
        while position + 8 <= bytes.count {
            let length = be32(position)
            let type = String(decoding: bytes[(position + 4)..<(position + 8)], as: UTF8.self)
            guard length >= 0, position + 12 + length <= bytes.count else { throw fail("truncated \(type) chunk") }
            let body = Array(bytes[(position + 8)..<(position + 8 + length)])
            switch type {
            case "IHDR":
                header = try readPNGHeader(body, fail: fail)
            case "IDAT":
                compressed += body
            case "IEND":
                position = bytes.count
                continue
            default:
                break
            }
            position += 12 + length
        }
        guard header.channels > 0 else { throw fail("no header") }
        return (header, compressed)
    }

    private static func readPNGHeader(_ body: [UInt8], fail: (String) -> DataError) throws -> PNGHeader {
        guard body.count == 13 else { throw fail("bad header") }
        var header = PNGHeader()
        header.width = Int(body[0]) << 24 | Int(body[1]) << 16 | Int(body[2]) << 8 | Int(body[3])
        header.height = Int(body[4]) << 24 | Int(body[5]) << 16 | Int(body[6]) << 8 | Int(body[7])
        guard body[8] == 8 else { throw fail("bit depth \(body[8]) is not supported (8-bit only)") }
        switch body[9] {
        case 0: header.channels = 1
        case 2: header.channels = 3
        case 4: header.channels = 2
        case 6: header.channels = 4
        default: throw fail("colour type \(body[9]) is not supported (grey, grey+alpha, RGB, RGBA)")
        }
        guard body[12] == 0 else { throw fail("interlaced images are not supported") }
        guard header.width > 0, header.height > 0,
              CheckedSize.product([header.width, header.height], atMost: maximumPixels) != nil else {
            throw fail("size \(header.width)×\(header.height) is not supported (at most \(maximumPixels) pixels)")
        }
        return header
    }

    /// The filtered rows: each a filter byte, then `width · channels` bytes.
    private static func inflatePNG(_ compressed: [UInt8], header: PNGHeader, fail: (String) -> DataError) throws -> [UInt8] {
        let stride = header.width * header.channels
        // Deflate shrinks data at most 1032-fold: a header claiming more than its data can
        // hold is refused before anything is allocated for it.
        guard (stride + 1) * header.height <= compressed.count * 1032 else {
            throw fail("\(header.width)×\(header.height) pixels cannot come from \(compressed.count) bytes of image data")
        }
        var raw = [UInt8](repeating: 0, count: (stride + 1) * header.height)
        var rawLength = uLongf(raw.count)
        let status = compressed.withUnsafeBufferPointer { source in
            raw.withUnsafeMutableBufferPointer { destination in
                uncompress(destination.baseAddress, &rawLength, source.baseAddress, uLong(source.count))
            }
        }
        guard status == Z_OK, Int(rawLength) == raw.count else { throw fail("corrupt image data") }
        return raw
    }

    /// Undoes the per-row filters (PNG specification, section 9) and averages the colour
    /// channels (alpha dropped) into grey.
    private static func unfilterPNG(_ raw: [UInt8], header: PNGHeader, fail: (String) -> DataError) throws -> [UInt8] {
        let (width, channels) = (header.width, header.channels)
        let stride = width * channels
        var previous = [UInt8](repeating: 0, count: stride)
        var current = [UInt8](repeating: 0, count: stride)
        var grey = [UInt8](repeating: 0, count: width * header.height)
        for row in 0..<header.height {
            let filter = raw[row * (stride + 1)]
            for i in 0..<stride {
                let x = raw[row * (stride + 1) + 1 + i]
                let a = i >= channels ? Int(current[i - channels]) : 0
                let b = Int(previous[i])
                let c = i >= channels ? Int(previous[i - channels]) : 0
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4:
                    let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                    predictor = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c)
                default: throw fail("unknown row filter \(filter)")
                }
                current[i] = x &+ UInt8(truncatingIfNeeded: predictor)
            }
            for column in 0..<width {
                let pixel = current[(column * channels)..<(column * channels + min(channels, 3))]
                let colour = channels >= 3 ? 3 : 1
                grey[row * width + column] = UInt8(pixel.prefix(colour).reduce(0) { $0 + Int($1) } / colour)
            }
            swap(&previous, &current)
        }
        return grey
    }
}
