import Foundation
import Wire
import XCTest

/// Zero-copy buffers are reused only once libzmq's I/O thread is done with them, which the
/// buffer tracks as an explicit count of frames in flight.
final class SharedBufferTests: XCTestCase {
    private func connectedPair(_ name: String) throws -> (ZMQContext, ZMQSocket, ZMQSocket) {
        let context = try ZMQContext()
        let sender = try ZMQSocket(context: context, type: .pair)
        let receiver = try ZMQSocket(context: context, type: .pair)
        try sender.bind("inproc://\(name)")
        try receiver.connect("inproc://\(name)")
        return (context, sender, receiver)
    }

    /// Polls `condition` every millisecond for up to `seconds`.
    private func eventually(seconds: Double = 2, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() && Date() < deadline { usleep(1000) }
        return condition()
    }

    func testABufferIsInFlightUntilTheReceiverConsumedItAndLibzmqFreedIt() throws {
        let (_, sender, receiver) = try connectedPair("in-flight")
        let buffer = SharedBuffer(byteCount: 4096)
        memset(buffer.pointer, 3, 4096)
        XCTAssertTrue(buffer.isFree, "a buffer never sent is free")
        try sender.send([.shared(buffer, offset: 0, count: 2048), .shared(buffer, offset: 2048, count: 2048)])
        // Over inproc the receiver's frames point into the buffer itself.
        XCTAssertTrue(buffer.isInFlight)
        var received = try XCTUnwrap(try receiver.receive(timeoutMilliseconds: 1000))
        XCTAssertEqual(received.map(\.count), [2048, 2048])
        usleep(20_000)
        XCTAssertTrue(buffer.isInFlight, "the received frames still point into the buffer")
        received.removeLast()
        usleep(20_000)
        XCTAssertTrue(buffer.isInFlight, "one received frame still points into the buffer")
        received[0].withUnsafeBytes { XCTAssertTrue($0.allSatisfy { $0 == 3 }) }
        received = []
        XCTAssertTrue(eventually { buffer.isFree }, "once libzmq freed both frames the buffer is free")
    }

    /// A send that fails frees its frame at once: the buffer is not left counted in flight.
    func testAFailedSendLeavesTheBufferFree() throws {
        let context = try ZMQContext()
        let lonely = try ZMQSocket(context: context, type: .dealer)
        try lonely.setImmediate(true)
        try lonely.connect("tcp://127.0.0.1:1")  // nobody there: nothing can be queued
        let buffer = SharedBuffer(byteCount: 64)
        XCTAssertFalse(try lonely.send([.shared(buffer, offset: 0, count: 64)], dontWait: true))
        XCTAssertTrue(buffer.isFree)
    }

    /// Whatever the pool hands out is never in flight, even when the only reference left to
    /// an earlier buffer is libzmq's.
    func testAPoolNeverHandsOutABufferInFlight() throws {
        let (_, sender, receiver) = try connectedPair("pool-in-flight")
        let pool = SharedBufferPool(byteCount: 256)
        var held: [[ZMQMessage]] = []
        var addresses: [UnsafeMutableRawPointer] = []
        for round in 0..<20 {
            let buffer = pool.take()
            XCTAssertTrue(buffer.isFree, "round \(round): the pool handed out a buffer in flight")
            XCTAssertFalse(addresses.contains(buffer.pointer), "round \(round): reused a buffer a received frame points into")
            memset(buffer.pointer, Int32(round), 256)
            try sender.send([.shared(buffer, offset: 0, count: 256)])
            held.append(try XCTUnwrap(try receiver.receive(timeoutMilliseconds: 1000)))
            addresses.append(buffer.pointer)
        }
        // Every frame kept its own bytes: no buffer was refilled under a message.
        for (round, frames) in held.enumerated() {
            frames[0].withUnsafeBytes { XCTAssertTrue($0.allSatisfy { $0 == UInt8(round) }, "round \(round)") }
        }
        held = []
        XCTAssertTrue(eventually { addresses.contains(pool.take().pointer) }, "freed buffers are handed out again")
    }
}
