#if canImport(Glibc)
import Glibc
#endif
import NeuralNet
import Wire
import XCTest

/// The shared-memory path for workers on the coordinator's host: only the segment that was
/// announced opens, and a reader never crashes on a segment that changes under it.
final class SharedSegmentTests: XCTestCase {
    func testValuesRoundTripInEveryPrecision() throws {
        let values: [Float] = [0, 1.5, -2.25, 1e-3, 65504]
        for precision in WirePrecision.allCases {
            let owner = try SharedSegment(slotCount: 2, slotBytes: values.count * 4)
            values.withUnsafeBufferPointer { precision.encode($0.baseAddress!, count: values.count, into: owner.slot(1)) }
            let reader = try SharedSegment(opening: owner.info)
            var decoded = [Float](repeating: 0, count: values.count)
            var scratch: [UInt8] = []
            let finite = try decoded.withUnsafeMutableBufferPointer {
                try reader.readValues(slot: 1, count: values.count, precision: precision, into: $0.baseAddress!, scratch: &scratch)
            }
            XCTAssertTrue(finite)
            var expected = values
            expected.withUnsafeMutableBufferPointer { precision.round($0.baseAddress!, count: values.count) }
            XCTAssertEqual(decoded, expected, "\(precision)")
        }
    }

    func testOnlyTheAnnouncedSegmentOpens() throws {
        let owner = try SharedSegment(slotCount: 4, slotBytes: 64)
        XCTAssertTrue(SharedSegmentInfo.isValidName(owner.info.name))
        var wrongNonce = owner.info
        wrongNonce.nonce[0] ^= 1
        var wrongLayout = owner.info
        wrongLayout.slotBytes = 128
        var missing = owner.info
        missing.name = "/zmqt-0-gone"
        var foreign = owner.info
        foreign.name = "/../dev/zero"
        for (info, reason) in [(wrongNonce, "does not match"), (wrongLayout, "does not match"),
                               (missing, "cannot open"), (foreign, "not a name this program makes")] {
            XCTAssertThrowsError(try SharedSegment(opening: info)) { XCTAssertTrue("\($0)".contains(reason), "\($0)") }
        }
        XCTAssertNoThrow(try SharedSegment(opening: owner.info))
    }

    /// A segment cut short after it was opened: a short read and an error, not SIGBUS.
    func testShrunkSegmentGivesAnError() throws {
        let owner = try SharedSegment(slotCount: 2, slotBytes: 4096)
        let reader = try SharedSegment(opening: owner.info)
        let descriptor = shm_open(owner.info.name, O_RDWR, 0)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        XCTAssertEqual(ftruncate(descriptor, 100), 0)
        close(descriptor)
        var buffer = [UInt8](repeating: 0, count: 4096)
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try reader.read(slot: 1, byteCount: 4096, into: $0.baseAddress!) }) {
            XCTAssertTrue("\($0)".contains("shrank"), "\($0)")
        }
        XCTAssertThrowsError(try buffer.withUnsafeMutableBytes { try reader.read(slot: 5, byteCount: 16, into: $0.baseAddress!) })
    }

    /// Slot and offset come from messages: out of range is an error, never a crash.
    func testMappedRangesAreChecked() throws {
        let owner = try SharedSegment(slotCount: 2, slotBytes: 100)
        owner.slot(1).storeBytes(of: 0xAB, toByteOffset: 40, as: UInt8.self)
        let reader = try SharedSegment(opening: owner.info)
        XCTAssertEqual(try reader.mapped(slot: 1, offset: 40, byteCount: 60).load(as: UInt8.self), 0xAB)
        for (slot, offset, count) in [(2, 0, 1), (-1, 0, 1), (0, 50, 51), (1, -1, 2), (0xFE, 0, 0)] {
            XCTAssertThrowsError(try reader.mapped(slot: slot, offset: offset, byteCount: count)) {
                XCTAssertTrue("\($0)".contains("outside"), "\($0)")
            }
        }
        XCTAssertThrowsError(try reader.mappedSlot(7))
    }

    func testReleasingTheOwnerRemovesTheName() throws {
        var owner: SharedSegment? = try SharedSegment(slotCount: 1, slotBytes: 8)
        let info = owner!.info
        owner = nil
        XCTAssertThrowsError(try SharedSegment(opening: info))
    }
}
