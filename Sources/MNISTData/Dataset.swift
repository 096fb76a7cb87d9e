import CGather
import NeuralNet

/// Labelled images kept as the bytes they came in: `count × featureCount` pixels (0–255,
/// row-major, one sample after another) and one class index per sample. Scaling to floats
/// happens per batch, in the model's workspace, so the data set stays four times smaller.
public struct Dataset: Sendable, Equatable {
    public let featureCount: Int
    /// One sample as an image, channels-last; `imageShape.count == featureCount`.
    public let imageShape: ImageShape
    public let classCount: Int
    public var pixels: [UInt8]
    public var labels: [UInt8]

    /// - Parameter imageShape: nil: `Dataset.imageShape(featureCount:)`.
    public init(featureCount: Int, imageShape: ImageShape? = nil, classCount: Int = 10, pixels: [UInt8], labels: [UInt8]) {
        precondition(pixels.count == labels.count * featureCount,
                     "\(labels.count) samples of \(featureCount) features need \(labels.count * featureCount) pixels, got \(pixels.count).")
        let shape = imageShape ?? Self.imageShape(featureCount: featureCount)
        precondition(shape.count == featureCount, "a \(shape) image does not hold \(featureCount) pixels")
        self.featureCount = featureCount
        self.imageShape = shape
        self.classCount = classCount
        self.pixels = pixels
        self.labels = labels
    }

    public var count: Int { labels.count }

    /// The shape of samples that come without one (CSV lines): a square grey image when the
    /// count is a square (784: 28×28×1, MNIST's), else one row of pixels.
    public static func imageShape(featureCount: Int) -> ImageShape {
        let side = Int(Double(featureCount).squareRoot().rounded())
        return side * side == featureCount ? ImageShape(height: side, width: side, channels: 1)
            : ImageShape(height: 1, width: featureCount, channels: 1)
    }

    /// The first `count` samples (for quick experiments and tests).
    public func prefix(_ count: Int) -> Dataset {
        let n = min(count, self.count)
        return Dataset(featureCount: featureCount, imageShape: imageShape, classCount: classCount,
                       pixels: Array(pixels[0..<(n * featureCount)]), labels: Array(labels[0..<n]))
    }

    /// Copies the samples at `indices` one after another into `pixels`/`labels`.
    public func gather(_ indices: ArraySlice<Int>, pixels destination: UnsafeMutablePointer<UInt8>,
                       labels labelDestination: UnsafeMutablePointer<UInt8>) {
        precondition(indices.allSatisfy { $0 >= 0 && $0 < count }, "gather index out of range")
        pixels.withUnsafeBufferPointer { source in
            labels.withUnsafeBufferPointer { labels in
                indices.withUnsafeBufferPointer { indices in
                    zmqt_gather_rows(source.baseAddress!, featureCount, labels.baseAddress!, indices.baseAddress!, indices.count,
                                     destination, labelDestination)
                }
            }
        }
    }
}

/// The order in which one epoch visits the samples: a seeded permutation per epoch, cut
/// into batches of `batchSize` (the last one may be shorter).
public struct EpochOrder: Sendable {
    public let sampleCount: Int
    public let batchSize: Int
    public private(set) var indices: [Int]

    public init(sampleCount: Int, batchSize: Int) {
        precondition(batchSize > 0)
        self.sampleCount = sampleCount
        self.batchSize = batchSize
        self.indices = Array(0..<sampleCount)
    }

    public var batchCount: Int { (sampleCount + batchSize - 1) / batchSize }

    /// A fresh permutation from `generator` (which advances, so each epoch differs).
    public mutating func shuffle(using generator: inout SeededGenerator) {
        indices = Array(0..<sampleCount)
        generator.shuffle(&indices)
    }

    public func batch(_ number: Int) -> ArraySlice<Int> {
        let start = number * batchSize
        return indices[start..<min(start + batchSize, sampleCount)]
    }
}

/// Deterministic shard boundaries: shard `i` of `shardCount` over `batchSize` samples is
/// `[i·B/S, (i+1)·B/S)`, so every run cuts a batch the same way wherever it is computed.
public func shardRange(_ shard: Int, of shardCount: Int, batchSize: Int) -> Range<Int> {
    (shard * batchSize / shardCount)..<((shard + 1) * batchSize / shardCount)
}

/// Before a data set's bytes are first written: back them with huge pages where the kernel
/// can (see `zmqt_advise_huge_pages`); without, they are simply read through 4 KiB pages.
func adviseHugePages(_ start: UnsafeRawPointer?, byteCount: Int) {
    guard let start, byteCount > 0 else { return }
    _ = zmqt_advise_huge_pages(start, byteCount)
}

extension Dataset {
    /// SHA-256 of the samples as loaded (after any `prefix`), the one definition a worker's
    /// `--data` is checked against the coordinator's by: the feature count and the sample
    /// count as UInt64 little-endian, then every pixel byte (0–255, sample after sample), then
    /// every label byte. Equal digests mean that gathering the same indices yields the same
    /// bytes on both sides, so a worker computes exactly what the pixels it was sent would give.
    public var contentSHA256: [UInt8] {
        var header: [UInt8] = []
        for value in [UInt64(featureCount), UInt64(count)] { withUnsafeBytes(of: value.littleEndian) { header += $0 } }
        return Checksum.sha256(concatenating: [header, pixels, labels])
    }
}
