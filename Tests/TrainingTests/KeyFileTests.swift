import Foundation
import XCTest

/// Secret keys: created mode 600 from the first byte, and never taken from a command line.
final class KeyFileTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = scratchFolder + "keyfiles-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    /// A watcher on the folder (inotify) looks at every file the moment it is created,
    /// written or renamed, while keygen runs again and again: a secret key file must never
    /// be readable by anyone else, not even for the moment before a chmod.
    func testSecretKeysAreNeverReadableByOthers() throws {
        let watch = inotify_init1(Int32(IN_NONBLOCK))
        XCTAssertGreaterThanOrEqual(watch, 0)
        defer { close(watch) }
        let events = UInt32(IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_ATTRIB)
        XCTAssertGreaterThanOrEqual(inotify_add_watch(watch, folder, events), 0)
        let state = WatchState()
        let folder = self.folder
        let watcher = Thread {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while !(state.lock.withLock { state.stop }) {
                let count = buffer.withUnsafeMutableBytes { read(watch, $0.baseAddress, $0.count) }
                guard count > 0 else { usleep(200); continue }
                var offset = 0
                while offset < count {
                    let (length, name) = buffer.withUnsafeBytes { raw -> (Int, String) in
                        let event = raw.loadUnaligned(fromByteOffset: offset, as: inotify_event.self)
                        let start = offset + MemoryLayout<inotify_event>.size
                        let bytes = raw[start..<(start + Int(event.len))].prefix { $0 != 0 }
                        return (MemoryLayout<inotify_event>.size + Int(event.len), String(decoding: bytes, as: UTF8.self))
                    }
                    offset += length
                    guard name.contains(".key") else { continue }
                    var status = stat()
                    guard stat(folder + "/" + name, &status) == 0 else { continue }  // renamed already
                    state.lock.withLock {
                        state.seen += 1
                        if status.st_mode & 0o077 != 0 { state.exposed.append("\(name) \(String(status.st_mode & 0o777, radix: 8))") }
                    }
                }
            }
        }
        watcher.start()
        for _ in 0..<20 {
            let keygen = try Child("coordinator", ["keygen", "--name", "secret", "--output", folder, "--force"])
            XCTAssertEqual(keygen.wait(seconds: 30), 0, keygen.errors)
        }
        usleep(100_000)
        state.lock.withLock { state.stop = true }
        while watcher.isExecuting { usleep(1000) }
        state.lock.withLock {
            XCTAssertGreaterThanOrEqual(state.seen, 20, "the watcher saw too little to judge")
            XCTAssertEqual(state.exposed, [], "secret key files readable by others")
        }
        var status = stat()
        XCTAssertEqual(stat(folder + "/secret.key", &status), 0)
        XCTAssertEqual(status.st_mode & 0o777, 0o600)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), ["secret.key", "secret.pub"])
    }

    func testASecretKeyOnTheCommandLineIsRefused() throws {
        let keygen = try Child("coordinator", ["keygen", "--name", "c", "--output", folder])
        XCTAssertEqual(keygen.wait(seconds: 30), 0, keygen.errors)
        let text = try String(contentsOfFile: folder + "/c.key", encoding: .utf8)
        let secret = try XCTUnwrap(text.split(separator: "\n").last.map(String.init))
        XCTAssertEqual(secret.count, 40)
        let data = try makeSyntheticData(trainCount: 100, testCount: 10)
        defer { try? FileManager.default.removeItem(atPath: data) }
        let coordinator = try runCoordinator(["--data", data, "--workers", "1", "--bind", "tcp://127.0.0.1:\(freePort())",
                                              "--curve-secret-key=\(secret)", "--authorized-keys", folder + "/c.pub"], seconds: 30)
        XCTAssertEqual(coordinator.status, 1, coordinator.errors)
        XCTAssertTrue(coordinator.errors.contains("never taken from the command line"), coordinator.errors)
        XCTAssertFalse(coordinator.errors.contains(secret), "the error repeats the key")
        let worker = try Child("worker", ["--connect", "tcp://127.0.0.1:1", "--curve-server-key", folder + "/c.pub",
                                          "--curve-secret-key=\(secret)"])
        XCTAssertEqual(worker.wait(seconds: 30), 1, worker.errors)
        XCTAssertTrue(worker.errors.contains("never taken from the command line"), worker.errors)
    }
}

/// What the watcher thread saw, behind a lock.
private final class WatchState: @unchecked Sendable {
    let lock = NSLock()
    var seen = 0
    var exposed: [String] = []
    var stop = false
}
