import Foundation

/// Standard output and the files a run writes as it goes (`--metrics`, `--summary`, …),
/// written with `write(2)` so that every failure (a full disk, a closed pipe) is thrown as an
/// `OutputError` naming the file. Foundation's `FileHandle.write(_: Data)` traps on those,
/// and `print` drops them.
///
/// Expects SIGPIPE to be ignored (the executables do so first), so that a reader that went
/// away is an `EPIPE` error here rather than a signal.
public final class OutputFile: @unchecked Sendable {  // the descriptor never changes; writes are single syscalls
    /// What errors call it: the path, or "standard output".
    public let name: String
    private let descriptor: Int32
    private let ownsDescriptor: Bool

    public static let standardOutput = OutputFile(descriptor: STDOUT_FILENO, name: "standard output")
    public static let standardError = OutputFile(descriptor: STDERR_FILENO, name: "standard error")

    private init(descriptor: Int32, name: String) {
        self.descriptor = descriptor
        self.name = name
        ownsDescriptor = false
    }

    /// Creates or truncates `path` (mode 644 less the umask).
    public init(creating path: String) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        name = path
        ownsDescriptor = true
        guard descriptor >= 0 else { throw OutputError(name: path, action: "cannot create", code: errno) }
    }

    deinit { if ownsDescriptor { Glibc.close(descriptor) } }

    public func write(_ text: String) throws { try write(Array(text.utf8)) }

    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = Glibc.write(descriptor, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw OutputError(name: name, action: "cannot write", code: errno)
                }
                done += n
            }
        }
    }

    /// For messages about a failure already being reported: nothing is left to tell if this fails.
    public func writeIgnoringErrors(_ text: String) { try? write(text) }

    /// Writes `bytes` as the whole of `path`.
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let file = try OutputFile(creating: path)
        try file.write(bytes)
        try file.sync()
    }

    /// Makes sure what was written reached the disk: a full disk can also show up only here.
    public func sync() throws {
        guard fsync(descriptor) == 0 || errno == EINVAL || errno == EROFS else {  // pipes and ttys cannot sync
            throw OutputError(name: name, action: "cannot write", code: errno)
        }
    }
}

public struct OutputError: Error, CustomStringConvertible, Equatable {
    public let name: String
    public let reason: String

    init(name: String, action: String, code: Int32) {
        self.name = name
        reason = "\(action): \(String(cString: strerror(code)))"
    }

    public var description: String { "\(name): \(reason)" }
}
