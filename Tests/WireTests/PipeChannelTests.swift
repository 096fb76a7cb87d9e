#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NeuralNet
import Wire
import XCTest

/// The same-host pipes: messages arrive whole and in order, a closed writer is seen at once,
/// and bytes that break the framing are an error, never a crash or a trusted message.
final class PipeChannelTests: XCTestCase {
    /// The worker's side makes the pipe; the coordinator's side opens the other end.
    private func pair(coordinatorWrites: Bool) throws -> (worker: PipeChannel, coordinator: PipeChannel) {
        let worker = try PipeChannel(forWriting: !coordinatorWrites)
        XCTAssertTrue(PipeChannel.isValidPath(worker.path), worker.path)
        let coordinator = try PipeChannel(opening: worker.path, forWriting: coordinatorWrites)
        return (worker, coordinator)
    }

    func testMessagesArriveWholeAndInOrder() throws {
        let (worker, coordinator) = try pair(coordinatorWrites: true)
        XCTAssertFalse(FileManager.default.fileExists(atPath: worker.path), "the opener removes the name")
        let spec = try ModelSpec.mlp(inputSize: 4, hidden: [3], classes: 2)
        let task = TaskHeader(shard: 2, sampleCount: 7, featureCount: 4)
        XCTAssertTrue(try coordinator.send(WeightsMessage.encodeShared(step: 9, slot: 1, count: spec.parameterCount, precision: .fp16)))
        XCTAssertTrue(try coordinator.send(task.encodeShared(step: 10, slot: 0, offset: 35)))
        XCTAssertTrue(try coordinator.send(Notice(reason: "bye").encode(.shutdown)))
        let messages = try worker.receive().map { try Envelope(frames: $0[...]) }
        XCTAssertEqual(messages.map(\.type), [.weights, .task, .shutdown])
        XCTAssertEqual(try WeightsMessage.header(messages[0], expectedCount: spec.parameterCount).slot, 1)
        XCTAssertEqual(messages[0].step, 9)
        XCTAssertEqual(try TaskHeader.decode(messages[1], featureCount: 4).0, task)
        XCTAssertEqual(try Notice(messages[2]).reason, "bye")
        XCTAssertTrue(worker.receive().isEmpty, "nothing more")
        XCTAssertFalse(worker.isClosed)
    }

    /// What a worker polls while it waits for its weights: true once a message is in the
    /// pipe, false again once it was read, and true when the writer is gone.
    func testHasInputSaysWhetherAReadWouldFindSomething() throws {
        var (worker, coordinator): (PipeChannel, PipeChannel?) = try pair(coordinatorWrites: true)
        XCTAssertFalse(worker.hasInput)
        XCTAssertTrue(try coordinator!.send(Heartbeat.encode(step: 1)))
        XCTAssertTrue(worker.hasInput)
        XCTAssertEqual(worker.receive().count, 1)
        XCTAssertFalse(worker.hasInput)
        coordinator = nil
        XCTAssertTrue(worker.hasInput, "end of file is something to read")
        XCTAssertTrue(worker.receive().isEmpty)
        XCTAssertTrue(worker.isClosed)
    }

    func testLargeMessagesAreLeftToTheSocket() throws {
        let (_, coordinator) = try pair(coordinatorWrites: true)
        let big = SharedBuffer(byteCount: PipeChannel.maximumMessageBytes)
        XCTAssertFalse(try coordinator.send(TaskHeader(shard: 0, sampleCount: 1, featureCount: 1).encode(step: 1, samples: .shared(big, offset: 0, count: big.byteCount))))
    }

