import CZeroMQ

#if canImport(Glibc)
import Glibc
#endif

/// A failed libzmq call: the operation, and `zmq_errno()` with its `zmq_strerror` text.
public struct ZMQError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let code: Int32

    public var description: String { "\(operation): \(String(cString: zmq_strerror(code)))" }
    /// No message was ready, or the send would have blocked.
    public var isAgain: Bool { code == EAGAIN }
    /// A ROUTER with `routerMandatory` cannot reach the peer (it is gone).
    public var isUnreachable: Bool { code == EHOSTUNREACH }
}

/// Runs a libzmq call that returns -1 on failure, retrying when a signal interrupted it:
/// the one place where EINTR is handled.
@discardableResult
private func check(_ operation: @autoclosure () -> String, _ call: () -> Int32) throws -> Int32 {
    while true {
        let result = call()
        if result != -1 { return result }
        let code = zmq_errno()
        if code == EINTR { continue }
        throw ZMQError(operation: operation(), code: code)
    }
}

/// A ZeroMQ context. Every socket holds its context strongly, so the context is terminated
/// only after its last socket closed, and `zmq_ctx_term` cannot block on an open socket.
public final class ZMQContext: @unchecked Sendable {
    fileprivate let handle: UnsafeMutableRawPointer

    public init(ioThreads: Int = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZMQError(operation: "zmq_ctx_new", code: zmq_errno()) }
        self.handle = handle
        zmq_ctx_set(handle, ZMQ_IO_THREADS, Int32(ioThreads))
    }

    deinit { zmq_ctx_term(handle) }
}

public enum SocketType: Sendable {
    case router, dealer, pair, rep, req

    var rawValue: Int32 {
        switch self {
        case .router: ZMQ_ROUTER
        case .dealer: ZMQ_DEALER
        case .pair: ZMQ_PAIR
        case .rep: ZMQ_REP
        case .req: ZMQ_REQ
        }
    }
}

/// One frame to send: bytes to copy, or a range of a shared buffer to send without copying.
public enum OutgoingFrame {
    case bytes([UInt8])
    case shared(SharedBuffer, offset: Int, count: Int)

    public var byteCount: Int {
        switch self {
        case let .bytes(bytes): bytes.count
        case let .shared(_, _, count): count
        }
    }
}

/// A received frame. Owns its `zmq_msg_t`; read it in place with `withUnsafeBytes`.
public final class ZMQMessage {
    fileprivate let message: UnsafeMutablePointer<zmq_msg_t>

    fileprivate init() {
        message = .allocate(capacity: 1)
        zmq_msg_init(message)
    }

    /// A frame holding a copy of `bytes` (a message that came another way than a socket).
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init()
        zmq_msg_close(message)
        zmq_msg_init_size(message, bytes.count)
        if bytes.count > 0 { zmq_msg_data(message).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count) }
    }

    deinit {
        zmq_msg_close(message)
        message.deallocate()
    }

    public var count: Int { zmq_msg_size(message) }

    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: zmq_msg_data(message), count: zmq_msg_size(message)))
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The descriptor of the TCP connection the frame came in on (ZMQ_SRCFD), or -1: what
    /// ties a peer's messages to its connection's monitor events.
    public var sourceDescriptor: Int32 { zmq_msg_get(message, 2 /* ZMQ_SRCFD, deprecated but kept in 4.3 */) }
}

/// Releases a `SharedBuffer` retained for a zero-copy message: counts the frame freed (so
/// the owner may write again), then drops the retain. libzmq calls it from its I/O thread.
private let releaseSharedBuffer: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
    guard let hint else { return }
    let buffer = Unmanaged<SharedBuffer>.fromOpaque(hint)
    buffer.takeUnretainedValue().frameFreedByLibzmq()
    buffer.release()
}

#if DEBUG
/// Debug builds only: with `ZMQT_FAIL_SENDS_OVER_BYTES=N` in the environment, every send of
/// a message over N bytes fails as if the context had been terminated (ETERM), so that
/// tests can drive a process's own send failures (swift-system's debug builds have such
/// hooks for the same reason).
private let injectedSendFailureBytes: Int? = getenv("ZMQT_FAIL_SENDS_OVER_BYTES").flatMap { Int(String(cString: $0)) }
#endif

/// A ZeroMQ socket that closes itself. Options are typed properties; sends and receives
/// are multipart-aware and throw `ZMQError`.
public final class ZMQSocket {
    private let context: ZMQContext
    private let handle: UnsafeMutableRawPointer
    public let type: SocketType

    public init(context: ZMQContext, type: SocketType) throws {
        guard let handle = zmq_socket(context.handle, type.rawValue) else {
            throw ZMQError(operation: "zmq_socket", code: zmq_errno())
        }
        self.context = context
        self.handle = handle
        self.type = type
        // Never let close or context termination wait on messages to a vanished peer.
        try setOption(ZMQ_LINGER, Int32(0), name: "linger")
    }

