import Foundation

/// Saved models: a small binary format, little-endian throughout.
///
///     offset  size        field
///     0       4           magic "ZMQN"
///     4       2           format version (2)
///     6       4           spec length N
///     10      N           the architecture in `ModelCodec`'s encoding
///     …       8           parameter count P
///     …       4·P         parameters, Float32, in `ModelSpec`'s flat layout
///     …       32          SHA-256 of every byte before it
///
/// Version 1 (dense layers only) still loads: its header, after the version, was layer
/// count L (UInt16), input size (UInt32) and per layer output size and activation (UInt32
/// each); it is translated into the codec's bytes and decoded by the same checked decoder.
public enum ModelFile {
    public static let magic: [UInt8] = Array("ZMQN".utf8)
    public static let version: UInt16 = 2

    public static func encode(spec: ModelSpec, parameters: [Float]) -> [UInt8] {
        precondition(parameters.count == spec.parameterCount)
        let specBytes = ModelCodec.encode(spec)
        var writer = ByteWriter(capacity: 64 + specBytes.count + parameters.count * 4)
        writer.write(raw: magic)
        writer.write(version)
        writer.write(UInt32(specBytes.count))
        writer.write(raw: specBytes)
        writer.write(UInt64(parameters.count))
        writer.write(floats: parameters)
        writer.write(raw: Checksum.sha256(writer.bytes))
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8], path: String = "model") throws -> (spec: ModelSpec, parameters: [Float]) {
        guard bytes.count >= 4 + 32 else {
            throw ModelFileError(path: path, reason: "file is \(bytes.count) bytes, too short for a model")
        }
        guard Array(bytes[0..<4]) == magic else {
            throw ModelFileError(path: path, reason: "not a model file (bad magic number)")
        }
        let body = bytes[0..<(bytes.count - 32)]
        guard Checksum.sha256(Array(body)) == Array(bytes[(bytes.count - 32)...]) else {
            throw ModelFileError(path: path, reason: "checksum mismatch: the file is truncated or corrupted")
        }
        return try body.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do {
                _ = try reader.readBytes(count: 4)
                let fileVersion = try reader.read(UInt16.self)
                let specBytes: [UInt8]
                switch fileVersion {
                case 1: specBytes = try legacySpecBytes(from: &reader)
                case version:
                    let length = try reader.read(UInt32.self, in: 0...reader.remaining, field: "spec length")
                    specBytes = Array(try reader.readBytes(count: length))
                default:
                    throw ModelFileError(path: path, reason: "format version \(fileVersion) is not supported (this build reads 1 and \(version))")
                }
                // The parameters must fit in the bytes that are left: the file's real length caps
                // the sizes its header may claim.
                let room = max(0, reader.remaining - 8) / 4
                let spec = try ModelCodec.decode(specBytes, maximumParameterCount: room)
                let count = try reader.read(UInt64.self, in: 0...room, field: "parameter count")
                guard count == spec.parameterCount, reader.remaining == count * 4 else {
                    throw ModelFileError(path: path, reason: "holds \(count) parameters; \(spec) needs \(spec.parameterCount)")
                }
                return (spec, try reader.readFloats(count: count))
            } catch let error as ByteReaderError {
                throw ModelFileError(path: path, reason: error.description)
            } catch let error as ModelSpecError {
                throw ModelFileError(path: path, reason: error.description)
            }
        }
    }

    /// A version-1 header (an MLP) as `ModelCodec` bytes: a vector input, dense layers.
    private static func legacySpecBytes(from reader: inout ByteReader) throws -> [UInt8] {
        let layerCount = try reader.read(UInt16.self, in: 1...ModelCodec.maximumLayerCount, field: "layer count")
        let inputSize = try reader.read(UInt32.self, in: 1...ModelCodec.maximumValuesPerSample, field: "input size")
        var writer = ByteWriter()
        writer.write(UInt32(1))
        writer.write(UInt32(1))
        writer.write(UInt32(inputSize))
        writer.write(UInt16(layerCount))
        for index in 0..<layerCount {
            let outputSize = try reader.read(UInt32.self, in: 1...ModelCodec.maximumValuesPerSample, field: "layer \(index) size")
            let code = try reader.read(UInt32.self, in: 0...Int(UInt8.max), field: "layer \(index) activation")
            writer.write(ModelCodec.Kind.dense.rawValue)
            writer.write(UInt32(outputSize))
            writer.write(UInt8(code))
        }
        return writer.bytes
    }

    /// Writes atomically: a temporary file beside the target, then a rename.
    public static func save(spec: ModelSpec, parameters: [Float], to path: String) throws {
        try AtomicFile.write(encode(spec: spec, parameters: parameters), to: path)
    }

    public static func load(from path: String) throws -> (spec: ModelSpec, parameters: [Float]) {
        try decode(RegularFile.read(path), path: path)
    }
}

