import Synchronization

/// Memory handed to libzmq without a copy (`zmq_msg_init_data`). Each message that points
/// into it keeps the buffer retained until libzmq calls the free function, from its I/O
/// thread, once the bytes are on the wire; so the owner may drop it at any time.
///
/// Whether libzmq is done with it is an explicit count, not a guess from the reference
/// count: each zero-copy frame increments it when handed to libzmq, and the free function
/// decrements it with release ordering after libzmq's last read; `isFree` loads it with
/// acquire ordering. So once `isFree` is true, the owner's next writes come after every
/// read of the I/O thread. The owner must not write into it while `isInFlight`.
public final class SharedBuffer: @unchecked Sendable {
    public let byteCount: Int
    public let pointer: UnsafeMutableRawPointer
    /// For memory this buffer borrows: what owns it, kept alive as long as the buffer is.
    private let owner: AnyObject?
    /// Zero-copy frames pointing into this buffer that libzmq has not freed yet.
    private let framesInFlight = Atomic<Int>(0)

    public init(byteCount: Int) {
        self.byteCount = byteCount
        self.pointer = .allocate(byteCount: max(byteCount, 1), alignment: 64)
        self.owner = nil
    }

    /// Memory that `owner` holds (a shared segment's slot), not freed by this buffer.
    public init(borrowing pointer: UnsafeMutableRawPointer, byteCount: Int, owner: AnyObject) {
        self.byteCount = byteCount
        self.pointer = pointer
        self.owner = owner
    }

    deinit { if owner == nil { pointer.deallocate() } }

    public func floats(count: Int) -> UnsafeMutablePointer<Float> {
        precondition(count * 4 <= byteCount)
        return pointer.bindMemory(to: Float.self, capacity: count)
    }

    /// Whether a zero-copy frame that points into this buffer is still with libzmq.
    public var isInFlight: Bool { framesInFlight.load(ordering: .acquiring) != 0 }
    /// Whether libzmq is done with every frame that pointed into it: writing is safe.
    public var isFree: Bool { !isInFlight }

    /// Before handing a frame to libzmq; only the owner's thread sends, so relaxed suffices.
    func frameHandedToLibzmq() { framesInFlight.wrappingAdd(1, ordering: .relaxed) }
    /// From libzmq's free function (any thread), after its last read of the frame.
    func frameFreedByLibzmq() { framesInFlight.wrappingSubtract(1, ordering: .releasing) }
}

/// Buffers of one size for zero-copy sends: a buffer is handed out again only once no
/// message in flight still points into it, so refilling it never changes bytes going out.
public final class SharedBufferPool {
    public let byteCount: Int
    private var buffers: [SharedBuffer] = []

    public init(byteCount: Int) { self.byteCount = byteCount }

    /// A buffer that libzmq is done with and that nobody else holds (a batch still in use
    /// keeps its buffer), made if every one is taken. `isFree` orders the reuse after
    /// libzmq's reads; the uniqueness check only asks about holders on this thread.
    public func take() -> SharedBuffer {
        for index in buffers.indices where buffers[index].isFree && isKnownUniquelyReferenced(&buffers[index]) {
            return buffers[index]
        }
        let buffer = SharedBuffer(byteCount: byteCount)
        buffers.append(buffer)
        return buffer
    }
}
