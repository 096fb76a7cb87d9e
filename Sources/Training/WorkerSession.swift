import Foundation
import NeuralNet
import Wire

/// The session with the coordinator: hello, the challenge for the run secret, and the
/// welcome that sets up the model.
extension WorkerNode {
    /// What one message did to a handshake in progress.
    private enum HandshakeStep {
        case joined
        case ended(WorkerExit)
        case helloAgain
        case nothing
    }

    /// Says hello until the coordinator answers, for up to `connectTimeoutSeconds`; nil once
    /// welcomed. `rejoining`: after the coordinator fell silent, so giving up means it is lost.
    func connect(rejoining: Bool = false) throws -> WorkerExit? {
        let start = MonotonicClock.now
        var hello = Hello(pid: UInt32(getpid()), name: options.name)
        if let spec = options.expectedSpec { hello.modelHash = ModelSpecCoding.hash(spec) }
        if let dataDigest { hello.dataDigest = dataDigest }
        hello.slots = UInt16(options.processes)
        answeredNonce = nil  // a coordinator that asks us to say hello again may be a new one
        var lastHello = -Double.infinity
        var notified = false
        while true {
            let now = MonotonicClock.now
            if let parent = options.parentPID, getppid() != parent { return .parentExited }
            if now - start > options.connectTimeoutSeconds {
                return rejoining ? .coordinatorLost(seconds: now - lastHeard) : .neverConnected(seconds: now - start)
            }
            // Until a hello got out, try at every poll; then repeat it every 2 s in case the
            // coordinator restarted in between.
            if now - lastHello >= 2, try sendHello(hello) { lastHello = now }
            if !notified && now - start > 2 {
                logger.notice("waiting for the coordinator at \(options.endpoint)")
                notified = true
            }
            let received = try WorkerFailure.during("receiving from the coordinator's socket") {
                try socket.receive(timeoutMilliseconds: 50)
            }
            guard let frames = received else { continue }
            switch try handshake(frames, hello: &hello) {
            case .joined: return nil
            case let .ended(exit): return exit
            case .helloAgain: lastHello = -.infinity  // answer at once
            case .nothing: break
            }
        }
    }

    /// Sends a hello; false while the connection is not up (thanks to ZMQ_IMMEDIATE).
    private func sendHello(_ hello: Hello) throws -> Bool {
        let sent = try WorkerFailure.during("sending a hello to the coordinator at \(escapedForLog(options.endpoint))") {
            try socket.send(hello.encode(), dontWait: true)
        }
        if sent { lastSent = MonotonicClock.now }
        return sent
    }

    /// One message received while saying hello. A malformed one is rejected and counted.
    private func handshake(_ frames: [ZMQMessage], hello: inout Hello) throws -> HandshakeStep {
        do {
            let envelope = try Envelope(frames: frames[...])
            switch envelope.type {
            case .welcome:
                try join(Welcome(envelope))
                return .joined
            case .challenge:
                let nonce = try Challenge(envelope).nonce
                // Asked again for the nonce we proved: our secret is not this run's.
                if nonce == answeredNonce {
                    return .ended(.rejected(reason: "the hello's proof does not match this run's secret (a secret file of another run?)"))
                }
                let secret: RunSecret
                do { secret = try loadRunSecret() } catch { return .ended(.noRunSecret(reason: "\(error)")) }
                hello.proof = secret.proof(nonce: nonce, pid: hello.pid, name: hello.name)
                answeredNonce = nonce
                return .helloAgain
            case .reject:
                return .ended(.rejected(reason: try Notice(envelope).reason))
            case .shutdown:
                return .ended(.shutdown(reason: try Notice(envelope).reason))
            default:
                return .nothing  // left over from an earlier session of this coordinator
            }
        } catch let failure as WorkerFailure {
            throw failure
        } catch {
            noteRejected(error)
            return .nothing
        }
    }

    /// Sets up the model, wire precision and buffers the welcome names, and shared memory
    /// when the coordinator is on this host.
    private func join(_ welcome: Welcome) throws {
        // A new session, with a model that holds no weights yet: nothing of the last one may
        // be computed with it, not even a task of the step whose weights the last session
        // had. Tasks wait for this session's weights.
        model = Sequential(spec: welcome.spec, parameters: Array(repeating: 0, count: welcome.spec.parameterCount))
        weightsStep = nil
        waitingTasks = []
        preparedInput = nil
        resultStep = .max
        model?.dropout = welcome.dropout
        heartbeatSeconds = max(0.05, Double(welcome.heartbeatMilliseconds) / 1000)
        precision = welcome.precision
        if precision != .fp32 { gradientScratch = Array(repeating: 0, count: welcome.spec.parameterCount) }
        gradientPool = SharedBufferPool(byteCount: welcome.spec.parameterCount * precision.bytesPerValue)
        lastHeard = MonotonicClock.now
        workerIndex = Int(welcome.workerIndex)
        serverLinks = []
        serviceGeneration = nil
        logger.info("joined as worker \(welcome.workerIndex) for \(welcome.spec) at \(options.endpoint)")
        try startHostProcesses(for: welcome)
        try attachSharedMemory(welcome)
        if let parameterServer = try serverForModel(welcome.spec) {
            // A new session: whatever it served belongs to the last one (the coordinator
            // seeds it again if it serves in this one). After the attach: a coordinator on
            // this host then knows, when it picks its servers, that they share its memory,
            // and the server puts its weights in a segment of its own for it to copy.
            parameterServer.sharesHost = gradientSegment != nil
            parameterServer.spec = welcome.spec
            parameterServer.precision = welcome.precision
            parameterServer.runSecret = try? loadRunSecret()
            try send(ServeOffer(endpoint: parameterServer.endpoint, curvePublicKey: parameterServer.curvePublicKey).encode(),
                     what: "the offer to serve")
        }
    }

    /// With `--serve`: the server, bound at the first welcome with room for this model's
    /// largest message and no more, and bound again (a new port, if it was chosen) for a
    /// coordinator that trains a larger model.
    private func serverForModel(_ spec: ModelSpec) throws -> ParameterServer? {
        guard let endpoint = options.serveEndpoint else { return nil }
        guard let cap = ParameterServer.maximumMessageBytes(for: spec) else {
            throw WorkerFailure(action: "serving a parameter range", reason: "the model's \(spec.parameterCount) parameters do not fit a message")
        }
        if let parameterServer, parameterServer.maximumMessageBytes >= cap { return parameterServer }
        parameterServer = nil  // its socket closes before the new one binds
        let server = try WorkerFailure.during("serving a parameter range at \(escapedForLog(endpoint))") {
            if serverGate == nil { serverGate = try ServerGate(context: context) }
            serverGate?.watch(nil)
            return try ParameterServer(context: context, bindEndpoint: endpoint, curve: options.curveServerKey != nil,
                                       maximumMessageBytes: cap, logger: logger)
        }
        serverGate?.watch(server.unproven)
        parameterServer = server
        logger.notice("serving a parameter range at \(server.endpoint) (messages up to \(cap) bytes)")
        return server
    }

    func loadRunSecret() throws -> RunSecret {
        if let secret = options.runSecret { return secret }
        guard let path = options.runSecretPath else {
            throw RunSecretError.io(path: "(none)", reason: "no secret given; start the worker with --secret-file PATH (the file `coordinator --secret-file PATH` writes)")
        }
        return try RunSecret.read(from: path)
    }
}