    deinit { zmq_close(handle) }

    /// For `waitForInput(on:)` only.
    fileprivate var pollHandle: UnsafeMutableRawPointer { handle }

    public func bind(_ endpoint: String) throws {
        try check("bind \(endpoint)") { zmq_bind(handle, endpoint) }
    }

    public func connect(_ endpoint: String) throws {
        try check("connect \(endpoint)") { zmq_connect(handle, endpoint) }
    }

    /// Publishes this socket's connection events (`ZMQ_EVENT_*`, or-ed) on a PAIR socket
    /// bound at `endpoint` (inproc://…), which the caller connects to and reads.
    public func monitor(at endpoint: String, events: Int32) throws {
        try check("monitor \(endpoint)") { zmq_socket_monitor(handle, endpoint, events) }
    }

    /// The endpoint actually bound, e.g. with the port chosen for `tcp://127.0.0.1:*`.
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 512)
        var size = buffer.count
        _ = zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size)
        return String(cString: buffer)
    }

    // MARK: Options

    public func setOption(_ option: Int32, _ value: Int32, name: String) throws {
        var value = value
        try check("set \(name)") { zmq_setsockopt(handle, option, &value, MemoryLayout<Int32>.size) }
    }

    public func setOption(_ option: Int32, _ value: Int64, name: String) throws {
        var value = value
        try check("set \(name)") { zmq_setsockopt(handle, option, &value, MemoryLayout<Int64>.size) }
    }

    public func setOption(_ option: Int32, bytes: [UInt8], name: String) throws {
        try check("set \(name)") { bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) } }
    }

    /// Milliseconds to keep unsent messages after close (0: drop them).
    public func setLinger(milliseconds: Int) throws { try setOption(ZMQ_LINGER, Int32(milliseconds), name: "ZMQ_LINGER") }
    /// Queue limits, in messages (not bytes).
    public func setSendHighWaterMark(_ messages: Int) throws { try setOption(ZMQ_SNDHWM, Int32(messages), name: "ZMQ_SNDHWM") }
    public func setReceiveHighWaterMark(_ messages: Int) throws { try setOption(ZMQ_RCVHWM, Int32(messages), name: "ZMQ_RCVHWM") }
    /// The largest message a peer may send; a larger one drops the peer's connection, so no
    /// peer can make this process allocate without bound.
    public func setMaximumMessageSize(bytes: Int) throws { try setOption(ZMQ_MAXMSGSIZE, Int64(bytes), name: "ZMQ_MAXMSGSIZE") }
    /// ROUTER: fail with EHOSTUNREACH instead of silently dropping messages to unknown peers.
    public func setRouterMandatory(_ on: Bool) throws { try setOption(ZMQ_ROUTER_MANDATORY, Int32(on ? 1 : 0), name: "ZMQ_ROUTER_MANDATORY") }
    /// Queue only onto completed connections.
    public func setImmediate(_ on: Bool) throws { try setOption(ZMQ_IMMEDIATE, Int32(on ? 1 : 0), name: "ZMQ_IMMEDIATE") }
    /// Kernel socket buffer sizes (SO_SNDBUF / SO_RCVBUF) for TCP transports, in bytes.
    public func setKernelBufferSizes(bytes: Int) throws {
        try setOption(ZMQ_SNDBUF, Int32(bytes), name: "ZMQ_SNDBUF")
        try setOption(ZMQ_RCVBUF, Int32(bytes), name: "ZMQ_RCVBUF")
    }
    public func setRoutingID(_ id: [UInt8]) throws { try setOption(ZMQ_ROUTING_ID, bytes: id, name: "ZMQ_ROUTING_ID") }
    /// The ZAP domain: with one set, a server authenticates through a ZAP handler when one is
    /// bound, and refuses ZMTP 1.0 and 2.0 peers (no greeting, no security handshake) at once.
    public func setZAPDomain(_ domain: String) throws { try setOption(string: domain, for: ZMQ_ZAP_DOMAIN, name: "ZMQ_ZAP_DOMAIN") }
    public func setSendTimeout(milliseconds: Int) throws { try setOption(ZMQ_SNDTIMEO, Int32(milliseconds), name: "ZMQ_SNDTIMEO") }
    public func setOption(string: String, for option: Int32, name: String) throws {
        try setOption(option, bytes: Array(string.utf8), name: name)
    }

    // MARK: Sending and receiving

    /// Sends the frames as one multipart message. With `dontWait`, returns false instead of
    /// blocking when the queue is full.
    @discardableResult
    public func send(_ frames: [OutgoingFrame], dontWait: Bool = false) throws -> Bool {
        #if DEBUG
        if let limit = injectedSendFailureBytes, frames.reduce(0, { $0 + $1.byteCount }) > limit {
            throw ZMQError(operation: "send (failure injected by ZMQT_FAIL_SENDS_OVER_BYTES)", code: ETERM)
        }
        #endif
        for (index, frame) in frames.enumerated() {
            var flags: Int32 = index < frames.count - 1 ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            do {
                switch frame {
                case let .bytes(bytes):
                    try check("send") { bytes.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) } }
                case let .shared(buffer, offset, count):
                    precondition(offset >= 0 && offset + count <= buffer.byteCount)
                    var message = zmq_msg_t()
                    buffer.frameHandedToLibzmq()
                    let hint = Unmanaged.passRetained(buffer).toOpaque()
                    guard zmq_msg_init_data(&message, buffer.pointer + offset, count, releaseSharedBuffer, hint) == 0 else {
                        // libzmq took nothing and will call nothing: undo both here.
                        buffer.frameFreedByLibzmq()
                        Unmanaged<SharedBuffer>.fromOpaque(hint).release()
                        throw ZMQError(operation: "zmq_msg_init_data", code: zmq_errno())
                    }
                    do {
                        try check("send") { zmq_msg_send(&message, handle, flags) }
                    } catch {
                        zmq_msg_close(&message)  // calls the free function
                        throw error
                    }
                }
            } catch let error as ZMQError where error.isAgain && dontWait && index == 0 {
                return false
            }
        }
        return true
    }

    /// Receives one whole multipart message, or nil when none arrives in time.
    /// - Parameter timeoutMilliseconds: 0 polls, -1 waits forever.
    public func receive(timeoutMilliseconds: Int) throws -> [ZMQMessage]? {
        guard try waitForInput(timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        var frames: [ZMQMessage] = []
        while true {
            let frame = ZMQMessage()
            do {
                try check("receive") { zmq_msg_recv(frame.message, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0) }
            } catch let error as ZMQError where error.isAgain && frames.isEmpty {
                return nil
            }
            frames.append(frame)
            // Ask before the frame can be closed: zmq_msg_more reads the message itself.
            if zmq_msg_more(frame.message) == 0 { return frames }
        }
    }

    /// Waits until a message can be read from this socket or one of `descriptors` (pipes) is
    /// readable or closed. Returns whether the socket is readable and which descriptors are.
    public func waitForInput(timeoutMilliseconds: Int, alsoWatching descriptors: [Int32]) throws -> (socket: Bool, descriptors: [Int32]) {
        if descriptors.isEmpty { return (try waitForInput(timeoutMilliseconds: timeoutMilliseconds), []) }
        var items = [zmq_pollitem_t(socket: handle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0)]
        for descriptor in descriptors { items.append(zmq_pollitem_t(socket: nil, fd: descriptor, events: Int16(ZMQ_POLLIN), revents: 0)) }
        let ready = try check("poll") { zmq_poll(&items, Int32(items.count), timeoutMilliseconds) }
        guard ready > 0 else { return (false, []) }
        // A closed pipe reports POLLHUP (or POLLERR) without POLLIN: its reader must see it too.
        let events = Int16(ZMQ_POLLIN) | Int16(POLLHUP) | Int16(ZMQ_POLLERR)
        return (items[0].revents & Int16(ZMQ_POLLIN) != 0, items.dropFirst().filter { $0.revents & events != 0 }.map(\.fd))
    }

    /// Waits until a message can be read.
    public func waitForInput(timeoutMilliseconds: Int) throws -> Bool {
        var item = zmq_pollitem_t(socket: handle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0)
        let ready = try check("poll") { zmq_poll(&item, 1, timeoutMilliseconds) }
        return ready > 0
    }
}

