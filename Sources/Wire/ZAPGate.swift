import Foundation

/// A ZAP handler (libzmq's authentication hook, `inproc://zeromq.zap.01`, one per context)
/// that admits or refuses each connection by `admits`, on a thread of its own. libzmq asks
/// it during the handshake of every connection to a socket with a ZAP domain, plain text
/// (NULL) as with CURVE; a refused connection is closed before any message of it is read,
/// and the peer's socket tries again later. Unlike `ZAPAuthenticator`, it looks at no key:
/// it is how a socket bounds its connections, which libzmq has no option for.
public final class ZAPGate: @unchecked Sendable {
    private let socket: ZMQSocket
    private let admits: @Sendable (_ address: String) -> Bool
    private let lock = NSLock()
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    public init(context: ZMQContext, admits: @escaping @Sendable (_ address: String) -> Bool) throws {
        socket = try ZMQSocket(context: context, type: .rep)
        try socket.bind("inproc://zeromq.zap.01")
        self.admits = admits
        let thread = Thread { [unowned self] in self.serve() }
        thread.name = "zap-gate"
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
            let admitted = admits(String(decoding: parts[3], as: UTF8.self))
            let reply: [OutgoingFrame] = [.bytes(Array("1.0".utf8)), .bytes(parts[1]),
                                          .bytes(Array((admitted ? "200" : "400").utf8)),
                                          .bytes(Array((admitted ? "OK" : "too many connections").utf8)),
                                          .bytes([]), .bytes([])]
            _ = try? socket.send(reply)
        }
    }
}
