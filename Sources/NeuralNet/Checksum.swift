import Crypto

/// SHA-256 helpers: model files and checkpoints carry one, and runs are compared by the
/// digest of their final flat parameter buffer (`weights_sha256`).
public enum Checksum {
    public static func sha256(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Array(SHA256.hash(data: bytes))
    }

    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { sha256($0) }
    }

    /// The digest of `parts` one after another, without joining them first.
    public static func sha256(concatenating parts: [[UInt8]]) -> [UInt8] {
        var hasher = SHA256()
        for part in parts { part.withUnsafeBytes { hasher.update(bufferPointer: $0) } }
        return Array(hasher.finalize())
    }

    /// Hex digest of the parameters' little-endian bytes.
    public static func sha256Hex(of floats: [Float]) -> String {
        floats.withUnsafeBytes { hex(sha256($0)) }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { byte in
            let digits = Array("0123456789abcdef")
            return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
        }.joined()
    }
}
