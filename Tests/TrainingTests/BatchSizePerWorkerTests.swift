import Foundation
import XCTest

/// `coordinator --batch-size-per-worker B` (weak scaling): the global batch is B times the
/// workers the run is started for. Real coordinator and worker processes on loopback.
final class BatchSizePerWorkerTests: SyntheticDataTestCase {
    private var common: [String] {
        ["--data", data, "--hidden", "32", "--max-steps", "20", "--epochs", "50", "--quiet", "--seed", "7"]
    }

    /// Two spawned workers at 30 per worker train on batches of 60: the same weights, bit for
    /// bit, as `--local --batch-size 60` cut into the same two shards.
    func testTheBatchIsThePerWorkerSizeTimesTheWorkers() throws {
        let local = try runCoordinator(common + ["--local", "--batch-size", "60", "--shards", "2"])
        XCTAssertEqual(local.status, 0, local.errors)
        let weak = try runCoordinator(common + ["--spawn-workers", "2", "--batch-size-per-worker", "30",
                                                "--bind", "tcp://127.0.0.1:*"])
        XCTAssertEqual(weak.status, 0, weak.errors)
        XCTAssertEqual(weak.summary["batch_size"] as? Int, 60)
        XCTAssertEqual(weak.summary["shards"] as? Int, 2)
        XCTAssertEqual(weak.summary["steps"] as? Int, 20)
        XCTAssertEqual(weak.sha, local.sha, weak.errors)
        XCTAssertNotEqual(weak.sha, "")

        let one = try runCoordinator(common + ["--local", "--batch-size-per-worker", "30"])
        XCTAssertEqual(one.status, 0, one.errors)
        XCTAssertEqual(one.summary["batch_size"] as? Int, 30, "--local counts one worker")
    }

    /// Both batch options at once, a size below one and a product that overflows are refused
    /// before anything starts, each with the reason.
    func testConflictingOrImpossibleSizesAreRefused() throws {
        let cases: [([String], String)] = [
            (["--local", "--batch-size", "60", "--batch-size-per-worker", "30"], "--batch-size and --batch-size-per-worker"),
            (["--local", "--batch-size-per-worker", "0"], "--batch-size-per-worker must be positive"),
            (["--workers", "2", "--batch-size-per-worker", "\(Int.max / 2 + 1)"], "is too large"),
            (["--workers", "2", "--batch-size-per-worker", "10", "--shards", "21"], "--shards must be between 1 and the batch size (20)"),
        ]
        for (arguments, reason) in cases {
            let run = try runCoordinator(common + arguments, seconds: 30)
            XCTAssertNotEqual(run.status, 0, "\(arguments) was accepted")
            XCTAssertTrue(run.errors.contains(reason), "\(arguments): \(run.errors)")
            XCTAssertTrue(run.summary.isEmpty, "\(arguments) trained")
        }
    }
}
