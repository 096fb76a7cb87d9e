import MNISTData
import NeuralNet
import Wire

/// One global batch laid out shard by shard, each shard as its labels then its pixels, so
/// that a shard goes on the wire as one zero-copy slice of the buffer.
public struct BatchView {
    public let buffer: SharedBuffer
    public let sampleCount: Int
    public let featureCount: Int
    public let shardCount: Int
    /// The training set's indices of the batch's samples, in order (nil: not known, so the
    /// samples themselves must travel).
    public var sampleIndices: ArraySlice<Int>?
    /// The run's number of this batch's shard 0: 0, except for a host's block of shards
    /// (`worker --processes K`), whose tasks carry the run's shard numbers (dropout masks
    /// are keyed on them).
    public var firstShard = 0

    /// Byte offset of shard `shard`'s labels; its pixels follow them.
    public func offset(ofShard shard: Int) -> Int {
        shardRange(shard, of: shardCount, batchSize: sampleCount).lowerBound * (featureCount + 1)
    }

    public func sampleCount(ofShard shard: Int) -> Int {
        shardRange(shard, of: shardCount, batchSize: sampleCount).count
    }

    /// The training set's indices of shard `shard`'s samples, when known.
    public func sampleIndices(ofShard shard: Int) -> ArraySlice<Int>? {
        guard let sampleIndices else { return nil }
        let range = shardRange(shard, of: shardCount, batchSize: sampleCount)
        return sampleIndices[(sampleIndices.startIndex + range.lowerBound)..<(sampleIndices.startIndex + range.upperBound)]
    }

    public func labels(ofShard shard: Int) -> UnsafePointer<UInt8> {
        UnsafePointer(buffer.pointer.assumingMemoryBound(to: UInt8.self) + offset(ofShard: shard))
    }

    public func pixels(ofShard shard: Int) -> UnsafePointer<UInt8> {
        labels(ofShard: shard) + sampleCount(ofShard: shard)
    }
}

/// Builds batches into a small pool of buffers, so filling the next batch never overwrites
/// bytes that are still going out.
public final class BatchBuilder {
    private let featureCount: Int
    private let pool: SharedBufferPool

    public init(featureCount: Int, maximumBatchSize: Int) {
        self.featureCount = featureCount
        self.pool = SharedBufferPool(byteCount: maximumBatchSize * (featureCount + 1))
    }

    /// Gathers the samples at `indices` into `destination` (a buffer of the gradient source,
    /// such as a shared batch slot, when it offers one) or into a free buffer of the pool.
    public func build(from dataset: Dataset, indices: ArraySlice<Int>, shardCount: Int,
                      into destination: SharedBuffer? = nil) -> BatchView {
        let buffer = destination.flatMap { $0.byteCount >= indices.count * (featureCount + 1) ? $0 : nil } ?? pool.take()
        let base = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        let sampleCount = indices.count
        for shard in 0..<shardCount {
            let range = shardRange(shard, of: shardCount, batchSize: sampleCount)
            let labels = base + range.lowerBound * (featureCount + 1)
            let shardIndices = indices[(indices.startIndex + range.lowerBound)..<(indices.startIndex + range.upperBound)]
            dataset.gather(shardIndices, pixels: labels + range.count, labels: labels)
        }
        return BatchView(buffer: buffer, sampleCount: sampleCount, featureCount: featureCount, shardCount: shardCount,
                         sampleIndices: indices)
    }
}