/// Waits on several sockets and descriptors at once: a worker that also serves a range of
/// the parameters listens to its coordinator, its server socket and its links to the other
/// servers in one poll. Returns which sockets have a message and which descriptors are
/// readable or closed.
public func waitForInput(on sockets: [ZMQSocket], alsoWatching descriptors: [Int32] = [],
                         timeoutMilliseconds: Int) throws -> (sockets: [Bool], descriptors: [Int32]) {
    var items = sockets.map { zmq_pollitem_t(socket: $0.pollHandle, fd: -1, events: Int16(ZMQ_POLLIN), revents: 0) }
    for descriptor in descriptors { items.append(zmq_pollitem_t(socket: nil, fd: descriptor, events: Int16(ZMQ_POLLIN), revents: 0)) }
    guard try check("poll", { zmq_poll(&items, Int32(items.count), timeoutMilliseconds) }) > 0 else {
        return (Array(repeating: false, count: sockets.count), [])
    }
    let events = Int16(ZMQ_POLLIN) | Int16(POLLHUP) | Int16(ZMQ_POLLERR)
    return (items.prefix(sockets.count).map { $0.revents & Int16(ZMQ_POLLIN) != 0 },
            items.dropFirst(sockets.count).filter { $0.revents & events != 0 }.map(\.fd))
}

/// The libzmq version this process runs with, e.g. "4.3.4".
public var zmqVersion: String {
    var major: Int32 = 0, minor: Int32 = 0, patch: Int32 = 0
    zmq_version(&major, &minor, &patch)
    return "\(major).\(minor).\(patch)"
}