public struct ModelFileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Whole-file reads of files a user names (models, checkpoints, images): only regular
/// files, so a FIFO or a device (`--resume /dev/zero`) is an error instead of a hang or an
/// endless read, and no more than the size `fstat` gave.
public enum RegularFile {
    public static func read(_ path: String) throws -> [UInt8] {
        func fail(_ reason: String) -> ModelFileError { ModelFileError(path: path, reason: reason) }
        // O_NONBLOCK: opening a FIFO would otherwise wait for a writer.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { throw fail("cannot read the file: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw fail("cannot read the file: \(String(cString: strerror(errno)))") }
        guard status.st_mode & S_IFMT == S_IFREG else { throw fail("not a regular file") }
        let size = Int(status.st_size)
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { Foundation.read(descriptor, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw fail("cannot read the file: \(String(cString: strerror(errno)))") }
            if n == 0 { break }  // shrank while read: the decoder finds it short
            done += n
        }
        return Array(bytes[0..<done])
    }
}

/// Whole-file writes that never leave a half-written file behind: write a temporary file in
/// the same folder, fsync it, rename it over the target, fsync the folder.
///
/// The temporary file has one fixed name per target (`TARGET.tmp`), so a process killed
/// mid-write leaves at most one behind, which the next write replaces. It is always a new
/// file (unlinked, then created with `O_EXCL`), so it has `mode` from its first byte and no
/// reader can hold it open from before. One writer per target at a time (one run owns its
/// checkpoint); a second one fails instead of mixing bytes.
public enum AtomicFile {
    public static func temporaryPath(for path: String) -> String { path + ".tmp" }

    /// - Parameter mode: the file's permissions from its first byte (less the umask).
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t = 0o644) throws {
        let temporary = temporaryPath(for: path)
        unlink(temporary)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard descriptor >= 0 else { throw ModelFileError(path: path, reason: "cannot create \(temporary): \(errnoText())") }
        var written = 0
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            while written < raw.count {
                let n = Foundation.write(descriptor, raw.baseAddress! + written, raw.count - written)
                if n < 0 { if errno == EINTR { continue }; return false }
                written += n
            }
            return fsync(descriptor) == 0
        }
        let reason = errnoText()
        close(descriptor)
        guard ok else {
            unlink(temporary)
            throw ModelFileError(path: path, reason: "cannot write: \(reason)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw ModelFileError(path: path, reason: "cannot rename into place: \(reason)")
        }
        let folder = (path as NSString).deletingLastPathComponent
        let folderDescriptor = open(folder.isEmpty ? "." : folder, O_RDONLY | O_CLOEXEC)
        if folderDescriptor >= 0 { fsync(folderDescriptor); close(folderDescriptor) }
    }

    /// Removes the leftovers of earlier writers of `path` killed mid-write: the fixed
    /// temporary name and the `.tmp-PID` names older versions used.
    public static func removeStaleTemporaries(of path: String) {
        unlink(temporaryPath(for: path))
        let folder = (path as NSString).deletingLastPathComponent
        let prefix = (path as NSString).lastPathComponent + ".tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder.isEmpty ? "." : folder) else { return }
        for name in names where name.hasPrefix(prefix) && name.dropFirst(prefix.count).allSatisfy(\.isNumber) {
            unlink((folder as NSString).appendingPathComponent(name))
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
