import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct PipeChannelError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    /// The reader's own `read` failed, as opposed to the writer's bytes breaking the framing.
    public let readFailed: Bool
    /// A write found the pipe full (the reader has not read for a while); nothing was written.
    public let pipeFull: Bool

    public init(path: String, reason: String, readFailed: Bool = false, pipeFull: Bool = false) {
        self.path = path
        self.reason = reason
        self.readFailed = readFailed
        self.pipeFull = pipeFull
    }
    public var description: String { "pipe \(escapedForLog(path)): \(reason)" }
}

/// A one-way path for small messages between a coordinator and a worker on one host: a
/// named pipe (FIFO) in `/dev/shm`.
///
/// Why not the socket: a message through libzmq passes through the I/O thread of each side,
/// two extra thread wake-ups, and on a host whose cores are all busy computing, each of those
/// threads can wait a whole scheduler slice (1.4 ms on this kernel) for a core. A step's
/// weights notice and its results are on the critical path of every step; a pipe wakes the
/// thread that reads it directly. Bulk values stay in `SharedSegment`s, and everything else
/// (hellos, heartbeats, shutdown, workers elsewhere) stays on the socket.
///
/// A message travels whole or not at all: it is at most `maximumMessageBytes` (`PIPE_BUF`),
/// which a pipe writes atomically. Framing: a UInt32 byte count of what follows, then each
/// frame as a UInt32 byte count and its bytes (little-endian). The reader checks every
/// count before it believes it, and frames become `ZMQMessage`s for the usual decoders.
///
/// The worker creates both pipes (mode 0600): the one it reads from opened read-only, the
/// one it writes to opened for reading and writing (so that the open does not wait for a
/// reader). The coordinator opens the other ends, checks that they are pipes of its own
/// user, and removes the names. Each side holds the only write end of the pipe the other
/// reads, so each reads end-of-file the moment the other process exits: a worker knows at
/// once that its coordinator is gone, and the coordinator that a worker is.
public final class PipeChannel {
    /// Bytes of one framed message, at most: what a pipe writes atomically.
    public static let maximumMessageBytes = Int(PIPE_BUF)
    private static let directory = "/dev/shm"

