@testable import Wire
import XCTest

/// The bulk copy takes another path where `memcpy` is slow; it must copy the same bytes on
/// both, at every offset between source and destination.
final class BulkCopyTests: XCTestCase {
    func testCopiesEveryByteAtEveryOffsetWithinAPage() {
        // Sizes around the piece size and a tail, and one as large as a model's weights.
        let sizes = [1, 31, 255, 256, 257, 1000, 4096 + 77]
        let source = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096, alignment: 4096)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: 3 * 4096 + 8192, alignment: 4096)
        defer { source.deallocate(); destination.deallocate() }
        for i in 0..<(3 * 4096) { source.storeBytes(of: UInt8(truncatingIfNeeded: i &* 131 &+ 7), toByteOffset: i, as: UInt8.self) }
        let from = source + 40
        var backward = 0
        for offset in 0..<4096 {
            let to = destination + offset
            if BulkCopy.copiesBackward(to: to, from: from) { backward += 1 }
            for size in sizes where offset + size <= 3 * 4096 + 8192 {
                memset(destination, 0xEE, 3 * 4096 + 8192)
                BulkCopy.copy(to: to, from: from, byteCount: size)
                XCTAssertEqual(memcmp(to, from, size), 0, "offset \(offset), \(size) bytes")
                // Nothing outside the destination was written.
                if offset > 0 { XCTAssertEqual(to.load(fromByteOffset: -1, as: UInt8.self), 0xEE, "offset \(offset), \(size) bytes") }
                XCTAssertEqual(to.load(fromByteOffset: size, as: UInt8.self), 0xEE, "offset \(offset), \(size) bytes")
            }
        }
        // Exactly the slow window takes the backward path: 63 of the 4096 offsets.
        XCTAssertEqual(backward, 63)
    }

    func testTheSlowWindowIsWhereTheDestinationLiesJustPastTheSource() {
        let base = UnsafeMutableRawPointer(bitPattern: 0x10_0000 + 48)!
        XCTAssertFalse(BulkCopy.copiesBackward(to: base, from: base))
        // The case that was slow: an array's values 48 bytes into a page, slot 0 at 64.
        XCTAssertTrue(BulkCopy.copiesBackward(to: base + 16, from: base))
        XCTAssertTrue(BulkCopy.copiesBackward(to: base + 4096 * 7 + 1, from: base))
        XCTAssertTrue(BulkCopy.copiesBackward(to: base - 4096 + 63, from: base))
        XCTAssertFalse(BulkCopy.copiesBackward(to: base + 64, from: base))
        XCTAssertFalse(BulkCopy.copiesBackward(to: base - 16, from: base))
    }

    func testFloatsRoundTripThroughTheWireEncodingOnTheBackwardPath() {
        let count = 101_770
        let storage = UnsafeMutableRawPointer.allocate(byteCount: count * 4 + 8192, alignment: 4096)
        let target = UnsafeMutableRawPointer.allocate(byteCount: count * 4 + 8192, alignment: 4096)
        defer { storage.deallocate(); target.deallocate() }
        let values = (storage + 48).bindMemory(to: Float.self, capacity: count)
        for i in 0..<count { values[i] = Float(i) * 0.5 - 7 }
        let slot = target + 64
        XCTAssertTrue(BulkCopy.copiesBackward(to: slot, from: values))
        WirePrecision.fp32.encode(values, count: count, into: slot)
        let decoded = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            XCTAssertTrue(WirePrecision.fp32.decode(slot, count: count, into: buffer.baseAddress!))
            initialized = count
        }
        XCTAssertEqual(decoded, Array(UnsafeBufferPointer(start: values, count: count)))
    }
}
