import Foundation
import Wire
import XCTest

/// CURVE with a ZAP allow-list, with real processes: only authorised workers join.
final class SecurityTests: XCTestCase {
    private var folder: String!
    private var data: String!

    override func setUpWithError() throws {
        folder = scratchFolder + "keys-\(getpid())-\(UUID().uuidString.prefix(6))"
        data = try makeSyntheticData(trainCount: 300, testCount: 50)
        for (name, sub) in [("coordinator", ""), ("allowed", "/authorised"), ("stranger", "/elsewhere")] {
            let keygen = try Child("coordinator", ["keygen", "--name", name, "--output", folder + sub])
            XCTAssertEqual(keygen.wait(seconds: 30), 0, keygen.errors)
        }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
        try? FileManager.default.removeItem(atPath: data)
    }

    func testOnlyAuthorisedWorkersJoinAndReceiveData() throws {
        let endpoint = "tcp://127.0.0.1:\(freePort())"
        let coordinator = try Child("coordinator", [
            "--data", data, "--hidden", "16", "--batch-size", "50", "--max-steps", "30", "--quiet",
            "--workers", "1", "--bind", endpoint, "--log-level", "notice",
            "--curve-secret-key", folder + "/coordinator.key", "--authorized-keys", folder + "/authorised"])
        let serverKey = ["--curve-server-key", folder + "/coordinator.pub"]
        let stranger = try Child("worker", ["--connect", endpoint, "--connect-timeout", "3", "--log-level", "info"]
                                    + serverKey + ["--curve-secret-key", folder + "/elsewhere/stranger.key"])
        let plain = try Child("worker", ["--connect", endpoint, "--connect-timeout", "3", "--log-level", "info"])
        for worker in [stranger, plain] {
            XCTAssertEqual(worker.wait(seconds: 30), 2, worker.errors)
            XCTAssertTrue(worker.errors.contains("no coordinator answered"), worker.errors)
            XCTAssertFalse(worker.errors.contains("joined as worker"), "an unauthorised worker got a welcome")
        }
        XCTAssertTrue(coordinator.errors.contains("is not authorised"), coordinator.errors)

        let allowed = try Child("worker", ["--connect", endpoint] + serverKey
                                   + ["--curve-secret-key", folder + "/authorised/allowed.key"])
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(allowed.wait(seconds: 30), 0, allowed.errors)
    }

    func testSpawnedWorkersGetKeysOfTheirOwn() throws {
        let run = try runCoordinator([
            "--data", data, "--hidden", "16", "--batch-size", "50", "--max-steps", "30", "--quiet",
            "--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*",
            "--curve-secret-key", folder + "/coordinator.key", "--authorized-keys", folder + "/authorised/allowed.pub"])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.summary["steps"] as? Int, 30)
    }

    /// A Z85 key may begin with '-' (one in 85 does): the spawned workers still take the
    /// coordinator's public key as the option's value, not as another option.
    func testACoordinatorKeyThatStartsWithADashReachesSpawnedWorkers() throws {
        var pair = try CurveKeys.generate()
        while !pair.publicKey.hasPrefix("-") { pair = try CurveKeys.generate() }
        let keyFile = folder + "/dash.key"
        XCTAssertTrue(FileManager.default.createFile(atPath: keyFile, contents: Data("\(pair.secretKey)\n".utf8),
                                                     attributes: [.posixPermissions: 0o600]))
        let run = try runCoordinator([
            "--data", data, "--hidden", "16", "--batch-size", "50", "--max-steps", "5", "--quiet", "--startup-timeout", "20",
            "--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*",
            "--curve-secret-key", keyFile, "--authorized-keys", folder + "/authorised/allowed.pub"])
        XCTAssertEqual(run.status, 0, run.errors)
    }

    func testPublicBindNeedsCurveOrInsecureAndBadKeyFilesAreNamed() throws {
        let open = try runCoordinator(["--data", data, "--workers", "1", "--bind", "tcp://0.0.0.0:\(freePort())"])
        XCTAssertNotEqual(open.status, 0)
        XCTAssertTrue(open.errors.contains("refusing to bind tcp://0.0.0.0"), open.errors)

        let badList = folder + "/bad.pub"
        try "# workers\nnot-a-key\n".write(toFile: badList, atomically: true, encoding: .utf8)
        let bad = try runCoordinator(["--data", data, "--workers", "1", "--bind", "tcp://127.0.0.1:*",
                                      "--curve-secret-key", folder + "/coordinator.key", "--authorized-keys", badList])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.errors.contains("bad.pub:2: not a 40-character Z85 public key"), bad.errors)
    }
}
