import Wire

/// The connections of a serving worker's socket whose peer has not proven the run secret,
/// by descriptor, and how many closed so: libzmq closes a connection whose peer sends more
/// than the socket's `ZMQ_MAXMSGSIZE` by itself, before any of it reaches the server, and
/// says so only through its monitor.
final class UnprovenConnections {
    private let monitor: ConnectionMonitor
    private var open: Set<Int32> = []
    private(set) var closed = 0

    /// Before the socket binds: no connection goes unseen.
    init(watching socket: ZMQSocket, context: ZMQContext) throws {
        monitor = try ConnectionMonitor(watching: socket, context: context)
    }

    /// Takes in the events so far; returns how many unproven connections closed among them.
    /// Call it before reading messages: a connection is accepted before any of its messages
    /// can be read, so a message's connection is always known by then.
    func update() -> Int {
        let before = closed
        for event in monitor.events() {
            switch event {
            case let .accepted(descriptor): open.insert(descriptor)
            case let .disconnected(descriptor): if open.remove(descriptor) != nil { closed += 1 }
            }
        }
        return closed - before
    }

    /// The peer on `descriptor` proved the secret: its connection's end is no refusal.
    func proven(_ descriptor: Int32) { open.remove(descriptor) }
}
