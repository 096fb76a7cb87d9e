/// Hosts with several compute processes (`worker --processes K`): by position they take
/// K consecutive shards, and answer an aligned block of them with one result.
extension StepScheduler {
    /// `verdict` for a host's block of shards: accepted only if every shard is; stale if
    /// any is answered already or was given to another (its per-shard re-run won the race).
    public func verdict(from id: WorkerID, step: Int, shards: Range<Int>, shardCount: Int) -> ResultVerdict {
        var stale = false
        for shard in shards {
            switch verdict(from: id, step: step, shard: shard, shardCount: shardCount) {
            case .accept: continue
            case .stale: stale = true
            case let .reject(reason): return .reject(reason: reason)
            }
        }
        return stale ? .stale : .accept
    }

    /// Shards by position over `live` (by index), round after round: each worker takes as
    /// many consecutive shards as it has slots. With one slot each, plain round robin; with
    /// K slots and shard counts such as N·K, each host's shards are an aligned block, which
    /// it sums itself (`ShardTree`) and answers with one result.
    func byPosition(_ shards: [Int], over live: [WorkerID]) -> [(shard: Int, id: WorkerID)] {
        var mapping: [(shard: Int, id: WorkerID)] = []
        var position = 0
        var turn = 0
        while position < shards.count {
            let id = live[turn % live.count]
            turn += 1
            let taken = min(workers[id]?.slots ?? 1, shards.count - position)
            for shard in shards[position..<position + taken] { mapping.append((shard, id)) }
            position += taken
        }
        return mapping
    }
}
