import CSealedMemory
import Foundation
import NeuralNet
#if canImport(Glibc)
import Glibc
#endif

/// Where a shared-memory segment is and what it holds, as sent in welcome and attach
/// messages: a worker on the coordinator's host moves weights and gradients through it
/// instead of through the socket.
public struct SharedSegmentInfo: Equatable, Sendable {
    /// A POSIX shared-memory name, `/zmqt-…`, or for a sealed segment the path by which
    /// other processes reach its creator's descriptor, `/proc/PID/fd/N`.
    public var name: String
    /// 16 random bytes written into the segment's header: proof that the segment a peer
    /// opened by name is the one it was told about (and so that it shares the host).
    public var nonce: [UInt8]
    public var slotCount: Int
    public var slotBytes: Int

    public init(name: String, nonce: [UInt8], slotCount: Int, slotBytes: Int) {
        self.name = name
        self.nonce = nonce
        self.slotCount = slotCount
        self.slotBytes = slotBytes
    }

    /// Names a peer may ask us to open: our own prefix and a short, plain suffix, or a
    /// process's descriptor under /proc.
    public static func isValidName(_ name: String) -> Bool {
        guard name.utf8.count <= 64 else { return false }
        if name.hasPrefix("/" + LocalName.prefix) { return LocalName.isPlain(name.utf8.dropFirst(1 + LocalName.prefix.utf8.count)) }
        return isDescriptorPath(name)
    }

    /// `/proc/PID/fd/N`: how a sealed segment is named.
    static func isDescriptorPath(_ name: String) -> Bool {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        let isNumber = { (part: Substring) in !part.isEmpty && part.count <= 10 && part.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
        return parts.count == 5 && parts[0].isEmpty && parts[1] == "proc" && isNumber(parts[2]) && parts[3] == "fd" && isNumber(parts[4])
    }
}

public struct SharedSegmentError: Error, CustomStringConvertible {
    public let name: String
    public let reason: String

    public init(name: String, reason: String) {
        self.name = name
        self.reason = reason
    }
    public var description: String { "shared memory \(escapedForLog(name)): \(reason)" }
}

/// A shared-memory segment of equal slots after a 64-byte header (magic `ZMQS`, nonce,
/// slot count, slot size).
///
/// The process that creates a segment maps it and writes into its slots. A segment is
/// either named (POSIX shared memory, `/zmqt-…`, unlinked when its creator releases it) or
/// sealed (a memfd whose size nobody can change any more, reached as `/proc/PID/fd/N`).
/// A reader maps a segment only if it cannot shrink, or if it trusts the creator anyway
/// (a worker maps its coordinator's weights and batches): touching a mapping beyond the end
/// of a file that shrank would kill the reader with SIGBUS. So the coordinator maps a
/// worker's gradient segment only when it is sealed, and otherwise copies slots out with
/// `pread`, where a shrunken segment gives a short read and an error.
public final class SharedSegment {
    public let info: SharedSegmentInfo
    private let descriptor: Int32
    private let mapping: UnsafeMutableRawPointer?
    /// A reader's read-only mapping, made on request (`mappedSlot`).
    private var readMapping: UnsafeRawPointer?
    private let byteCount: Int
    /// Whether the size is sealed, so that mapping it is safe whoever made it.
    public let cannotShrink: Bool
    private static let headerBytes = 64
    private static let magic: [UInt8] = Array("ZMQS".utf8)

