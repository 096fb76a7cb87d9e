import Foundation

/// Names of what this program makes on a host for its peers there — shared-memory segments
/// and pipes: `zmqt-PID-` then random bytes in hex. The creator's pid lets a later process
/// tell leftovers of a dead one (`SharedSegment.removeStale`); a name a peer asks us to open
/// must look like one we make.
enum LocalName {
    static let prefix = "zmqt-"

    /// A fresh name for this process, from `random` bytes.
    static func make(random: some Sequence<UInt8>) -> String {
        "\(prefix)\(getpid())-" + random.map { String($0, radix: 16) }.joined()
    }

    /// Whether what follows the prefix is plain, as `make` writes it (digits, lowercase
    /// letters, dashes): nothing that could lead elsewhere in the file system.
    static func isPlain(_ suffix: Substring.UTF8View) -> Bool {
        suffix.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7A) || $0 == 0x2D }
    }
}
