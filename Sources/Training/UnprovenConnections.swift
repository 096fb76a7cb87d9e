import Foundation
import Wire

/// The connections of a serving worker's socket whose peer has not proven the run secret,
/// by descriptor: how many closed so (libzmq closes a connection whose peer sends more than
/// the socket's `ZMQ_MAXMSGSIZE` by itself, before any of it reaches the server, and says
/// so only through its monitor), and at most `limit` open at once: the server's `ZAPGate`
/// refuses the next ones at their handshake. Shared by the server's thread and the gate's.
final class UnprovenConnections: @unchecked Sendable {
    /// Open connections without the proof beyond which new ones are refused: far more than
    /// the workers of a run that connect at once, few enough that a stranger cannot hold
    /// the server's memory and descriptors with connections.
    static let limit = 256

    private let lock = NSLock()
    private let monitor: ConnectionMonitor
    private var open: Set<Int32> = []
    private var closedCount = 0
    private var refusedCount = 0

    /// Before the socket binds: no connection goes unseen.
    init(watching socket: ZMQSocket, context: ZMQContext) throws {
        monitor = try ConnectionMonitor(watching: socket, context: context)
    }

    /// Connections that closed before their peer proved the secret (refused ones too).
    var closed: Int { locked { closedCount } }
    /// Connections the gate refused because `limit` were open.
    var refused: Int { locked { refusedCount } }

    /// Takes in the events so far. Call it before reading messages: a connection is
    /// accepted before any of its messages can be read, so a message's connection is always
    /// known by then.
    func update() { locked { takeEvents() } }

    /// The peer on `descriptor` proved the secret: its connection's end is no refusal.
    func proven(_ descriptor: Int32) { locked { _ = open.remove(descriptor) } }

    /// For the gate, during a connection's handshake (it is accepted, so among `open`).
    func admitsAnother() -> Bool {
        locked {
            takeEvents()
            guard open.count > Self.limit else { return true }
            refusedCount += 1
            return false
        }
    }

    private func takeEvents() {
        for event in monitor.events() {
            switch event {
            case let .accepted(descriptor): open.insert(descriptor)
            case let .disconnected(descriptor): if open.remove(descriptor) != nil { closedCount += 1 }
            }
        }
    }

    private func locked<R>(_ body: () -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body()
    }
}

/// The worker's one ZAP gate (libzmq has one handler per context) and the server whose
/// connections it bounds now: a worker that binds its server again for a larger model
/// keeps the gate.
final class ServerGate: @unchecked Sendable {
    private let lock = NSLock()
    private var current: UnprovenConnections?
    private var gate: ZAPGate?

    /// Before any server binds: libzmq asks no handler that is not there yet.
    init(context: ZMQContext) throws {
        gate = try ZAPGate(context: context) { [unowned self] _ in
            self.lock.lock()
            let connections = self.current
            self.lock.unlock()
            return connections?.admitsAnother() ?? true
        }
    }

    func watch(_ connections: UnprovenConnections?) {
        lock.lock()
        current = connections
        lock.unlock()
    }

    /// Before the context goes away.
    func stop() { gate?.stop() }
}
