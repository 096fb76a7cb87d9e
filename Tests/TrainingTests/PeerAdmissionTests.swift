import Foundation
import NeuralNet
import Training
import Wire
import XCTest

/// Who may join a run, and what a peer that joined can do to it: the run secret, peers that
/// claim libzmq's next routing ids, and one peer that tries everything at once while real
/// workers train. Real processes over real sockets.
final class PeerAdmissionTests: XCTestCase {
    private static var dataFolder: String?
    private var data: String { Self.dataFolder! }

    override class func setUp() { dataFolder = try? makeSyntheticData() }
    override class func tearDown() {
        if let dataFolder { try? FileManager.default.removeItem(atPath: dataFolder) }
    }

    private func settings(steps: Int, seed: Int = 5) -> [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "60", "--epochs", "200", "--max-steps", "\(steps)",
         "--shards", "2", "--seed", "\(seed)", "--quiet", "--worker-timeout", "1"]
    }

    func testTheRunSecretAdmitsOnlyWorkersThatProveIt() throws {
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let secretPath = scratchFolder + "secret-\(UUID().uuidString.prefix(6))"
        let summaryPath = scratchFolder + "secret-summary-\(UUID().uuidString.prefix(6)).json"
        let coordinator = try Child("coordinator", settings(steps: 60) + [
            "--workers", "1", "--bind", endpoint, "--secret-file", secretPath, "--summary", summaryPath, "--log-level", "notice"])
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: secretPath) && Date() < deadline { usleep(10_000) }
        var status = stat()
        XCTAssertEqual(stat(secretPath, &status), 0, coordinator.errors)
        XCTAssertEqual(status.st_mode & 0o777, 0o600)
        XCTAssertEqual(status.st_uid, geteuid())

        // Another run's secret: refused, counted, and the worker says why in one line.
        let otherPath = scratchFolder + "other-secret-\(UUID().uuidString.prefix(6))"
        try RunSecret.generate().write(to: otherPath)
        let intruder = try Child("worker", ["--connect", endpoint, "--name", "intruder", "--secret-file", otherPath])
        XCTAssertEqual(intruder.wait(seconds: 30), 2, intruder.errors)
        XCTAssertTrue(intruder.errors.contains("does not match this run's secret"), intruder.errors)
        XCTAssertEqual(intruder.errors.split(separator: "\n").count, 1, intruder.errors)
        // No secret at all.
        let stranger = try Child("worker", ["--connect", endpoint, "--name", "stranger", "--secret-file", otherPath + "-missing"])
        XCTAssertEqual(stranger.wait(seconds: 30), 2, stranger.errors)
        XCTAssertTrue(stranger.errors.contains("cannot prove this run's secret"), stranger.errors)
        // A hello replayed from another run: a proof of the right secret for another nonce.
        let context = try ZMQContext()
        let replayer = try ZMQSocket(context: context, type: .dealer)
        try replayer.connect(endpoint)
        let secret = try RunSecret.read(from: secretPath)
        let replayed = Hello(pid: 7, name: "replayer", proof: secret.proof(nonce: Array(repeating: 1, count: 16), pid: 7, name: "replayer"))
        try replayer.send(replayed.encode())
        let answer = try XCTUnwrap(try replayer.receive(timeoutMilliseconds: 10_000), coordinator.errors)
        XCTAssertEqual(try Envelope(frames: answer[...]).type, .challenge)

        let worker = try Child("worker", ["--connect", endpoint, "--name", "member", "--secret-file", secretPath])
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors)
        let summary = readSummary(summaryPath)
        XCTAssertGreaterThanOrEqual(summary["rejected_messages"] as? Int ?? 0, 2, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("refused worker intruder (pid \(intruder.pid)): its hello does not prove this run's secret"),
                      coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("refused worker replayer (pid 7)"), coordinator.errors)
        XCTAssertFalse(coordinator.errors.contains("intruder (pid \(intruder.pid)) joined"), coordinator.errors)
        XCTAssertFalse(FileManager.default.fileExists(atPath: secretPath), "the secret file outlived its run")
    }

    /// Spawned workers get the secret through their environment, not their command line.
    func testSpawnedWorkersGetTheSecretOutsideTheirCommandLine() throws {
        let port = freePort()
        let coordinator = try Child("coordinator", settings(steps: 100_000).filter { $0 != "--quiet" } + [
            "--spawn-workers", "1", "--bind", "tcp://127.0.0.1:\(port)", "--log-level", "notice"])
        defer { kill(coordinator.pid, SIGTERM); coordinator.wait(seconds: 30) }
        XCTAssertTrue(coordinator.waitFor("joined", seconds: 30), coordinator.errors)
        let pid = try XCTUnwrap(workerPIDs(in: coordinator.errors).first, coordinator.errors)
        let secret = try RunSecret.read(from: try XCTUnwrap(RunSecret.defaultPath(forEndpoint: "tcp://127.0.0.1:\(port)")))
        let commandLine = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")), as: UTF8.self)
        XCTAssertFalse(commandLine.contains(secret.hex), commandLine)
        let environment = try String(decoding: Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")), as: UTF8.self)
        XCTAssertTrue(environment.contains("\(RunSecret.environmentVariable)=\(secret.hex)"))
    }

    /// libzmq numbers peers without a routing id of their own from rand(), which nobody
    /// seeded: 0x6b8b4567 first in every process. Peers that claimed those ids ahead made the
    /// next worker's join abort the coordinator inside libzmq.
    func testClaimingTheNextRoutingIDsCannotAbortTheCoordinator() throws {
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let summaryPath = scratchFolder + "ids-summary-\(UUID().uuidString.prefix(6)).json"
        let coordinator = try Child("coordinator", settings(steps: 40) + [
            "--workers", "2", "--bind", endpoint, "--summary", summaryPath])
        let context = try ZMQContext()
        let first: UInt32 = 0x6b8b4567  // rand() with the default seed
        let squatters = try (0..<8).map { offset -> ZMQSocket in
            let socket = try ZMQSocket(context: context, type: .dealer)
            try socket.setRoutingID([0] + withUnsafeBytes(of: (first &+ UInt32(offset)).bigEndian, Array.init))
            try socket.connect(endpoint)
            return socket
        }
        // Each one is known to the ROUTER once the coordinator answered it.
        for squatter in squatters {
            var answered = false
            let deadline = Date().addingTimeInterval(30)
            while !answered && Date() < deadline {
                try squatter.send(Heartbeat.encode(), dontWait: true)
                answered = try squatter.receive(timeoutMilliseconds: 200) != nil
            }
            XCTAssertTrue(answered, coordinator.errors)
        }
        let workers = try (0..<2).map { try Child("worker", ["--connect", endpoint, "--name", "w\($0)", "--connect-timeout", "20"]) }
        XCTAssertEqual(coordinator.wait(seconds: 120), 0, coordinator.errors)
        for worker in workers { XCTAssertEqual(worker.wait(seconds: 30), 0, worker.errors) }
        XCTAssertEqual(readSummary(summaryPath)["steps"] as? Int, 40, coordinator.errors)
    }
}
