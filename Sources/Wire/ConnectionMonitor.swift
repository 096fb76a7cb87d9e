import CZeroMQ
import Foundation

/// Which connections of a listening socket were accepted and which have closed, from
/// libzmq's monitor: the only way an application learns that libzmq dropped a connection by
/// itself (for a message over `ZMQ_MAXMSGSIZE` it closes the connection without a word to
/// the socket's reader). Each connection is named by its descriptor, which messages carry
/// too (`ZMQMessage.sourceDescriptor`).
public final class ConnectionMonitor {
    public enum Event: Equatable {
        case accepted(descriptor: Int32)
        case disconnected(descriptor: Int32)
    }

    private let reader: ZMQSocket

    public init(watching socket: ZMQSocket, context: ZMQContext) throws {
        let endpoint = "inproc://zmqt-monitor-\(ObjectIdentifier(socket).hashValue)-\(UInt64.random(in: 0...UInt64.max))"
        try socket.monitor(at: endpoint, events: ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED)
        reader = try ZMQSocket(context: context, type: .pair)
        try reader.connect(endpoint)
    }

    /// The events published so far, in order.
    public func events() -> [Event] {
        var events: [Event] = []
        // Each event is two frames: the event (UInt16) and its value (UInt32, the descriptor)
        // in the first, native byte order; the endpoint in the second.
        while let frames = try? reader.receive(timeoutMilliseconds: 0) {
            guard let first = frames.first, first.count >= 6 else { continue }
            let (kind, value) = first.withUnsafeBytes { bytes in
                (bytes.loadUnaligned(fromByteOffset: 0, as: UInt16.self), bytes.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            }
            let descriptor = Int32(truncatingIfNeeded: value)
            switch Int32(kind) {
            case ZMQ_EVENT_ACCEPTED: events.append(.accepted(descriptor: descriptor))
            case ZMQ_EVENT_DISCONNECTED: events.append(.disconnected(descriptor: descriptor))
            default: break
            }
        }
        return events
    }
}
