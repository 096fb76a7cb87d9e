import Wire

/// How a feeder (the coordinator; later a per-host aggregator) reaches one worker: how the
/// step's weights, tasks and small messages get there, how the worker's messages and
/// gradients come back, and how the link ends. Two kinds: `SocketLink` (everything through
/// the ROUTER socket) and `SameHostLink` (a worker on this host: shared memory and pipes,
/// the socket as fallback). The caller never asks which kind it holds.
protocol WorkerLink: AnyObject {
    /// A small message (heartbeat, notice); nil when the worker's queue is full.
    func send(_ frames: [OutgoingFrame]) throws -> SentBytes?
    /// The step's weights.
    func sendWeights(_ weights: StepWeights) throws -> SentBytes?
    /// The task for `shard` of `batch`, which is `step`'s.
    func sendTask(_ shard: Int, of batch: BatchView, step: Int) throws -> SentBytes?
    /// A message for a worker that may be stopped or restarting its session, by every path
    /// the link has; failures are ignored (the shutdown of a worker that is not live).
    func sendByEveryPath(_ frames: [OutgoingFrame])

    /// The gradient a result carries, from its frame or from where the worker left it,
    /// into `destination` (`count` values), or where it lies.
    func receiveGradient(_ header: ResultHeader, frame: ZMQMessage?, count: Int,
                         into destination: UnsafeMutablePointer<Float>, scratch: inout [UInt8]) -> GradientArrival

    /// A descriptor to watch for messages that arrive outside the socket; nil when all
    /// come through the socket.
    var inputDescriptor: Int32? { get }
    /// Reads what arrived on `inputDescriptor`.
    func receive() -> LinkInput
    /// Whether a message may be waiting outside the socket (true when the link cannot tell:
    /// whoever polls for one must then look at the socket).
    var mayHaveInput: Bool { get }

    /// The CPU of this host the worker computes on, when it is pinned to one.
    var cpu: Int? { get }
    /// Whether the worker computes on this host (it takes a core from this process).
    var computesOnThisHost: Bool { get }
    /// Whether the worker's results can be watched for here without the socket.
    var resultsArriveOutsideTheSocket: Bool { get }

    /// Lets go of whatever the link holds (pipes, segments).
    func close()
}

/// Bytes handed to the transport for one message.
typealias SentBytes = Int

/// Where a result's gradient ended up.
enum GradientArrival {
    /// Copied into the destination; whether every value was finite.
    case copied(finite: Bool)
    /// Left where the worker wrote it (sealed memory it cannot shrink): to be read there when
    /// the shards are summed, and checked as a sum. `owner` keeps that memory mapped.
    case inPlace(UnsafePointer<Float>, owner: AnyObject)
    /// Not to be believed: the reason, for the log.
    case refused(String)
}

/// What came in on a link's own input.
struct LinkInput {
    var messages: [[ZMQMessage]] = []
    var end: End = .open

    enum End {
        case open
        /// The worker held the only write end: it exited, or dropped the link.
        case closed
        case failed(String)
    }
}

extension BatchView {
    /// The frames of the task for `shard` when its samples travel in the message (zero-copy
    /// slices of the batch buffer).
    func taskFrames(_ shard: Int, step: Int) -> [OutgoingFrame] {
        let count = sampleCount(ofShard: shard)
        return taskHeader(shard).encode(step: UInt64(step),
                                        samples: .shared(buffer, offset: offset(ofShard: shard), count: count * (featureCount + 1)))
    }

    /// The index task for `shard`, for a worker that holds the same training set; nil when
    /// the batch's indices are not known (or do not fit the wire's UInt32).
    func indexTaskFrames(_ shard: Int, step: Int) -> [OutgoingFrame]? {
        guard let indices = sampleIndices(ofShard: shard) else { return nil }
        var wire: [UInt32] = []
        wire.reserveCapacity(indices.count)
        for index in indices {
            guard let value = UInt32(exactly: index) else { return nil }
            wire.append(value)
        }
        return IndexTask(shard: UInt32(firstShard + shard), featureCount: UInt32(featureCount), indices: wire).encode(step: UInt64(step))
    }

    func taskHeader(_ shard: Int) -> TaskHeader {
        TaskHeader(shard: UInt32(firstShard + shard), sampleCount: UInt32(sampleCount(ofShard: shard)), featureCount: UInt32(featureCount))
    }
}

extension StepWeights {
    /// The weights message with the values in its frame.
    func bulkFrames() -> [OutgoingFrame] {
        WeightsMessage.encode(step: UInt64(step), parameters: bulk(), count: count, precision: precision)
    }
}

extension Array where Element == OutgoingFrame {
    var byteCount: Int { reduce(0) { $0 + $1.byteCount } }
}
