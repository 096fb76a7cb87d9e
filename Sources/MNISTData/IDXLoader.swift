import CZlib
import Foundation
import NeuralNet

/// MNIST-style IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, …), plain or
/// gzip-compressed: zlib's `gzread` reads both, so Fashion-MNIST as Debian ships it loads too.
///
/// Layout: two zero bytes, a type byte (0x08 = unsigned byte), a dimension count, then each
/// dimension as a big-endian UInt32, then the data.
public enum IDXLoader {
    public static func load(images imagesPath: String, labels labelsPath: String, classCount: Int = 10) throws -> Dataset {
        let (imageDimensions, pixels) = try readIDX(path: imagesPath)
        let (labelDimensions, labels) = try readIDX(path: labelsPath)
        guard imageDimensions.count >= 2 else {
            throw DataError.badIDX(path: imagesPath, reason: "images need at least 2 dimensions, found \(imageDimensions.count)")
        }
        guard labelDimensions.count == 1 else {
            throw DataError.badIDX(path: labelsPath, reason: "labels need 1 dimension, found \(labelDimensions.count)")
        }
        guard imageDimensions[0] == labelDimensions[0] else {
            throw DataError.mismatchedCounts(images: imagesPath, labels: labelsPath,
                                             imageCount: imageDimensions[0], labelCount: labelDimensions[0])
        }
        guard imageDimensions[0] > 0 else { throw DataError.emptyFile(path: imagesPath) }
        guard imageDimensions.dropFirst().allSatisfy({ $0 > 0 }) else {
            throw DataError.badIDX(path: imagesPath, reason: "images of size \(imageDimensions.dropFirst().map(String.init).joined(separator: "×")) hold no pixels")
        }
        if let index = labels.firstIndex(where: { Int($0) >= classCount }) {
            throw DataError.badIDX(path: labelsPath, reason: "label \(labels[index]) of sample \(index + 1) is outside 0…\(classCount - 1)")
        }
        let featureCount = imageDimensions.dropFirst().reduce(1, *)
        // The file's own dimensions: rows × columns (× channels, channels-last as stored).
        let sample = Array(imageDimensions.dropFirst())
        let shape = switch sample.count {
        case 1: ImageShape(height: 1, width: sample[0], channels: 1)
        case 2: ImageShape(height: sample[0], width: sample[1], channels: 1)
        default: ImageShape(height: sample[0], width: sample[1], channels: sample[2])
        }
        return Dataset(featureCount: featureCount, imageShape: shape, classCount: classCount, pixels: pixels, labels: labels)
    }

    static func readIDX(path: String) throws -> (dimensions: [Int], values: [UInt8]) {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.missingFile(path: path) }
        guard let file = gzopen(path, "rb") else {
            throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        defer { gzclose(file) }

        func read(_ count: Int, into buffer: UnsafeMutableRawPointer) throws {
            var done = 0
            while done < count {
                let chunk = Int32(min(count - done, 1 << 30))
                let n = gzread(file, buffer + done, UInt32(chunk))
                guard n > 0 else {
                    throw DataError.badIDX(path: path, reason: n < 0 ? "corrupt compressed data" : "truncated: expected \(count) bytes, got \(done)")
                }
                done += Int(n)
            }
        }

        var header = [UInt8](repeating: 0, count: 4)
        try header.withUnsafeMutableBytes { try read(4, into: $0.baseAddress!) }
        guard header[0] == 0, header[1] == 0 else {
            throw DataError.badIDX(path: path, reason: "bad magic number")
        }
        guard header[2] == 0x08 else {
            throw DataError.badIDX(path: path, reason: "element type 0x\(String(header[2], radix: 16)) is not unsigned byte")
        }
        let rank = Int(header[3])
        guard (1...4).contains(rank) else { throw DataError.badIDX(path: path, reason: "\(rank) dimensions") }
        var sizes = [UInt8](repeating: 0, count: 4 * rank)
        try sizes.withUnsafeMutableBytes { try read(4 * rank, into: $0.baseAddress!) }
        let dimensions = try sizes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return try (0..<rank).map { index in
                try reader.read(UInt32.self, in: 0...Int(UInt32.max), field: "dimension \(index + 1)", bigEndian: true)
            }
        }
        // The data cannot be longer than the file holds: its own length, or, compressed, what
        // deflate's best ratio (1032:1) could make of it.
        let headerBytes = 4 + 4 * rank
        let fileBytes = try fileSize(path)
        let room = gzdirect(file) == 1 ? max(0, fileBytes - headerBytes) : (CheckedSize.product([fileBytes, 1032]) ?? .max)
        guard let total = CheckedSize.product(dimensions, atMost: room) else {
            throw DataError.badIDX(path: path, reason: "dimensions \(dimensions) claim more data than the file's \(fileBytes) bytes can hold")
        }
        let values = try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            adviseHugePages(buffer.baseAddress, byteCount: total)
            if total > 0 { try read(total, into: buffer.baseAddress!) }
            initialized = total
        }
        return (dimensions, values)
    }

    private static func fileSize(_ path: String) throws -> Int {
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw DataError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        return Int(status.st_size)
    }
}
