import Foundation

/// One ZAP request (RFC 27), as libzmq asks it during a connection's handshake.
public struct ZAPRequest: Sendable {
    /// The peer's address, as libzmq gives it.
    public let address: String
    /// "NULL" (plain text), "PLAIN" or "CURVE".
    public let mechanism: String
    /// The mechanism's credentials: for CURVE, the client's 32-byte public key.
    public let credentials: [[UInt8]]
}

/// A ZAP handler on `inproc://zeromq.zap.01` (one per context), on a thread of its own so
/// handshakes never wait for the training loop: `decide` admits a connection (nil) or
/// refuses it with a reason. libzmq asks it for every connection to a socket with a ZAP
/// domain, plain text as with CURVE; a refused connection is closed before any message of it
/// is read. `ZAPAuthenticator` (CURVE keys) and `ZAPGate` (a bound on connections) are its
/// two rules.
public final class ZAPHandler: @unchecked Sendable {
    private let socket: ZMQSocket
    private let decide: @Sendable (ZAPRequest) -> String?
    private let lock = NSLock()
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    public init(context: ZMQContext, name: String, decide: @escaping @Sendable (ZAPRequest) -> String?) throws {
        socket = try ZMQSocket(context: context, type: .rep)
        try socket.bind("inproc://zeromq.zap.01")
        self.decide = decide
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = name
        thread.start()
    }

    /// Stops the thread; call before the context goes away.
    public func stop() {
        lock.lock()
        let wasStopped = stopped
        stopped = true
        lock.unlock()
        if !wasStopped { done.wait() }
    }

    private var isStopped: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopped
    }

    private func serve() {
        defer { done.signal() }
        while !isStopped {
            guard let frames = try? socket.receive(timeoutMilliseconds: 100) else { continue }
            let parts = frames.map(\.bytes)
            // version, request id, domain, address, routing id, mechanism, credentials…
            guard parts.count >= 6 else { continue }
            let request = ZAPRequest(address: String(decoding: parts[3], as: UTF8.self),
                                     mechanism: String(decoding: parts[5], as: UTF8.self),
                                     credentials: Array(parts.dropFirst(6)))
            let refusal = decide(request)
            let reply: [OutgoingFrame] = [.bytes(Array("1.0".utf8)), .bytes(parts[1]),
                                          .bytes(Array((refusal == nil ? "200" : "400").utf8)),
                                          .bytes(Array((refusal ?? "OK").utf8)), .bytes([]), .bytes([])]
            _ = try? socket.send(reply)
        }
    }
}

/// A ZAP handler that admits or refuses each connection by `admits` and looks at no key: it
/// is how a socket bounds its connections, which libzmq has no option for.
public final class ZAPGate: @unchecked Sendable {
    private let handler: ZAPHandler

    public init(context: ZMQContext, admits: @escaping @Sendable (_ address: String) -> Bool) throws {
        handler = try ZAPHandler(context: context, name: "zap-gate") { admits($0.address) ? nil : "too many connections" }
    }

    /// Stops the thread; call before the context goes away.
    public func stop() { handler.stop() }
}
