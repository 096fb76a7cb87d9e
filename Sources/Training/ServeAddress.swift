import Foundation
import Wire

/// `worker --serve auto[:PORT]`: serve a parameter range on this host's address without
/// naming it. The address is the one this host uses to reach the coordinator (the source the
/// kernel picks for the route there, what `ip route get` prints): the other hosts of a run
/// reach the coordinator's network, so they reach this address too; on one host (a
/// coordinator on loopback) it is 127.0.0.1. Launchers start every worker with the same
/// option this way, whatever host it lands on.
public enum ServeAddress {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The endpoint `--serve VALUE` binds: `auto` (a free port) and `auto:PORT` resolved
    /// against `coordinator` (tcp://HOST:PORT); anything else as given.
    public static func endpoint(for value: String, coordinator: String) throws -> String {
        guard value == "auto" || value.hasPrefix("auto:") else { return value }
        var port = "0"
        if value.hasPrefix("auto:") {
            port = String(value.dropFirst(5))
            guard let number = Int(port), (0...65535).contains(number) else {
                throw Failure(description: "--serve auto:PORT takes a port from 0 to 65535 (got '\(value)')")
            }
        }
        let address = try sourceAddress(towards: coordinator)
        return "tcp://\(address.contains(":") ? "[\(address)]" : address):\(port)"
    }

    /// Whether `value` is a form `--serve` accepts: auto, auto:PORT or tcp://HOST:PORT.
    public static func isValid(_ value: String) -> Bool {
        if value == "auto" { return true }
        if value.hasPrefix("auto:") { return Int(value.dropFirst(5)).map { (0...65535).contains($0) } ?? false }
        return value.hasPrefix("tcp://") && value.dropFirst(6).contains(":")
    }

    /// The local address of a UDP socket connected to the coordinator's host: connecting a
    /// datagram socket only picks the route and source address; nothing is sent.
    static func sourceAddress(towards coordinator: String) throws -> String {
        let (host, port) = try hostAndPort(of: coordinator)
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, port, &hints, &list)
        guard status == 0, let first = list else {
            throw failure(coordinator, "its host does not resolve (\(String(cString: gai_strerror(status))))")
        }
        defer { freeaddrinfo(list) }
        var reason = "no address"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let descriptor = socket(info.pointee.ai_family, Int32(SOCK_DGRAM.rawValue), 0)
            guard descriptor >= 0 else { reason = String(cString: strerror(errno)); continue }
            defer { close(descriptor) }
            guard connect(descriptor, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                reason = String(cString: strerror(errno))
                continue
            }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let named = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            guard named == 0 else { reason = String(cString: strerror(errno)); continue }
            if let text = numericHost(&storage, length: length) { return text }
        }
        throw failure(coordinator, "no route to it (\(reason))")
    }

    private static func numericHost(_ storage: inout sockaddr_storage, length: socklen_t) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let status = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST)
            }
        }
        guard status == 0 else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// HOST and PORT of tcp://HOST:PORT (HOST may be [IPv6]).
    static func hostAndPort(of endpoint: String) throws -> (String, String) {
        guard endpoint.hasPrefix("tcp://"), let colon = endpoint.lastIndex(of: ":"),
              colon > endpoint.index(endpoint.startIndex, offsetBy: 6) else {
            throw failure(endpoint, "it is not tcp://HOST:PORT")
        }
        var host = String(endpoint[endpoint.index(endpoint.startIndex, offsetBy: 6)..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let port = String(endpoint[endpoint.index(after: colon)...])
        guard !host.isEmpty, Int(port).map({ (1...65535).contains($0) }) ?? false else {
            throw failure(endpoint, "it is not tcp://HOST:PORT")
        }
        return (host, port)
    }

    private static func failure(_ coordinator: String, _ reason: String) -> Failure {
        Failure(description: "--serve auto: cannot tell which address of this host reaches the coordinator at \(escapedForLog(coordinator)): \(reason); give --serve tcp://ADDRESS:PORT")
    }
}
