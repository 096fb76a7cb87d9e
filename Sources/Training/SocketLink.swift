import Wire

/// A worker reached through the ROUTER socket alone, by its routing id: every worker's link
/// until it attaches shared memory, and the fallback of one that did.
final class SocketLink: WorkerLink {
    let identity: [UInt8]
    private let socket: ZMQSocket
    /// The worker holds the coordinator's training set: tasks carry sample indices only.
    let sendsIndices: Bool

    init(identity: [UInt8], socket: ZMQSocket, sendsIndices: Bool = false) {
        self.identity = identity
        self.socket = socket
        self.sendsIndices = sendsIndices
    }

    func send(_ frames: [OutgoingFrame]) throws -> SentBytes? {
        // Never blocks: a peer that stopped reading has a full queue, which is its failure.
        try socket.send([.bytes(identity)] + frames, dontWait: true) ? frames.byteCount : nil
    }

    func sendWeights(_ weights: StepWeights) throws -> SentBytes? { try send(weights.bulkFrames()) }

    func sendTask(_ shard: Int, of batch: BatchView, step: Int) throws -> SentBytes? {
        if sendsIndices, let frames = batch.indexTaskFrames(shard, step: step) { return try send(frames) }
        return try send(batch.taskFrames(shard, step: step))
    }

    func sendByEveryPath(_ frames: [OutgoingFrame]) { _ = try? send(frames) }

    func receiveGradient(_ header: ResultHeader, frame: ZMQMessage?, count: Int,
                         into destination: UnsafeMutablePointer<Float>, scratch: inout [UInt8]) -> GradientArrival {
        if let slot = header.sharedSlot { return .refused("gradient in shared slot \(slot), but the worker attached no segment") }
        // `ResultHeader.decode` checked that a result without a slot has a frame of `count` values.
        guard let frame else { return .refused("result without its gradient") }
        return .copied(finite: frame.withUnsafeBytes { header.precision.decode($0.baseAddress!, count: count, into: destination) })
    }

    var inputDescriptor: Int32? { nil }
    func receive() -> LinkInput { LinkInput() }
    var mayHaveInput: Bool { true }
    var cpu: Int? { nil }
    var computesOnThisHost: Bool { false }
    var resultsArriveOutsideTheSocket: Bool { false }
    func close() {}
}