    /// Creates a fresh segment, only for this user's processes: named (mode 0600), or with
    /// `sealed`, a memfd with its size sealed (a named one where memfd is missing).
    public init(slotCount: Int, slotBytes: Int, sealed: Bool = false) throws {
        precondition(slotCount > 0 && slotBytes > 0)
        Self.removeStale()
        var nonce = [UInt8](repeating: 0, count: 16)
        for index in nonce.indices { nonce[index] = UInt8.random(in: 0...255) }
        byteCount = Self.headerBytes + slotCount * slotBytes
        let sealedDescriptor = sealed ? zmqt_sealed_memory_create("zmqt-segment", byteCount) : -1
        let name: String
        if sealedDescriptor >= 0 {
            name = "/proc/\(getpid())/fd/\(sealedDescriptor)"
            descriptor = sealedDescriptor
        } else {
            name = "/" + LocalName.make(random: nonce.prefix(6))
            descriptor = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0o600)
            guard descriptor >= 0 else { throw SharedSegmentError(name: name, reason: "cannot create: \(String(cString: strerror(errno)))") }
        }
        cannotShrink = sealedDescriptor >= 0
        guard cannotShrink || ftruncate(descriptor, off_t(byteCount)) == 0,
              // MAP_POPULATE: the pages are made now, not one fault at a time in the first steps.
              let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, descriptor, 0), mapped != MAP_FAILED else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            if !cannotShrink { shm_unlink(name) }
            throw SharedSegmentError(name: name, reason: "cannot size or map \(byteCount) bytes: \(reason)")
        }
        mapping = mapped
        info = SharedSegmentInfo(name: name, nonce: nonce, slotCount: slotCount, slotBytes: slotBytes)
        var header = ByteWriter(capacity: Self.headerBytes)
        header.write(raw: Self.magic)
        header.write(raw: nonce)
        header.write(UInt32(slotCount))
        header.write(UInt64(slotBytes))
        header.bytes.withUnsafeBytes { mapped.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    /// Opens a segment another process created, read-only, and checks that its header
    /// matches `info` (and so that it is on this host and is the one meant).
    public init(opening info: SharedSegmentInfo) throws {
        guard SharedSegmentInfo.isValidName(info.name) else {
            throw SharedSegmentError(name: info.name, reason: "not a name this program makes")
        }
        guard info.nonce.count == 16, info.slotCount > 0, info.slotCount <= 64, info.slotBytes > 0,
              info.slotBytes <= WireProtocol.maximumMessageBytes else {
            throw SharedSegmentError(name: info.name, reason: "implausible layout (\(info.slotCount) slots of \(info.slotBytes) bytes)")
        }
        let isDescriptorPath = SharedSegmentInfo.isDescriptorPath(info.name)
        // Never blocks, whatever the name turns out to be (a FIFO would block a plain open
        // for good); shm_open adds O_NOFOLLOW itself. /proc/PID/fd/N is a link by nature.
        let flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK
        let opened = isDescriptorPath ? open(info.name, flags) : shm_open(info.name, flags, 0)
        guard opened >= 0 else {
            throw SharedSegmentError(name: info.name, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        // A regular file (shared memory and memfds are) of this user, before reading a byte.
        var status = stat()
        guard fstat(opened, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_uid == geteuid() else {
            close(opened)
            throw SharedSegmentError(name: info.name, reason: "not shared memory of this user")
        }
        let byteCount = Self.headerBytes + info.slotCount * info.slotBytes
        var expected = ByteWriter(capacity: 32)
        expected.write(raw: Self.magic)
        expected.write(raw: info.nonce)
        expected.write(UInt32(info.slotCount))
        expected.write(UInt64(info.slotBytes))
        var header = [UInt8](repeating: 0, count: expected.bytes.count)
        let read = header.withUnsafeMutableBytes { pread(opened, $0.baseAddress!, $0.count, 0) }
        guard read == header.count, header == expected.bytes, Int(status.st_size) >= byteCount else {
            close(opened)
            throw SharedSegmentError(name: info.name, reason: "its header or size does not match what the peer announced")
        }
        descriptor = opened
        mapping = nil
        self.byteCount = byteCount
        self.info = info
        cannotShrink = isDescriptorPath && zmqt_sealed_memory_cannot_shrink(opened) == 1
    }

    private var isNamed: Bool { !SharedSegmentInfo.isDescriptorPath(info.name) }

    /// Removes the name (the memory stays until every process has let go of it). Only the
    /// creator can: a peer that names someone else's segment (the coordinator's own, with
    /// the nonce from its welcome) must not make this process remove it. A worker calls this
    /// once the coordinator reads its segment: nobody else needs the name then.
    public func unlinkName() {
        if isNamed && mapping != nil { shm_unlink(info.name) }
    }

    /// Removes the segments of processes that are gone (names carry the creator's pid): a
    /// coordinator killed with SIGKILL cannot remove its own.
    static func removeStale() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm") else { return }
        for entry in entries where entry.hasPrefix(LocalName.prefix) {
            let fields = entry.split(separator: "-")
            guard fields.count == 3, let pid = pid_t(fields[1]), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { shm_unlink("/" + entry) }
        }
    }

    /// Slot `index` of another process's segment, mapped read-only: no copy, but a segment
    /// that its creator shrinks would fault on access. Only for a segment that cannot
    /// shrink, or a creator that this process trusts anyway (a worker maps its
    /// coordinator's weights); a worker's unsealed segment is copied with `read`.
    public func mappedSlot(_ index: Int) throws -> UnsafeRawPointer {
        try mapped(slot: index, offset: 0, byteCount: info.slotBytes)
    }

    /// `byteCount` bytes at `offset` of slot `index`, mapped read-only as `mappedSlot`; a
    /// range outside the slot is an error, as the numbers come from a message.
    public func mapped(slot index: Int, offset: Int, byteCount: Int) throws -> UnsafeRawPointer {
        guard index >= 0 && index < info.slotCount, offset >= 0, byteCount >= 0, offset + byteCount <= info.slotBytes else {
            throw SharedSegmentError(name: info.name, reason: "\(byteCount) bytes at \(offset) of slot \(index) lie outside its \(info.slotCount) slots of \(info.slotBytes) bytes")
        }
        return try readMappingNow() + Self.headerBytes + index * info.slotBytes + offset
    }

    /// Maps the segment read-only now, with its page tables filled, rather than on first
    /// use in a training step; for segments that may be mapped (see `mappedSlot`).
    public func mapInAdvance() throws {
        _ = try readMappingNow()
    }

    private func readMappingNow() throws -> UnsafeRawPointer {
        if let readMapping { return readMapping }
        guard let mapped = mmap(nil, byteCount, PROT_READ, MAP_SHARED | MAP_POPULATE, descriptor, 0), mapped != MAP_FAILED else {
            throw SharedSegmentError(name: info.name, reason: "cannot map: \(String(cString: strerror(errno)))")
        }
        readMapping = UnsafeRawPointer(mapped)
        return readMapping!
    }

    deinit {
        if let readMapping { munmap(UnsafeMutableRawPointer(mutating: readMapping), byteCount) }
        if let mapping {
            munmap(mapping, byteCount)
            if isNamed { shm_unlink(info.name) }
        }
        close(descriptor)
    }

    /// Slot `index` of a segment this process created.
    public func slot(_ index: Int) -> UnsafeMutableRawPointer {
        precondition(mapping != nil, "only the creator writes into a segment")
        precondition(index >= 0 && index < info.slotCount)
        return mapping! + Self.headerBytes + index * info.slotBytes
    }

    /// Copies the first `byteCount` bytes of slot `index` into `destination`.
    public func read(slot index: Int, byteCount: Int, into destination: UnsafeMutableRawPointer) throws {
        guard index >= 0 && index < info.slotCount, byteCount <= info.slotBytes else {
            throw SharedSegmentError(name: info.name, reason: "slot \(index) of \(byteCount) bytes is outside the segment")
        }
        var done = 0
        let offset = Self.headerBytes + index * info.slotBytes
        while done < byteCount {
            let n = pread(descriptor, destination + done, byteCount - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw SharedSegmentError(name: info.name, reason: n == 0 ? "it shrank (short read)" : String(cString: strerror(errno)))
            }
            done += n
        }
    }
}

extension SharedSegment {
    /// Reads `count` values in `precision` from slot `index` and decodes them to fp32 in
    /// `destination` (fp32 straight in; 16-bit through `scratch`, grown once, unless the
    /// segment can be mapped). Returns false if any value is NaN or infinite.
    public func readValues(slot index: Int, count: Int, precision: WirePrecision,
                           into destination: UnsafeMutablePointer<Float>, scratch: inout [UInt8]) throws -> Bool {
        let byteCount = count * precision.bytesPerValue
        if cannotShrink {
            return precision.decode(try mapped(slot: index, offset: 0, byteCount: byteCount), count: count, into: destination)
        }
        if precision == .fp32 {
            try read(slot: index, byteCount: byteCount, into: UnsafeMutableRawPointer(destination))
            return WirePrecision.allFinite(destination, count: count)
        }
        if scratch.count < byteCount { scratch = [UInt8](repeating: 0, count: byteCount) }
        return try scratch.withUnsafeMutableBytes { raw in
            try read(slot: index, byteCount: byteCount, into: raw.baseAddress!)
            return precision.decode(raw.baseAddress!, count: count, into: destination)
        }
    }
}

extension ByteWriter {
    /// A segment's description; an empty name (and nothing else) stands for none.
    public mutating func write(segment: SharedSegmentInfo?) {
        guard let segment else {
            write(string: "")
            return
        }
        write(string: segment.name)
        write(raw: segment.nonce)
        write(UInt32(segment.slotCount))
        write(UInt64(segment.slotBytes))
    }
}

extension ByteReader {
    public mutating func readSegment() throws -> SharedSegmentInfo? {
        let name = try readString(maximumLength: 64)
        guard !name.isEmpty else { return nil }
        return SharedSegmentInfo(name: name, nonce: Array(try readBytes(count: 16)),
                                 slotCount: try readInt(UInt32.self, "segment slot count", in: 1...64),
                                 slotBytes: try readInt(UInt64.self, "segment slot size", in: 1...WireProtocol.maximumMessageBytes))
    }
}