    public let path: String
    public let descriptor: Int32
    /// Bytes read and not yet parsed into messages.
    private var inbox: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 16 << 10)
    private var outbox: [UInt8] = []
    /// The writer is gone (end of file): nothing more will arrive.
    public private(set) var isClosed = false
    /// Why nothing more can be trusted from this pipe (its bytes broke the framing, or a read
    /// failed); set by `receive`, after the messages that came before.
    public private(set) var failure: PipeChannelError?

    /// Makes a fresh pipe with a name no other process uses (the worker's side), to read
    /// from (`forWriting` false) or to write to.
    public init(forWriting: Bool) throws {
        Self.ignoreBrokenPipes()
        var suffix = [UInt8](repeating: 0, count: 6)
        for index in suffix.indices { suffix[index] = UInt8.random(in: 0...255) }
        path = "\(Self.directory)/" + LocalName.make(random: suffix) + "p"
        guard mkfifo(path, 0o600) == 0 else {
            throw PipeChannelError(path: path, reason: "cannot create: \(String(cString: strerror(errno)))")
        }
        // A write end alone cannot open before a reader does; read and write can. A read end
        // sees no end-of-file in `poll` until a writer has come and gone.
        descriptor = open(path, (forWriting ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            unlink(path)
            throw PipeChannelError(path: path, reason: "cannot open: \(reason)")
        }
    }

    /// Whether a read would find something now (bytes, or the writer gone), without waiting.
    public var hasInput: Bool {
        var item = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&item, 1, 0) > 0
    }

    /// Opens the other end of a peer's pipe, for reading or for writing, and removes its name.
    public init(opening path: String, forWriting: Bool) throws {
        Self.ignoreBrokenPipes()
        self.path = path
        guard Self.isValidPath(path) else { throw PipeChannelError(path: path, reason: "not a name this program makes") }
        descriptor = open(path, (forWriting ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            throw PipeChannelError(path: path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFIFO, status.st_uid == geteuid() else {
            close(descriptor)
            throw PipeChannelError(path: path, reason: "not a pipe of this user")
        }
        unlink(path)
    }

    deinit {
        close(descriptor)
        unlink(path)  // the creator's copy of the name, if the peer never took it
    }

    /// Names a peer may ask us to open: our own prefix in `/dev/shm`, a short, plain suffix.
    public static func isValidPath(_ path: String) -> Bool {
        let prefix = directory + "/" + LocalName.prefix
        return path.hasPrefix(prefix) && path.utf8.count <= 80 && LocalName.isPlain(path.utf8.dropFirst(prefix.utf8.count))
    }

    /// Removes the name; the pipe lives on while either side holds it open.
    public func unlinkName() { unlink(path) }

    /// A writer to a pipe whose reader is gone gets EPIPE, not a signal that kills it.
    private static func ignoreBrokenPipes() { signal(SIGPIPE, SIG_IGN) }

    // MARK: Writing

    /// Writes one message. Returns false, sending nothing, when it is larger than
    /// `maximumMessageBytes` (send it another way); throws when the reader is gone or has
    /// stopped reading (the pipe is full).
    public func send(_ frames: [OutgoingFrame]) throws -> Bool {
        let length = frames.reduce(0) { $0 + 4 + $1.byteCount }
        guard 4 + length <= Self.maximumMessageBytes else { return false }
        outbox.removeAll(keepingCapacity: true)
        append(UInt32(length))
        for frame in frames {
            append(UInt32(frame.byteCount))
            switch frame {
            case let .bytes(bytes): outbox.append(contentsOf: bytes)
            case let .shared(buffer, offset, count):
                outbox.append(contentsOf: UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count))
            }
        }
        while true {
            let written = outbox.withUnsafeBytes { write(descriptor, $0.baseAddress!, $0.count) }
            if written == outbox.count { return true }
            if written < 0 && errno == EINTR { continue }
            let reason = written < 0 && errno == EAGAIN ? "the reader stopped reading (pipe full)"
                : written < 0 ? String(cString: strerror(errno)) : "short write"
            throw PipeChannelError(path: path, reason: reason, pipeFull: written < 0 && errno == EAGAIN)
        }
    }

    private func append(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { outbox.append(contentsOf: $0) }
    }

    // MARK: Reading

    /// Reads what the pipe holds and returns the complete messages, as frames, in order.
    /// Sets `isClosed` at end of file, and `failure` when the bytes break the framing or a
    /// read fails: the messages before that still count, nothing after it does. Call it
    /// when `poll` reports the descriptor: before any writer came, a read end reads
    /// end-of-file too.
    public func receive() -> [[ZMQMessage]] {
        guard failure == nil else { return [] }
        while !isClosed {
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress!, $0.count) }
            if count > 0 {
                inbox.append(contentsOf: chunk[..<count])
                // More than a pipe's worth of unparsed bytes cannot be messages of ours.
                if inbox.count > 1 << 20 { break }
            } else if count == 0 {
                isClosed = true
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN {
                break
            } else {
                failure = PipeChannelError(path: path, reason: String(cString: strerror(errno)), readFailed: true)
                break
            }
        }
        var messages: [[ZMQMessage]] = []
        var start = 0
        do {
            while let (frames, end) = try parse(from: start) {
                messages.append(frames)
                start = end
            }
        } catch let error as PipeChannelError {
            failure = error
        } catch {
            failure = PipeChannelError(path: path, reason: "\(error)")
        }
        inbox.removeFirst(start)
        if failure == nil && inbox.count > 1 << 20 {
            failure = PipeChannelError(path: path, reason: "too many bytes without a whole message")
        }
        return messages
    }

    /// The message at `start` of the inbox and where it ends; nil if it is not all there yet.
    private func parse(from start: Int) throws -> ([ZMQMessage], Int)? {
        try inbox.withUnsafeBytes { raw in
            func word(at offset: Int) -> Int {
                Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            }
            guard raw.count - start >= 4 else { return nil }
            let length = word(at: start)
            guard 4 + length <= Self.maximumMessageBytes else {
                throw PipeChannelError(path: path, reason: "a message claims \(length) bytes, more than a pipe message may hold")
            }
            let end = start + 4 + length
            guard raw.count >= end else {
                if isClosed { throw PipeChannelError(path: path, reason: "end of file inside a message") }
                return nil
            }
            var frames: [ZMQMessage] = []
            var offset = start + 4
            while offset < end {
                guard end - offset >= 4, frames.count < 8 else {
                    throw PipeChannelError(path: path, reason: "a message's frames do not add up to its length")
                }
                let count = word(at: offset)
                guard count <= end - offset - 4 else {
                    throw PipeChannelError(path: path, reason: "a frame of \(count) bytes overruns its message")
                }
                frames.append(ZMQMessage(copying: UnsafeRawBufferPointer(rebasing: raw[(offset + 4)..<(offset + 4 + count)])))
                offset += 4 + count
            }
            return (frames, end)
        }
    }
}
