import Foundation
import Logging
import NeuralNet
import Wire

/// The coordinator's ROUTER socket: who may connect, and what it accepts.
extension CoordinatorServer {
    static let zapDomain = "zmq-trainer"

    /// The socket, bound, and the CURVE authenticator when the run encrypts.
    static func makeRouter(context: ZMQContext, options: CoordinatorOptions, spec: ModelSpec,
                           logger: Logger) throws -> (ZMQSocket, ZAPAuthenticator?) {
        // libzmq numbers the peers that give no routing id of their own from a counter that
        // starts at rand(), which nobody seeds: the same ids in every run, which a peer could
        // claim ahead with explicit ids and so make the next join abort this process inside
        // libzmq (an assertion on the duplicate). Seeded from the system's generator, the
        // next id is a secret 32-bit number instead.
        UnpredictableRoutingIDs.seed()
        let socket = try ZMQSocket(context: context, type: .router)
        var authenticator: ZAPAuthenticator?
        try socket.setRouterMandatory(true)
        if let secretKey = options.curveSecretKey {
            let log = logger
            let refused = RefusalLog()
            authenticator = try ZAPAuthenticator(context: context, allowedKeys: options.authorizedKeys) { address, key in
                // A refused client reconnects again and again: say it once per key.
                if refused.isFirst(key) { log.warning("refused a CURVE client at \(address): key \(key) is not authorised") }
            }
            try socket.makeCurveServer(secretKey: secretKey, zapDomain: zapDomain)
        } else {
            // A ZAP domain makes libzmq refuse ZMTP 1.0 and 2.0 peers at the handshake (no
            // handler is needed for plain text). Their path into the ROUTER pushes the peer's
            // routing-id message under an assertion that fails when the socket is closing
            // (zmtp_engine.cpp, process_routing_id_msg): raw TCP garbage whose first byte is
            // not 0xFF took that path and aborted the coordinator at exit. Workers speak ZMTP 3.
            try socket.setZAPDomain(zapDomain)
        }
        // A result is the largest thing a worker sends (a host's block sum in fp32 whatever
        // the wire precision), or with a parameter service a server's snapshot answer (its
        // range, and up to two optimizer buffers, in fp32); nothing bigger is accepted.
        let valueBytes = options.parameterServers > 0 ? 3 * 4 : 4
        try socket.setMaximumMessageSize(bytes: spec.parameterCount * valueBytes + 4096)
        try socket.setSendHighWaterMark(sendQueueMessages(shardCount: options.shardCount))
        try socket.setReceiveHighWaterMark(256)
        // Room in the kernel for a whole weights or gradient message (hundreds of KB).
        try socket.setKernelBufferSizes(bytes: 4 << 20)
        try socket.bind(options.bindEndpoint)
        return (socket, authenticator)
    }

    /// Messages one worker's queue holds before a send to it fails (and it is lost as a
    /// worker that stopped reading): a worker may hold every shard of a step (the others
    /// lost) and, sent ahead, every shard of the next, each task a message, with the step's
    /// weights and small messages (heartbeats, notices, a parameter service's plans) beside
    /// them. What those hold is bounded by two batches and the weights, whatever the count; a
    /// stopped worker is still caught by its step deadline (`--worker-timeout`).
    static func sendQueueMessages(shardCount: Int) -> Int {
        let (tasks, overflow) = max(1, shardCount).multipliedReportingOverflow(by: 2)
        return overflow ? Int(Int32.max) : min(Int(Int32.max), tasks + 64)
    }
}

/// Keys already reported, shared with the ZAP thread.
final class RefusalLog: @unchecked Sendable {
    private let lock = NSLock()
    private var seen: Set<String> = []

    func isFirst(_ key: String) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return seen.insert(key).inserted
    }
}
