import NeuralNet
import Wire

/// A host's answer for an aligned block of shards (`worker --processes K`): one fp32 sum of
/// the block's subtree of `ShardTree`, taken as that node of the step's tree.
extension CoordinatorServer {
    /// Checks a block result like a shard's (step, shards given to this host and still
    /// open, sample count, finite values) and takes it; a block any of whose shards was
    /// answered elsewhere first (a re-run after a deadline) is stale.
    func handleBlockResult(_ header: ResultHeader, gradient: ZMQMessage?, step: UInt64, from peer: WorkerPeer) {
        let start = MonotonicClock.now
        defer { timing.receiveSeconds += MonotonicClock.now - start }
        let shards = header.shards
        switch scheduler.verdict(from: peer.index, step: Int(exactly: step) ?? Int.max, shards: shards, shardCount: stepShardCount) {
        case .accept: break
        case .stale: return counters.staleResults += 1
        case let .reject(reason): return reject(from: peer.identity, reason: reason)
        }
        guard let results = currentResults, let batch = currentBatch, results.acceptsBlock(shards) else {
            return counters.staleResults += 1
        }
        let samples = shards.reduce(0) { $0 + batch.sampleCount(ofShard: $1) }
        guard Int(header.sampleCount) == samples else {
            return reject(from: peer.identity, reason: "result for shards \(shards) counts \(header.sampleCount) samples; they have \(samples)")
        }
        guard let gradient else { return reject(from: peer.identity, reason: "a block result without its data frame") }
        let finite = gradient.withUnsafeBytes {
            WirePrecision.fp32.decode($0.baseAddress!, count: spec.parameterCount, into: results.gradient(shards.lowerBound))
        }
        guard finite && header.lossSum.isFinite else {
            // As for one shard: recomputed here, shard by shard, and the trainer's finite-loss
            // check tells a diverged run from a broken host.
            for shard in shards {
                guard let statistics = recompute(shard, of: batch, into: results, rejecting: peer.identity) else { continue }
                results.complete(shard, statistics: statistics)
                finishResult(shard, from: peer, header: header, countsResult: shard == shards.lowerBound)
            }
            return
        }
        results.completeBlock(shards, statistics: BatchStatistics(sampleCount: samples, lossSum: header.lossSum,
                                                                  correctCount: Int(header.correctCount)))
        for shard in shards { finishResult(shard, from: peer, header: header, countsResult: shard == shards.lowerBound) }
    }
}
