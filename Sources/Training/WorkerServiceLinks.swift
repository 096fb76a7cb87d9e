import Foundation
import NeuralNet
import Wire

/// One server of the parameter service as a worker sees it: a DEALER to it, and the step of
/// the last weights range it sent.
final class ServerLink {
    let entry: ServerMap.Entry
    let socket: ZMQSocket
    var hello: Hello
    var answeredNonce: [UInt8]?
    var weightsStep: UInt64?

    init(entry: ServerMap.Entry, context: ZMQContext, hello: Hello, curveSecretKey: String?) throws {
        self.entry = entry
        self.hello = hello
        socket = try ZMQSocket(context: context, type: .dealer)
        if !entry.curvePublicKey.isEmpty {
            // A worker without a key of its own (a plain coordinator link) gets a throw-away one.
            let secret = try curveSecretKey ?? CurveKeys.generate().secretKey
            try socket.makeCurveClient(serverKey: entry.curvePublicKey, publicKey: CurveKeys.publicKey(forSecret: secret),
                                       secretKey: secret)
        }
        try socket.setMaximumMessageSize(bytes: WireProtocol.maximumMessageBytes)
        try socket.setSendHighWaterMark(256)
        try socket.setReceiveHighWaterMark(64)
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        try socket.connect(entry.endpoint)
        _ = try socket.send(hello.encode(), dontWait: true)
    }
}

/// The worker's side of the parameter service (`coordinator --parameter-servers R`): the
/// server map from the coordinator, a link to each server, weights that arrive as R ranges,
/// and results that leave as R gradient ranges. A serving worker also pumps its own
/// `ParameterServer` here.
extension WorkerNode {
    /// Waits for the coordinator's socket, the pipe, the server socket and the server links
    /// at once; handles the last two here.
    func waitForMessages(timeoutMilliseconds: Int) throws -> (socket: Bool, descriptors: [Int32]) {
        let pipes = fromCoordinator.map { [$0.descriptor] } ?? []
        if parameterServer == nil && serverLinks.isEmpty {
            return try WorkerFailure.during("waiting for the coordinator's messages") {
                try socket.waitForInput(timeoutMilliseconds: timeoutMilliseconds, alsoWatching: pipes)
            }
        }
        let sockets = [socket] + (parameterServer.map { [$0.socket] } ?? []) + serverLinks.map(\.socket)
        let ready = try WorkerFailure.during("waiting for the coordinator's and servers' messages") {
            try waitForInput(on: sockets, alsoWatching: pipes, timeoutMilliseconds: timeoutMilliseconds)
        }
        if let parameterServer, ready.sockets[1] { parameterServer.drain() }
        if parameterServer?.hasOutbox == true { try flushServerOutbox() }
        let firstLink = parameterServer == nil ? 1 : 2
        for (index, link) in serverLinks.enumerated() where ready.sockets[firstLink + index] { try readServerLink(link) }
        return (ready.sockets[0], ready.descriptors)
    }

    /// A parameter-service message from the coordinator.
    func handleParameterService(_ envelope: Envelope) throws {
        guard let model else { throw ProtocolError.unexpected(envelope.type) }
        if envelope.type == .serverMap { return try install(ServerMap(envelope, parameterCount: model.spec.parameterCount)) }
        guard let parameterServer else { throw ProtocolError.unexpected(envelope.type) }
        defer { try? flushServerOutbox() }
        try parameterServer.handleFromCoordinator(envelope)
    }

    /// What this worker's server has for the coordinator goes over this worker's link.
    /// Receipts and `applied` must all arrive (the coordinator counts them): what the link's
    /// queue cannot take now goes back to the outbox, and the loop tries again shortly.
    func flushServerOutbox() throws {
        guard let parameterServer else { return }
        let messages = parameterServer.takeOutbox()
        for (index, frames) in messages.enumerated() {
            guard try send(frames, what: "a parameter server's message") else { return parameterServer.putBack(messages[index...]) }
        }
    }

    /// A new map: links to its servers (the old ones closed), and no weights until every
    /// server sent its range.
    private func install(_ map: ServerMap) throws {
        if map.generation == serviceGeneration && serverLinks.map(\.entry) == map.entries { return }
        serverLinks = []
        serviceGeneration = map.generation
        weightsStep = nil
        sharedActive = false  // until the coordinator sends weights through memory again
        model?.parameterSource = nil
        let hello = Hello(pid: UInt32(getpid()), name: options.name)
        serverLinks = try map.entries.map { entry in
            try WorkerFailure.during("connecting to the parameter server at \(escapedForLog(entry.endpoint))") {
                try ServerLink(entry: entry, context: context, hello: hello, curveSecretKey: options.curveSecretKey)
            }
        }
        logger.info("parameter service generation \(map.generation): \(map.entries.count) servers")
    }

