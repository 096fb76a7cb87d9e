import NeuralNet
import Wire
import XCTest
@testable import Training

/// The links alone, without a coordinator: a ROUTER and a DEALER over inproc:// stand for the
/// socket, and segments of this process for a worker's. This is how a per-host aggregator
/// would feed its own workers.
final class WorkerLinkTests: XCTestCase {
    private var context: ZMQContext!
    private var router: ZMQSocket!
    private var dealer: ZMQSocket!
    private let identity = Array("worker-a".utf8)

    override func setUpWithError() throws {
        context = try ZMQContext()
        router = try ZMQSocket(context: context, type: .router)
        try router.setRouterMandatory(true)
        let endpoint = "inproc://links-\(UUID().uuidString)"
        try router.bind(endpoint)
        dealer = try ZMQSocket(context: context, type: .dealer)
        try dealer.setRoutingID(identity)
        try dealer.connect(endpoint)
    }

    override func tearDown() {
        dealer = nil
        router = nil
        context = nil
    }

    private func receivedByWorker() throws -> Envelope {
        let frames = try XCTUnwrap(try dealer.receive(timeoutMilliseconds: 1000))
        return try Envelope(frames: frames[...])
    }

    private func stepWeights(step: Int, _ values: [Float]) -> StepWeights {
        StepWeights(step: step, count: values.count, precision: .fp32, pool: SharedBufferPool(byteCount: values.count * 4)) {
            destination in values.withUnsafeBufferPointer { WirePrecision.fp32.encode($0.baseAddress!, count: $0.count, into: destination) }
        }
    }

    func testAnAttachIsCheckedByTheLinkAlone() throws {
        let fallback = SocketLink(identity: identity, socket: router)
        let feed = try SharedStepFeed(weightBytes: 16, batchSlotBytes: 0)
        let offered = try SharedSegment(slotCount: 2, slotBytes: 16)
        func refusal(_ attach: AttachMessage, feed: SharedStepFeed?, bytes: Int = 16) -> String {
            do {
                _ = try SameHostLink.admit(attach, feed: feed, gradientBytes: bytes, fallback: fallback)
                return "admitted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(refusal(AttachMessage(segment: offered.info), feed: nil).contains("shared memory is off"))
        XCTAssertTrue(refusal(AttachMessage(segment: offered.info), feed: feed, bytes: 32).contains("at most 8 of 32"))
        XCTAssertTrue(refusal(AttachMessage(segment: feed.weightsInfo), feed: feed).contains("own segment"))
        let (link, pipeFailure) = try SameHostLink.admit(AttachMessage(segment: offered.info), feed: feed, gradientBytes: 16, fallback: fallback)
        XCTAssertNil(pipeFailure)
        XCTAssertFalse(link.hasPipes)
        XCTAssertTrue(link.computesOnThisHost)
        XCTAssertFalse(fallback.computesOnThisHost)
    }

    /// On this host the weights are written once into the feed's slot of the step's parity
    /// and the message names the slot; through the socket they travel in the message.
    func testWeightsGoThroughTheFeedOnThisHostAndInTheMessageOtherwise() throws {
        let values: [Float] = [1, -2, 3.5, 4]
        let fallback = SocketLink(identity: identity, socket: router)
        let feed = try SharedStepFeed(weightBytes: 16, batchSlotBytes: 0)
        let offered = try SharedSegment(slotCount: 2, slotBytes: 16)
        let (link, _) = try SameHostLink.admit(AttachMessage(segment: offered.info), feed: feed, gradientBytes: 16, fallback: fallback)
        let weights = stepWeights(step: 3, values)
        XCTAssertNotNil(try link.sendWeights(weights))
        XCTAssertEqual(try WeightsMessage.header(try receivedByWorker(), expectedCount: 4).slot, 1)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: feed.weights.slot(1).assumingMemoryBound(to: Float.self), count: 4)), values)

        XCTAssertNotNil(try fallback.sendWeights(weights))
        var decoded = [Float](repeating: 0, count: 4)
        var scratch: [UInt8] = []
        XCTAssertNil(try WeightsMessage.decode(try receivedByWorker(), expectedCount: 4, into: &decoded, scratch: &scratch))
        XCTAssertEqual(decoded, values)
    }

    /// A gradient in a sealed segment is read where it lies; one with a loss that is not
    /// finite is copied (for the recompute check); the socket link refuses a slot it has no
    /// segment for.
    func testGradientsArriveWhereTheLinkSays() throws {
        let values: [Float] = [0.5, 1.5, -2, 8]
        let fallback = SocketLink(identity: identity, socket: router)
        let feed = try SharedStepFeed(weightBytes: 16, batchSlotBytes: 0)
        let offered = try SharedSegment(slotCount: 2, slotBytes: 16, sealed: true)
        values.withUnsafeBufferPointer { WirePrecision.fp32.encode($0.baseAddress!, count: 4, into: offered.slot(1)) }
        let (link, _) = try SameHostLink.admit(AttachMessage(segment: offered.info), feed: feed, gradientBytes: 16, fallback: fallback)
        var header = ResultHeader(shard: 0, sampleCount: 1, lossSum: 1, correctCount: 0, parameterCount: 4,
                                  computeMicroseconds: 1, sharedSlot: 1)
        var destination = [Float](repeating: 0, count: 4)
        var scratch: [UInt8] = []
        guard case let .inPlace(inPlace, _) = link.receiveGradient(header, frame: nil, count: 4, into: &destination, scratch: &scratch) else {
            return XCTFail("a sealed fp32 segment is read in place")
        }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: inPlace, count: 4)), values)

        header.lossSum = .nan
        guard case .copied(finite: true) = link.receiveGradient(header, frame: nil, count: 4, into: &destination, scratch: &scratch) else {
            return XCTFail("a non-finite loss takes the copy")
        }
        XCTAssertEqual(destination, values)

        guard case let .refused(reason) = fallback.receiveGradient(header, frame: nil, count: 4, into: &destination, scratch: &scratch) else {
            return XCTFail("no segment, no slot")
        }
        XCTAssertTrue(reason.contains("attached no segment"), reason)
    }
}
