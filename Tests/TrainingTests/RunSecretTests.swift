import Foundation
import Training
import XCTest

/// The run secret's proof and its file: what a hello proves, and which files are trusted.
final class RunSecretTests: XCTestCase {
    func testAProofHoldsOnlyForItsSecretNonceWorkerAndPid() {
        let secret = RunSecret.generate()
        let nonce = [UInt8](repeating: 3, count: 16)
        let proof = secret.proof(nonce: nonce, pid: 42, name: "w1")
        XCTAssertTrue(secret.verifies(proof, nonce: nonce, pid: 42, name: "w1"))
        XCTAssertFalse(secret.verifies(proof, nonce: [UInt8](repeating: 4, count: 16), pid: 42, name: "w1"), "replayed for another nonce")
        XCTAssertFalse(secret.verifies(proof, nonce: nonce, pid: 43, name: "w1"))
        XCTAssertFalse(secret.verifies(proof, nonce: nonce, pid: 42, name: "w2"))
        XCTAssertFalse(RunSecret.generate().verifies(proof, nonce: nonce, pid: 42, name: "w1"), "another run's secret")
        XCTAssertFalse(secret.verifies([UInt8](repeating: 0, count: 32), nonce: nonce, pid: 42, name: "w1"))
        XCTAssertNotEqual(RunSecret.generate(), RunSecret.generate())
        XCTAssertEqual(try RunSecret(hex: secret.hex), secret)
        XCTAssertThrowsError(try RunSecret(hex: String(secret.hex.dropLast())))
        XCTAssertThrowsError(try RunSecret(hex: String(secret.hex.dropLast()) + "g"))
    }

    func testTheFileIsPrivateAndOnlyPrivateFilesAreRead() throws {
        let folder = scratchFolder + "secrets-\(UUID().uuidString.prefix(6))/"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let secret = RunSecret.generate()
        let path = folder + "run.secret"
        try secret.write(to: path)
        var status = stat()
        XCTAssertEqual(stat(path, &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o600)
        XCTAssertEqual(try RunSecret.read(from: path), secret)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["run.secret"], "a temporary file is left")
        // Written again (a new run): replaced whole.
        let next = RunSecret.generate()
        try next.write(to: path)
        XCTAssertEqual(try RunSecret.read(from: path), next)
        secret.remove(at: path)  // not its secret any more: left alone
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))

        chmod(path, 0o644)
        XCTAssertThrowsError(try RunSecret.read(from: path)) { XCTAssertTrue("\($0)".contains("readable or writable by others"), "\($0)") }
        chmod(path, 0o600)
        let link = folder + "link.secret"
        XCTAssertEqual(symlink(path, link), 0)
        XCTAssertThrowsError(try RunSecret.read(from: link)) { XCTAssertTrue("\($0)".contains("cannot open"), "\($0)") }
        let fifo = folder + "fifo.secret"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let start = Date()
        XCTAssertThrowsError(try RunSecret.read(from: fifo)) { XCTAssertTrue("\($0)".contains("not a regular file"), "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1)
        next.remove(at: path)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertEqual(RunSecret.defaultPath(forEndpoint: "tcp://127.0.0.1:5555"), RunSecret.defaultFolder + "/run-secret-tcp-5555")
        XCTAssertEqual(RunSecret.defaultPath(forEndpoint: "tcp://[::1]:7000"), RunSecret.defaultFolder + "/run-secret-tcp-7000")
        XCTAssertNil(RunSecret.defaultPath(forEndpoint: "ipc:///tmp/x"))
    }

    /// A coordinator killed before it could remove its file: the next one that writes to the
    /// default folder removes it.
    func testFilesOfCoordinatorsThatAreGoneAreRemoved() throws {
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let stale = RunSecret.defaultFolder + "/run-secret-tcp-test-\(getpid())"
        let live = try XCTUnwrap(RunSecret.defaultPath(forEndpoint: "tcp://127.0.0.1:1"))
        try RunSecret.generate().write(to: live)  // makes the folder
        defer { unlink(live) }
        let text = RunSecret.generate().hex + "\ncoordinator pid \(gone.processIdentifier)\n"
        XCTAssertTrue(FileManager.default.createFile(atPath: stale, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]))
        try RunSecret.generate().write(to: live)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale), "a dead coordinator's secret file was kept")
        XCTAssertTrue(FileManager.default.fileExists(atPath: live), "a live one's was removed")
    }
}
