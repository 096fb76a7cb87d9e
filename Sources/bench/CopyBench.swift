import Foundation
import Training
import Wire

/// How long copying a model's weights takes where `memcpy` is slow and where it is not,
/// and with `BulkCopy`: the coordinator copies its parameters (a Swift array, 48 bytes into
/// a page) into shared slot 0 (64 bytes into a page) every other step.
enum CopyBench {
    struct Figures: Codable {
        var bytes: Int
        /// Destination 16 bytes past the source modulo 4 KiB (where slot 0 lies).
        var memcpyAtSlotOffsetMicroseconds: Double
        /// Destination half a page away from that.
        var memcpyElsewhereMicroseconds: Double
        var bulkCopyAtSlotOffsetMicroseconds: Double
    }

    static func measure(floats: Int) -> Figures {
        let bytes = floats * MemoryLayout<Float>.stride
        let source = UnsafeMutableRawPointer.allocate(byteCount: bytes + 4096, alignment: 4096)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: bytes + 8192, alignment: 4096)
        defer { source.deallocate(); destination.deallocate() }
        memset(source, 1, bytes + 4096)
        memset(destination, 2, bytes + 8192)
        let from = source + 48
        return Figures(
            bytes: bytes,
            memcpyAtSlotOffsetMicroseconds: median { memcpy(destination + 64, from, bytes) },
            memcpyElsewhereMicroseconds: median { memcpy(destination + 64 + 2048, from, bytes) },
            bulkCopyAtSlotOffsetMicroseconds: median { BulkCopy.copy(to: destination + 64, from: from, byteCount: bytes) })
    }

    /// The median of 201 timed calls, in microseconds.
    private static func median(_ body: () -> Void) -> Double {
        body()
        let times = (0..<201).map { _ in
            let start = MonotonicClock.now
            body()
            return (MonotonicClock.now - start) * 1e6
        }.sorted()
        return times[times.count / 2]
    }
}