    private func readServerLink(_ link: ServerLink) throws {
        while let frames = try WorkerFailure.during("receiving from a parameter server", { try link.socket.receive(timeoutMilliseconds: 0) }) {
            do {
                let envelope = try Envelope(frames: frames[...])
                switch envelope.type {
                case .challenge: try answer(Challenge(envelope), on: link)
                case .weightsRange: try receiveRange(envelope, from: link)
                case .reject:
                    // The server does not know this link (its connection was re-made): hello again.
                    guard try Notice(envelope).reason == WireProtocol.unknownWorkerReason else { throw ProtocolError.unexpected(.reject) }
                    _ = try WorkerFailure.during("saying hello to a parameter server") { try link.socket.send(link.hello.encode(), dontWait: true) }
                default: throw ProtocolError.unexpected(envelope.type)
                }
            } catch let failure as WorkerFailure {
                throw failure
            } catch {
                noteRejected(error)
            }
        }
    }

    private func answer(_ challenge: Challenge, on link: ServerLink) throws {
        guard challenge.nonce != link.answeredNonce else {
            logger.warning("the parameter server at \(escapedForLog(link.entry.endpoint)) refused this worker's proof of the run secret")
            return
        }
        let secret = try loadRunSecret()
        link.hello.proof = secret.proof(nonce: challenge.nonce, pid: link.hello.pid, name: link.hello.name)
        link.answeredNonce = challenge.nonce
        _ = try WorkerFailure.during("saying hello to a parameter server") { try link.socket.send(link.hello.encode(), dontWait: true) }
    }

    /// A server's range of a step's weights into the model; once every server's range of
    /// the same step is in, that step's tasks run.
    private func receiveRange(_ envelope: Envelope, from link: ServerLink) throws {
        guard let model else { return }
        let header = try RangeValuesHeader(envelope, parameterCount: model.spec.parameterCount)
        guard header.report == nil, header.generation == serviceGeneration, header.range == link.entry.range,
              header.precision == precision else {
            throw ProtocolError.malformed(.weightsRange, "range \(header.range) in \(header.precision) of generation \(header.generation), expected \(link.entry.range) in \(precision) of \(serviceGeneration.map(String.init) ?? "none")")
        }
        let lower = header.range.lower
        let finite = try model.parameters.withUnsafeMutableBufferPointer { try header.decodeValues(envelope, into: $0.baseAddress! + lower) }
        guard finite else { throw ProtocolError.malformed(.weightsRange, "NaN or infinite weights") }
        link.weightsStep = envelope.step
        let steps = Set(serverLinks.map(\.weightsStep))
        if steps.count == 1, let step = steps.first!, step != weightsStep {
            sharedActive = false  // the results go to the servers' sockets
            model.parameterSource = nil
            try weightsArrived(step: step)
        } else if steps.count > 1 {
            weightsStep = nil  // a mix of steps: nothing may be computed with it
        }
    }

    /// A result as R gradient ranges, one to each server; `gradient` is in `rangePrecision`
    /// (the run's for one shard, fp32 for a host's block).
    func sendGradientRanges(step: UInt64, report: ShardReport, gradient: SharedBuffer,
                            rangePrecision: WirePrecision? = nil) throws {
        guard let serviceGeneration else { return }
        let precision = rangePrecision ?? precision
        for link in serverLinks {
            let header = RangeValuesHeader(generation: serviceGeneration, report: report, range: link.entry.range, precision: precision)
            let frames = header.encode(step: step, values: gradient, offset: link.entry.range.lower * precision.bytesPerValue)
            let sent = try WorkerFailure.during("sending a gradient range to \(escapedForLog(link.entry.endpoint))") {
                try link.socket.send(frames, dontWait: true)
            }
            if !sent { logger.warning("the parameter server at \(escapedForLog(link.entry.endpoint)) is not reading; a gradient range was dropped") }
            #if DEBUG
            exitIfInjected()
            #endif
        }
    }
}

#if DEBUG
/// Debug builds only: with `ZMQT_EXIT_AFTER_GRADIENT_RANGES=N` in the environment, the worker
/// exits right after its Nth gradient range, before the next server gets its own, as a host
/// killed between its sends would: tests drive that race with it.
nonisolated(unsafe) private var gradientRangesBeforeExit = getenv("ZMQT_EXIT_AFTER_GRADIENT_RANGES").flatMap { Int(String(cString: $0)) }

private func exitIfInjected() {
    guard let left = gradientRangesBeforeExit else { return }
    gradientRangesBeforeExit = left - 1
    guard left <= 1 else { return }
    usleep(300_000)  // libzmq's I/O thread sends the range meanwhile
    _exit(9)
}
#endif
