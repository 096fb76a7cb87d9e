import Foundation

/// Saved models: a small binary format, little-endian throughout.
///
///     offset  size        field
///     0       4           magic "ZMQN"
///     4       2           format version (1)
///     6       2           layer count L
///     8       4           input size
///     12      8·L         per layer: output size (UInt32), activation (UInt32, `Activation` raw value)
///     …       8           parameter count P
///     …       4·P         parameters, Float32, in `ModelSpec`'s flat layout
///     …       32          SHA-256 of every byte before it
public enum ModelFile {
    public static let magic: [UInt8] = Array("ZMQN".utf8)
    public static let version: UInt16 = 1

    public static func encode(spec: ModelSpec, parameters: [Float]) -> [UInt8] {
        precondition(parameters.count == spec.parameterCount)
        var writer = ByteWriter(capacity: 64 + parameters.count * 4)
        writer.write(raw: magic)
        writer.write(version)
        writer.write(UInt16(spec.layers.count))
        writer.write(UInt32(spec.inputSize))
        for layer in spec.layers {
            writer.write(UInt32(layer.outputSize))
            writer.write(UInt32(layer.activation.rawValue))
        }
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
                guard fileVersion == version else {
                    throw ModelFileError(path: path, reason: "format version \(fileVersion) is not supported (expected \(version))")
                }
                let layerCount = Int(try reader.read(UInt16.self))
                let inputSize = Int(try reader.read(UInt32.self))
                var layers: [Dense] = []
                var width = inputSize
                for index in 0..<layerCount {
                    let outputSize = Int(try reader.read(UInt32.self))
                    let code = try reader.read(UInt32.self)
                    guard let activation = Activation(rawValue: UInt8(truncatingIfNeeded: code)), code < 256,
                          outputSize > 0, width > 0 else {
                        throw ModelFileError(path: path, reason: "layer \(index) has an invalid size or activation")
                    }
                    layers.append(Dense(inputSize: width, outputSize: outputSize, activation: activation))
                    width = outputSize
                }
                let spec = try ModelSpec(inputSize: inputSize, layers: layers)
                let count = Int(try reader.read(UInt64.self))
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

    /// Writes atomically: a temporary file beside the target, then a rename.
    public static func save(spec: ModelSpec, parameters: [Float], to path: String) throws {
        try AtomicFile.write(encode(spec: spec, parameters: parameters), to: path)
    }

    public static func load(from path: String) throws -> (spec: ModelSpec, parameters: [Float]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelFileError(path: path, reason: "cannot read the file")
        }
        return try decode([UInt8](data), path: path)
    }
}

public struct ModelFileError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// Whole-file writes that never leave a half-written file behind: write a temporary file in
/// the same folder, fsync it, rename it over the target, fsync the folder.
public enum AtomicFile {
    public static func write(_ bytes: [UInt8], to path: String) throws {
        let temporary = path + ".tmp-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else { throw ModelFileError(path: path, reason: "cannot create: \(errnoText())") }
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
        let folder = open((path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent, O_RDONLY)
        if folder >= 0 { fsync(folder); close(folder) }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}
