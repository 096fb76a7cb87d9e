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

    /// A sealed segment (a memfd whose size is fixed) opens by its /proc path; its reader
    /// may map it, since nobody can shrink it, and reads values through the mapping.
    func testSealedSegmentCannotShrinkAndIsReadThroughAMapping() throws {
        let owner = try SharedSegment(slotCount: 2, slotBytes: 16, sealed: true)
        XCTAssertTrue(owner.cannotShrink)
        XCTAssertTrue(owner.info.name.hasPrefix("/proc/\(getpid())/fd/"), owner.info.name)
        XCTAssertTrue(SharedSegmentInfo.isValidName(owner.info.name))
        let values: [Float] = [1, -2, 3.5, 4]
        values.withUnsafeBytes { owner.slot(1).copyMemory(from: $0.baseAddress!, byteCount: 16) }
        let reader = try SharedSegment(opening: owner.info)
        XCTAssertTrue(reader.cannotShrink)
        try reader.mapInAdvance()
        XCTAssertEqual(Array(UnsafeBufferPointer(start: try reader.mapped(slot: 1, offset: 0, byteCount: 16).assumingMemoryBound(to: Float.self), count: 4)), values)
        var decoded = [Float](repeating: 0, count: 4)
        var scratch: [UInt8] = []
        XCTAssertTrue(try decoded.withUnsafeMutableBufferPointer {
            try reader.readValues(slot: 1, count: 4, precision: .fp32, into: $0.baseAddress!, scratch: &scratch)
        })
        XCTAssertEqual(decoded, values)
        // Not even its creator can change its size.
        let path = owner.info.name
        let descriptor = open(path, O_RDWR)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        XCTAssertNotEqual(ftruncate(descriptor, 8), 0)
        close(descriptor)
        // A named segment can shrink, so its reader copies instead of mapping.
        let named = try SharedSegment(slotCount: 1, slotBytes: 8)
        XCTAssertFalse(try SharedSegment(opening: named.info).cannotShrink)
    }

    func testOnlyPlainDescriptorPathsAreNames() {
        for name in ["/proc/123/fd/4", "/proc/1/fd/0"] { XCTAssertTrue(SharedSegmentInfo.isValidName(name), name) }
        for name in ["/proc/self/fd/3", "/proc/1/fd/../../etc/passwd", "/proc//fd/1", "/proc/1/fd/", "/proc/1/fd/3/x",
                     "proc/1/fd/3", "/proc/1/cwd/3", "/proc/12345678901/fd/1"] {
            XCTAssertFalse(SharedSegmentInfo.isValidName(name), name)
        }
    }

    func testReleasingTheOwnerRemovesTheName() throws {
        var owner: SharedSegment? = try SharedSegment(slotCount: 1, slotBytes: 8)
        let info = owner!.info
        owner = nil
        XCTAssertThrowsError(try SharedSegment(opening: info))
    }
}

/// A peer names something in /dev/shm that is not a segment of ours, or someone else's.
final class SharedSegmentAdmissionTests: XCTestCase {
    /// A FIFO under a segment name once blocked the coordinator in open() for good.
    func testAFIFOIsRefusedWithoutBlocking() throws {
        let name = "/zmqt-\(getpid())-fifo\(UInt16.random(in: 0...9999))"
        XCTAssertEqual(mkfifo("/dev/shm" + name, 0o600), 0, String(cString: strerror(errno)))
        defer { unlink("/dev/shm" + name) }
        let info = SharedSegmentInfo(name: name, nonce: Array(repeating: 0, count: 16), slotCount: 1, slotBytes: 64)
        let start = Date()
        XCTAssertThrowsError(try SharedSegment(opening: info)) { error in
            XCTAssertTrue("\(error)".contains("not shared memory of this user"), "\(error)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
    }

    /// Only the creator removes a segment's name: a reader (the coordinator, given its own
    /// weights segment back in an attach) leaves it for the workers that still need it.
    func testOnlyTheOwnerUnlinks() throws {
        let owner = try SharedSegment(slotCount: 2, slotBytes: 64)
        let reader = try SharedSegment(opening: owner.info)
        reader.unlinkName()
        XCTAssertNoThrow(try SharedSegment(opening: owner.info), "a reader removed the owner's segment")
        owner.unlinkName()
        XCTAssertThrowsError(try SharedSegment(opening: owner.info))
    }
}
