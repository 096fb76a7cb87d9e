import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The run secret on disk: written 0600 from the first byte, read only from a regular file
/// of this user that nobody else can read.
extension RunSecret {
    /// The file a coordinator bound to `endpoint` writes when given no `--secret-file`, and
    /// where a worker on the same host connecting to it looks: a folder of this user's
    /// (mode 0700) in /tmp, one file per TCP port. Nil for an endpoint without a port.
    public static func defaultPath(forEndpoint endpoint: String) -> String? {
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":"),
              let port = Int(endpoint[endpoint.index(after: colon)...]), (1...65535).contains(port) else { return nil }
        return defaultFolder + "/run-secret-tcp-\(port)"
    }

    public static var defaultFolder: String { "/tmp/zmq-trainer-\(geteuid())" }

    /// Writes the secret as hex to `path`, then a line naming this process: a new file
    /// created with mode 0600 (so its bytes are never readable by others, not even for a
    /// moment), synced, then renamed over `path`. For the default path, makes its folder
    /// (0700) first, checks that it is ours, and removes the files of coordinators that are
    /// gone (killed before they could remove their own).
    public func write(to path: String) throws {
        if path.hasPrefix(Self.defaultFolder + "/") {
            try Self.makePrivateFolder(Self.defaultFolder)
            Self.removeStale()
        }
        let temporary = path + ".tmp-\(getpid())"
        unlink(temporary)  // a leftover of a process with our pid, killed while writing
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw RunSecretError.io(path: temporary, reason: String(cString: strerror(errno))) }
        let text = Array((hex + "\n" + "coordinator pid \(getpid())\n").utf8)
        let written = text.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress!, $0.count) }
        let synced = fsync(descriptor) == 0
        close(descriptor)
        guard written == text.count, synced, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw RunSecretError.io(path: path, reason: "cannot write: \(reason)")
        }
    }

    /// Reads a secret file (`-`: standard input, for a launcher that pipes it over ssh).
    public static func read(from path: String) throws -> RunSecret {
        if path == "-" {
            return try RunSecret(fileText: Array(FileHandle.standardInput.readData(ofLength: 256)))
        }
        let descriptor = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard descriptor >= 0 else { throw RunSecretError.io(path: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            throw RunSecretError.unsafe(path: path, reason: "not a regular file")
        }
        guard status.st_uid == geteuid() else { throw RunSecretError.unsafe(path: path, reason: "owned by another user") }
        guard status.st_mode & 0o077 == 0 else {
            throw RunSecretError.unsafe(path: path, reason: "readable or writable by others (chmod 600 it)")
        }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress!, $0.count) }
        guard count > 0 else { throw RunSecretError.io(path: path, reason: "cannot read, or empty") }
        do {
            return try RunSecret(fileText: Array(buffer.prefix(count)))
        } catch {
            throw RunSecretError.unsafe(path: path, reason: "\(error)")
        }
    }

    /// Removes the file if it still holds this secret (a later run may have replaced it).
    public func remove(at path: String) {
        if (try? Self.read(from: path)) == self { unlink(path) }
    }

    /// A secret file's first line; what follows names the coordinator that wrote it.
    private init(fileText: [UInt8]) throws {
        try self.init(hex: String(decoding: fileText.prefix { $0 != 0x0A }, as: UTF8.self))
    }

    /// The default folder's files whose coordinator is gone.
    private static func removeStale() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: defaultFolder) else { return }
        for name in names where name.hasPrefix("run-secret-") {
            let path = defaultFolder + "/" + name
            guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                  let line = text.split(separator: "\n").dropFirst().first, line.hasPrefix("coordinator pid "),
                  let pid = pid_t(line.dropFirst("coordinator pid ".count)), pid > 0 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { unlink(path) }
        }
    }

    private static func makePrivateFolder(_ folder: String) throws {
        if mkdir(folder, 0o700) != 0 && errno != EEXIST {
            throw RunSecretError.io(path: folder, reason: "cannot make the folder: \(String(cString: strerror(errno)))")
        }
        var status = stat()
        guard lstat(folder, &status) == 0, status.st_mode & S_IFMT == S_IFDIR, status.st_uid == geteuid(),
              status.st_mode & 0o077 == 0 else {
            throw RunSecretError.unsafe(path: folder, reason: "not a folder of this user that only it can use")
        }
    }
}
