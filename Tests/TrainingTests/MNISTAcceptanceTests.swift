import Foundation
import XCTest

/// The product's promise on the real data set: `coordinator --spawn-workers 2` with default
/// settings reaches at least 97.8% test accuracy on MNIST within 10 epochs, and a seed
/// gives the same weights twice. Needs `scripts/fetch-mnist.sh` (the test command runs it).
final class MNISTAcceptanceTests: XCTestCase {
    private func mnistFolder() throws -> String {
        let folder = ProcessInfo.processInfo.environment["MNIST_DIR"]
            ?? URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("data").path
        guard FileManager.default.fileExists(atPath: folder + "/mnist_train.csv") else {
            throw XCTSkip("no MNIST in \(folder): run scripts/fetch-mnist.sh")
        }
        return folder
    }

    func testTwoWorkersReachTheTargetAccuracyReproducibly() throws {
        let data = try mnistFolder()
        let first = try runCoordinator(["--data", data, "--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*", "--quiet"],
                                       seconds: 600)
        XCTAssertEqual(first.status, 0, first.errors)
        let accuracy = first.summary["test_accuracy"] as? Double ?? 0
        XCTAssertGreaterThanOrEqual(accuracy, 0.978, "test accuracy \(accuracy)")
        XCTAssertEqual(first.summary["epochs"] as? Int, 10)
        // The same seed again, in one process with the same two shards: the same weights.
        let again = try runCoordinator(["--data", data, "--local", "--shards", "2", "--quiet"], seconds: 600)
        XCTAssertEqual(again.status, 0, again.errors)
        XCTAssertEqual(again.sha, first.sha)
    }
}