    /// The worker holds the only write end of its pipe to the coordinator: when it exits the
    /// coordinator reads end of file, after whatever was still in the pipe.
    func testAClosedWriterIsSeen() throws {
        var (worker, coordinator): (PipeChannel?, PipeChannel) = try pair(coordinatorWrites: false)
        XCTAssertTrue(try worker!.send(Heartbeat.encode(step: 3)))
        worker = nil
        let messages = coordinator.receive()
        XCTAssertEqual(messages.count, 1)
        XCTAssertTrue(coordinator.isClosed)

        // The other way: the worker's read end reports nothing until the coordinator opened
        // its write end, and end of file once the coordinator let go of it.
        let reader = try PipeChannel(forWriting: false)
        var pollItem = pollfd(fd: reader.descriptor, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&pollItem, 1, 0), 0, "no writer yet: nothing to report")
        var writer: PipeChannel? = try PipeChannel(opening: reader.path, forWriting: true)
        XCTAssertTrue(try writer!.send(Heartbeat.encode(step: 4)))
        writer = nil
        XCTAssertEqual(poll(&pollItem, 1, 0), 1)
        XCTAssertEqual(reader.receive().count, 1)
        XCTAssertTrue(reader.isClosed)
    }

    /// Bytes written by a broken or hostile peer: a length beyond a pipe message, frames that
    /// overrun their message. The messages before the break still arrive; nothing after it.
    func testBrokenFramingIsAFailureAfterTheGoodMessages() throws {
        func le(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        let heartbeat = le(4 + 24 + 4 + 0) + le(24) + Self.bytes(Heartbeat.encode(step: 1)[0]) + le(0)
        func received(_ bytes: [UInt8]) throws -> (count: Int, failure: String?) {
            let worker = try PipeChannel(forWriting: true)
            let writer = open(worker.path, O_WRONLY | O_NONBLOCK)
            XCTAssertGreaterThanOrEqual(writer, 0)
            let reader = try PipeChannel(opening: worker.path, forWriting: false)
            XCTAssertEqual(bytes.withUnsafeBytes { write(writer, $0.baseAddress!, $0.count) }, bytes.count)
            close(writer)
            defer { withExtendedLifetime(worker) {} }
            let messages = reader.receive()
            XCTAssertTrue(reader.receive().isEmpty, "nothing after a failure")
            return (messages.count, reader.failure.map { "\($0)" })
        }
        let tooLong = try received(heartbeat + le(1 << 20))
        XCTAssertEqual(tooLong.count, 1)
        XCTAssertTrue(tooLong.failure?.contains("more than a pipe message may hold") == true, "\(tooLong)")
        let overrun = try received(heartbeat + heartbeat + le(8) + le(100) + [1, 2, 3, 4])
        XCTAssertEqual(overrun.count, 2)
        XCTAssertTrue(overrun.failure?.contains("overruns") == true, "\(overrun)")
        let uneven = try received(le(6) + le(1) + [9, 0])
        XCTAssertEqual(uneven.count, 0)
        XCTAssertTrue(uneven.failure?.contains("do not add up") == true, "\(uneven)")
        // Half a message, and the writer still there: not a failure, just not complete yet.
        let half = try received(heartbeat + le(10) + [1, 2])
        XCTAssertEqual(half.count, 1)
        XCTAssertNil(half.failure)
    }

    private static func bytes(_ frame: OutgoingFrame) -> [UInt8] {
        if case let .bytes(bytes) = frame { return bytes }
        return []
    }

    func testOnlyOwnPipesOpen() throws {
        XCTAssertThrowsError(try PipeChannel(opening: "/etc/passwd", forWriting: false)) {
            XCTAssertTrue("\($0)".contains("not a name this program makes"), "\($0)")
        }
        // A plain file with a name of ours is not a pipe.
        let path = "/dev/shm/zmqt-\(getpid())-notapipe"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data([1])))
        defer { unlink(path) }
        XCTAssertThrowsError(try PipeChannel(opening: path, forWriting: false)) {
            XCTAssertTrue("\($0)".contains("not a pipe"), "\($0)")
        }
        XCTAssertThrowsError(try PipeChannel(opening: "/dev/shm/zmqt-\(getpid())-missing", forWriting: true)) {
            XCTAssertTrue("\($0)".contains("cannot open"), "\($0)")
        }
    }
}
