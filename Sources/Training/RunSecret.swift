import Crypto
import Foundation
import NeuralNet
import Wire

/// The per-run secret that admits a worker to a run: 32 random bytes made when the
/// coordinator starts. A worker proves it holds them in its hello (`proof`), for a nonce the
/// coordinator chose at its start, so a hello recorded in another run (or before a restart)
/// proves nothing now.
///
/// Spawned workers get it in their environment (`environmentVariable`, never the command
/// line, which every user can read in `ps`); hand-started ones and launchers read it from a
/// file the coordinator writes with mode 0600 from the first byte (`write(to:)`): by default
/// `defaultPath(forEndpoint:)`, which a worker on the same host finds by itself.
public struct RunSecret: Equatable, Sendable {
    public static let byteCount = 32
    /// Where a spawned worker finds the secret, in hex.
    public static let environmentVariable = "ZMQ_TRAINER_RUN_SECRET"
    private static let proofLabel = Array("zmq-trainer hello v1".utf8)

    public let bytes: [UInt8]

    /// A fresh secret from the system's cryptographic generator.
    public static func generate() -> RunSecret {
        RunSecret(validated: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    private init(validated bytes: [UInt8]) { self.bytes = bytes }

    /// From 64 hexadecimal digits (surrounding white space is ignored).
    public init(hex text: String) throws {
        let digits = Array(text.trimmingCharacters(in: .whitespacesAndNewlines).utf8)
        guard digits.count == 2 * Self.byteCount else { throw RunSecretError.malformed }
        var bytes: [UInt8] = []
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = Self.hexValue(digits[index]), let low = Self.hexValue(digits[index + 1]) else {
                throw RunSecretError.malformed
            }
            bytes.append(high << 4 | low)
        }
        self.bytes = bytes
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case 0x30...0x39: digit - 0x30
        case 0x61...0x66: digit - 0x61 + 10
        case 0x41...0x46: digit - 0x41 + 10
        default: nil
        }
    }

    public var hex: String { bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined() }

    /// HMAC-SHA256 over a label, the coordinator's nonce, the worker's pid and its name.
    public func proof(nonce: [UInt8], pid: UInt32, name: String) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: Self.message(nonce: nonce, pid: pid, name: name),
                                              using: SymmetricKey(data: bytes)))
    }

    /// Whether `proof` is this secret's for these fields (compared in constant time).
    public func verifies(_ proof: [UInt8], nonce: [UInt8], pid: UInt32, name: String) -> Bool {
        HMAC<SHA256>.isValidAuthenticationCode(proof, authenticating: Self.message(nonce: nonce, pid: pid, name: name),
                                               using: SymmetricKey(data: bytes))
    }

    private static func message(nonce: [UInt8], pid: UInt32, name: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.write(raw: proofLabel)
        writer.write(raw: nonce)
        writer.write(pid)
        writer.write(string: name)
        return writer.bytes
    }
}

public enum RunSecretError: Error, CustomStringConvertible {
    case malformed
    case unsafe(path: String, reason: String)
    case io(path: String, reason: String)

    public var description: String {
        switch self {
        case .malformed: "a run secret is 64 hexadecimal digits"
        case let .unsafe(path, reason): "run secret \(path): \(reason)"
        case let .io(path, reason): "run secret \(path): \(reason)"
        }
    }
}
