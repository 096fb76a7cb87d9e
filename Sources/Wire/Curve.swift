import CZeroMQ
import Foundation

/// CurveZMQ keys as Z85 text (40 characters for 32 bytes).
public enum CurveKeys {
    /// A new key pair. The corresponding C function is `zmq_curve_keypair`.
    public static func generate() throws -> (publicKey: String, secretKey: String) {
        var publicKey = [CChar](repeating: 0, count: 41)
        var secretKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicKey, &secretKey) == 0 else {
            throw ZMQError(operation: "zmq_curve_keypair (is libzmq built with CURVE?)", code: zmq_errno())
        }
        return (String(cString: publicKey), String(cString: secretKey))
    }

    /// The public key that belongs to a secret key (`zmq_curve_public`).
    public static func publicKey(forSecret secretKey: String) throws -> String {
        guard isValid(secretKey) else { throw CurveKeyError(reason: "a secret key is 40 Z85 characters") }
        var publicKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&publicKey, secretKey) == 0 else {
            throw ZMQError(operation: "zmq_curve_public", code: zmq_errno())
        }
        return String(cString: publicKey)
    }

    /// Z85 text of 32 raw key bytes (what a ZAP request carries).
    public static func z85(_ raw: [UInt8]) -> String {
        var text = [CChar](repeating: 0, count: raw.count * 5 / 4 + 1)
        _ = zmq_z85_encode(&text, raw, raw.count)
        return String(cString: text)
    }

    public static func isValid(_ key: String) -> Bool {
        let alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
        return key.count == 40 && key.allSatisfy(alphabet.contains)
    }

    /// Reads a key from a file written by `coordinator keygen` (the first line that is not a
    /// comment), or takes `pathOrKey` itself when it is a key.
    public static func load(_ pathOrKey: String) throws -> String {
        if isValid(pathOrKey) && !FileManager.default.fileExists(atPath: pathOrKey) { return pathOrKey }
        guard let text = try? String(contentsOfFile: pathOrKey, encoding: .utf8) else {
            throw CurveKeyError(reason: "\(pathOrKey): cannot read the key file")
        }
        let keys = keyLines(text)
        guard let key = keys.first, keys.count == 1 else {
            throw CurveKeyError(reason: "\(pathOrKey): expected one 40-character Z85 key, found \(keys.count)")
        }
        return key
    }

    /// Reads a secret key from a file written by `coordinator keygen`. Never the key itself:
    /// a command line is visible to every user of the host (`ps`, /proc/PID/cmdline).
    public static func loadSecret(fromFile path: String) throws -> String {
        if isValid(path) && !FileManager.default.fileExists(atPath: path) {
            throw CurveKeyError(reason: "a secret key is read from a file (see `coordinator keygen`), never taken from the command line, where `ps` shows it to every user")
        }
        return try load(path)
    }

    /// Public keys allowed to connect: a file of keys (one per line, `#` comments) or a
    /// folder of `*.pub` files.
    public static func loadAuthorized(_ path: String) throws -> Set<String> {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CurveKeyError(reason: "\(path): no such file or folder of authorised keys")
        }
        var keys: Set<String> = []
        let files = isDirectory.boolValue
            ? try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".pub") }.sorted()
                .map { (path as NSString).appendingPathComponent($0) }
            : [path]
        for file in files {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw CurveKeyError(reason: "\(file): cannot read")
            }
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
                guard isValid(trimmed) else {
                    throw CurveKeyError(reason: "\(file):\(number + 1): not a 40-character Z85 public key")
                }
                keys.insert(trimmed)
            }
        }
        guard !keys.isEmpty else { throw CurveKeyError(reason: "\(path): holds no public keys") }
        return keys
    }

    private static func keyLines(_ text: String) -> [String] {
        text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}

public struct CurveKeyError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

extension ZMQSocket {
    /// Makes this socket a CURVE server with `secretKey`; clients are checked by the ZAP
    /// handler of `domain` (without one, libzmq would accept any client key).
    public func makeCurveServer(secretKey: String, zapDomain: String) throws {
        try setOption(ZMQ_CURVE_SERVER, Int32(1), name: "ZMQ_CURVE_SERVER")
        try setOption(string: secretKey, for: ZMQ_CURVE_SECRETKEY, name: "ZMQ_CURVE_SECRETKEY")
        try setOption(string: zapDomain, for: ZMQ_ZAP_DOMAIN, name: "ZMQ_ZAP_DOMAIN")
    }

    /// Makes this socket a CURVE client of the server with `serverKey`.
    public func makeCurveClient(serverKey: String, publicKey: String, secretKey: String) throws {
        try setOption(string: serverKey, for: ZMQ_CURVE_SERVERKEY, name: "ZMQ_CURVE_SERVERKEY")
        try setOption(string: publicKey, for: ZMQ_CURVE_PUBLICKEY, name: "ZMQ_CURVE_PUBLICKEY")
        try setOption(string: secretKey, for: ZMQ_CURVE_SECRETKEY, name: "ZMQ_CURVE_SECRETKEY")
    }
}

/// A ZAP handler that admits CURVE clients whose public key is in the allow-list and refuses
/// everyone else.
public final class ZAPAuthenticator: @unchecked Sendable {
    private let handler: ZAPHandler

    /// - Parameter onRefusal: called with the peer's address and key for every refused client.
    public init(context: ZMQContext, allowedKeys: Set<String>, onRefusal: @escaping @Sendable (String, String) -> Void) throws {
        handler = try ZAPHandler(context: context, name: "zap") { request in
            guard request.mechanism == "CURVE", let key = request.credentials.first, key.count == 32 else {
                onRefusal(request.address, "(\(request.mechanism), no CURVE key)")
                return "not authorised"
            }
            let text = CurveKeys.z85(key)
            guard allowedKeys.contains(text) else {
                onRefusal(request.address, text)
                return "not authorised"
            }
            return nil
        }
    }

    /// Stops the thread; call before the context goes away.
    public func stop() { handler.stop() }
}
