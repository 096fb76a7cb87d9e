import NeuralNet

/// The task for a worker that holds the training set itself (its hello's data digest equals
/// the coordinator's, see `Hello.dataDigest`): the shard's sample indices into that set
/// instead of its labels and pixels. The worker gathers the samples, in this order, from
/// its own copy, which is byte for byte the coordinator's, so it computes what the pixels
/// would have given.
///
///     meta  shard UInt32 · sample count UInt32 · feature count UInt32
///     bulk  sample count × UInt32 sample index (little-endian)
public struct IndexTask: Equatable, Sendable {
    public static let bytesPerIndex = 4

    public var shard: UInt32
    public var featureCount: UInt32
    public var indices: [UInt32]

    public init(shard: UInt32, featureCount: UInt32, indices: [UInt32]) {
        self.shard = shard
        self.featureCount = featureCount
        self.indices = indices
    }

    /// The task's header as for one with samples, so that the result is checked and computed
    /// the same way.
    public var header: TaskHeader {
        TaskHeader(shard: shard, sampleCount: UInt32(indices.count), featureCount: featureCount)
    }

    public func encode(step: UInt64) -> [OutgoingFrame] {
        var meta = ByteWriter()
        meta.write(shard)
        meta.write(UInt32(indices.count))
        meta.write(featureCount)
        var bulk = ByteWriter(capacity: indices.count * Self.bytesPerIndex)
        for index in indices { bulk.write(index) }
        return encodeMessage(.indexTask, step: step, meta: meta, bulk: .bytes(bulk.bytes))
    }

    /// Decodes and checks an index task: the feature count against the model's, the sample
    /// count against `maximumSamples` (what the worker can hold) and what a message can
    /// carry, the data frame's length against that count, and every index against
    /// `sampleCount`, the size of the worker's own training set.
    public static func decode(_ envelope: Envelope, featureCount expected: Int, maximumSamples: Int,
                              sampleCount datasetCount: Int) throws -> IndexTask {
        guard maximumSamples >= 1 else {
            throw ProtocolError.malformed(.indexTask, "not one sample of this model fits in a worker's workspace")
        }
        let cap = max(1, min(maximumSamples, WireProtocol.maximumMessageBytes / bytesPerIndex))
        let (shard, count, features) = try envelope.readMeta { reader in
            (try reader.read(UInt32.self), try reader.readInt(UInt32.self, "index task sample count", in: 1...cap),
             try reader.read(UInt32.self))
        }
        guard Int(features) == expected else {
            throw ProtocolError.malformed(.indexTask, "\(features) features per sample, the model takes \(expected)")
        }
        guard datasetCount > 0 else { throw ProtocolError.malformed(.indexTask, "this worker holds no training set") }
        let bulk = try envelope.requireBulk(count * bytesPerIndex)
        let indices = try bulk.withUnsafeBytes { raw -> [UInt32] in
            var reader = ByteReader(raw)
            var indices: [UInt32] = []
            indices.reserveCapacity(count)
            for _ in 0..<count {
                let index = try reader.read(UInt32.self)
                guard checkedInt(index, in: 0...(datasetCount - 1)) != nil else {
                    throw ProtocolError.outOfRange(field: "sample index", value: UInt64(index), range: 0...(datasetCount - 1))
                }
                indices.append(index)
            }
            return indices
        }
        return IndexTask(shard: shard, featureCount: features, indices: indices)
    }
}
