import Foundation
import NeuralNet
import Training
import XCTest

/// Write errors (a full disk, a closed pipe, a file-size limit) and files left by killed runs,
/// with the real coordinator: a write error is a one-line message and exit status 1, never a
/// trap, and the checkpoint on disk stays the last good one.
final class DiskFailureTests: XCTestCase {
    private static var dataFolder: String?
    private var data: String { Self.dataFolder! }
    private var folder = ""

    override class func setUp() { dataFolder = try? makeSyntheticData(trainCount: 640, testCount: 100) }
    override class func tearDown() {
        if let dataFolder { try? FileManager.default.removeItem(atPath: dataFolder) }
    }

    override func setUpWithError() throws {
        folder = scratchFolder + "disk-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: folder) }

    private var short: [String] {
        ["--data", data, "--hidden", "32", "--batch-size", "64", "--epochs", "5", "--max-steps", "20", "--local"]
    }

    /// Runs the coordinator with its standard output going to `output`; returns the exit
    /// status and what it wrote to standard error.
    private func run(_ arguments: [String], output: Any, executable name: String = "coordinator",
                     wrapper: [String] = []) throws -> (status: Int32, errors: String) {
        let errorPath = folder + "/stderr-\(UUID().uuidString.prefix(6))"
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        let process = Process()
        let binary = try executable(name).path
        process.executableURL = URL(fileURLWithPath: wrapper.isEmpty ? binary : "/bin/sh")
        process.arguments = wrapper.isEmpty ? arguments : ["-c", wrapper.joined(separator: "; ") + "; exec \"$0\" \"$@\"", binary] + arguments
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        try process.run()
        if let pipe = output as? Pipe { try pipe.fileHandleForReading.close() }  // nobody will read
        let deadline = Date().addingTimeInterval(60)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        let errors = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        XCTAssertEqual(process.terminationReason, .exit, "killed by a signal:\n\(errors)")
        return (process.terminationStatus, errors)
    }

    private func assertOneLineError(_ result: (status: Int32, errors: String), _ message: String,
                                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, 1, result.errors, file: file, line: line)
        XCTAssertEqual(result.errors, "error: \(message)\n", file: file, line: line)
    }

    func testStandardOutputMetricsAndSummaryOnAFullDiskExitCleanly() throws {
        let full = try XCTUnwrap(FileHandle(forWritingAtPath: "/dev/full"))
        let checkpoint = folder + "/progress"
        let stdout = try run(short + ["--checkpoint", checkpoint], output: full)
        assertOneLineError(stdout, "standard output: cannot write: No space left on device")
        // The first epoch's checkpoint (10 steps) was written before its report failed.
        XCTAssertEqual(try Checkpoint.load(from: checkpoint).step, 10)

        let null = try XCTUnwrap(FileHandle(forWritingAtPath: "/dev/null"))
        let metrics = try run(short + ["--quiet", "--metrics", "/dev/full"], output: null)
        assertOneLineError(metrics, "/dev/full: cannot write: No space left on device")
        let summary = try run(short + ["--quiet", "--summary", "/dev/full"], output: null)
        assertOneLineError(summary, "/dev/full: cannot write: No space left on device")
    }

    func testAReaderThatWentAwayIsAWriteErrorNotASignal() throws {
        let result = try run(short, output: Pipe())
        assertOneLineError(result, "standard output: cannot write: Broken pipe")
    }

    /// The disk fills up (a file-size limit stands in for it) while a checkpoint is written:
    /// the run stops naming the file, and the checkpoint before stays, whole.
    func testACheckpointThatCannotBeWrittenLeavesTheLastGoodOne() throws {
        let checkpoint = folder + "/progress"
        let null = try XCTUnwrap(FileHandle(forWritingAtPath: "/dev/null"))
        let first = try run(short + ["--quiet", "--checkpoint", checkpoint], output: null)
        XCTAssertEqual(first.status, 0, first.errors)
        let good = try XCTUnwrap(FileManager.default.contents(atPath: checkpoint))
        XCTAssertGreaterThan(good.count, 200_000)
        // 64 blocks of at most 1 KiB: less than a checkpoint; SIGXFSZ ignored, so writes fail with EFBIG.
        let limited = try run(short.dropLast(3) + ["--max-steps", "40", "--local", "--quiet", "--resume", checkpoint],
                              output: null, wrapper: ["ulimit -f 64", "trap '' XFSZ"])
        assertOneLineError(limited, "\(checkpoint): cannot write: File too large")
        XCTAssertEqual(FileManager.default.contents(atPath: checkpoint), good)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("progress") }, ["progress"])
    }

    /// Killed while writing checkpoints, runs once left a `.tmp-PID` file each (25 kills:
    /// 102 MB). Now one temporary name serves each checkpoint, and leftovers go at start.
    func testKilledRunsLeaveAtMostOneTemporaryCheckpoint() throws {
        let checkpoint = folder + "/progress"
        let stale = checkpoint + ".tmp-4242"
        XCTAssertTrue(FileManager.default.createFile(atPath: stale, contents: Data(count: 100_000)))
        for delay in [0.6, 0.8, 1.0, 1.2, 1.4] {
            let child = try Child("coordinator", ["--data", data, "--hidden", "32", "--batch-size", "64", "--epochs", "1000",
                                                  "--local", "--quiet", "--checkpoint", checkpoint, "--checkpoint-every", "1"])
            usleep(UInt32(delay * 1e6))
            kill(child.pid, SIGKILL)
            child.wait(seconds: 10)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("progress") }
        XCTAssertTrue(Set(left).isSubset(of: ["progress", "progress.tmp"]), "\(left)")
        XCTAssertFalse(left.contains("progress.tmp-4242"))
        // A run that ends cleanly leaves only the checkpoint.
        let clean = try runCoordinator(short + ["--quiet", "--checkpoint", checkpoint])
        XCTAssertEqual(clean.status, 0, clean.errors)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasPrefix("progress") }, ["progress"])
    }

    /// Checked before anything is bound or spawned: the error comes at once, not after the
    /// workers joined (or the start-up timeout passed).
    func testABadResumeIsReportedBeforeBinding() throws {
        let corrupt = folder + "/corrupt"
        XCTAssertTrue(FileManager.default.createFile(atPath: corrupt, contents: Data(Array("ZMQK".utf8) + [UInt8](repeating: 7, count: 100))))
        let fifo = folder + "/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        // A FIFO once blocked the read for good, and /dev/zero never ends.
        let cases = [(folder + "/missing", "cannot read the file: No such file or directory"), (corrupt, "checksum mismatch"),
                     (fifo, "not a regular file"), ("/dev/zero", "not a regular file")]
        for (path, reason) in cases {
            let start = Date()
            let run = try runCoordinator(["--data", data, "--workers", "1", "--bind", "tcp://127.0.0.1:\(freePort())",
                                          "--startup-timeout", "60", "--log-level", "info", "--resume", path], seconds: 30)
            XCTAssertEqual(run.status, 1, run.errors)
            XCTAssertTrue(run.errors.contains("error: checkpoint \(path): \(reason)"), run.errors)
            XCTAssertFalse(run.errors.contains("listening on"), run.errors)
            XCTAssertLessThan(Date().timeIntervalSince(start), 20)
        }
    }
}
