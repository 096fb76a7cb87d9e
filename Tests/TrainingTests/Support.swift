import Foundation
import MNISTData
import NeuralNet
import Training
import Wire
import XCTest

/// Where this test process keeps its files (children's output, summaries, checkpoints, data
/// sets), removed when the process exits unless ZMQT_KEEP_TEST_FILES is set (to read a
/// failed run's logs whole); ends in a slash.
let scratchFolder: String = {
    let folder = NSTemporaryDirectory() + "zmq-trainer-tests-\(getpid())/"
    try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    if ProcessInfo.processInfo.environment["ZMQT_KEEP_TEST_FILES"] == nil {
        // A C callback, which cannot capture `folder`: it names it again.
        atexit { try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "zmq-trainer-tests-\(getpid())/") }
    }
    return folder
}()

/// The built executables sit next to the test bundle (`swift build` makes them).
func executable(_ name: String) throws -> URL {
    let folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    let url = folder.appendingPathComponent(name)
    guard FileManager.default.isExecutableFile(atPath: url.path) else {
        throw XCTSkip("\(url.path) is missing: run `swift build` (same configuration) before `swift test`")
    }
    return url
}

/// A small learnable data set in MNIST's shape: each class lights up its own band of
/// pixels, plus seeded noise. Written as CSV into a fresh folder.
func makeSyntheticData(trainCount: Int = 960, testCount: Int = 200, seed: UInt64 = 1) throws -> String {
    let folder = scratchFolder + "data-\(getpid())-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    var generator = SeededGenerator(seed: seed)
    func dataset(_ count: Int) -> Dataset {
        var pixels = [UInt8](repeating: 0, count: count * 784)
        var labels = [UInt8](repeating: 0, count: count)
        for sample in 0..<count {
            let label = generator.nextIndex(below: 10)
            labels[sample] = UInt8(label)
            for pixel in 0..<784 {
                let inBand = pixel / 78 == label
                let noise = generator.nextIndex(below: 120)
                pixels[sample * 784 + pixel] = UInt8(min(255, (inBand ? 120 : 0) + noise))
            }
        }
        return Dataset(featureCount: 784, pixels: pixels, labels: labels)
    }
    try CSVLoader.format(dataset(trainCount)).write(toFile: folder + "/mnist_train.csv", atomically: true, encoding: .utf8)
    try CSVLoader.format(dataset(testCount)).write(toFile: folder + "/mnist_test.csv", atomically: true, encoding: .utf8)
    return folder
}

/// A child process whose output goes to files, so a test can read it while it runs.
final class Child {
    let process = Process()
    let outputPath: String
    let errorPath: String

    convenience init(_ name: String, _ arguments: [String]) throws {
        try self.init(executable: try executable(name), arguments)
    }

    /// `environment` is added to this process's environment.
    init(executable url: URL, _ arguments: [String], environment: [String: String] = [:]) throws {
        let name = url.lastPathComponent
        let base = scratchFolder + "\(name)-\(UUID().uuidString.prefix(8))"
        outputPath = base + ".out"
        errorPath = base + ".err"
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.executableURL = url
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = FileHandle(forWritingAtPath: outputPath)
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    var pid: Int32 { process.processIdentifier }
    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }
    var errors: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    /// Waits for the exit status, killing the process after `seconds`.
    @discardableResult
    func wait(seconds: Double = 120) -> Int32 {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
            XCTFail("\(process.executableURL!.lastPathComponent) did not finish within \(seconds) s:\n\(errors)")
        }
        return process.terminationStatus
    }

    /// Waits until `text` appears in stdout or stderr.
    func waitFor(_ text: String, seconds: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if output.contains(text) || errors.contains(text) { return true }
            usleep(20_000)
        }
        return false
    }
}

/// A TCP port that was free a moment ago.
func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

struct RunResult {
    let status: Int32
    let summary: [String: Any]
    let output: String
    let errors: String

    var sha: String { summary["weights_sha256"] as? String ?? "" }
}

/// Runs `coordinator` to the end and reads its JSON summary.
func runCoordinator(_ arguments: [String], seconds: Double = 180) throws -> RunResult {
    let summaryPath = scratchFolder + "summary-\(UUID().uuidString.prefix(8)).json"
    let child = try Child("coordinator", arguments + ["--summary", summaryPath])
    let status = child.wait(seconds: seconds)
    let summary = readSummary(summaryPath)
    try? FileManager.default.removeItem(atPath: summaryPath)
    return RunResult(status: status, summary: summary, output: child.output, errors: child.errors)
}

/// A `--summary` file as a dictionary; empty if it is missing or not JSON (the run failed,
/// and the assertions on it then say so).
func readSummary(_ path: String) -> [String: Any] {
    let data = FileManager.default.contents(atPath: path) ?? Data()
    return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
}

/// Parameters of a saved model file.
func loadParameters(_ path: String) throws -> [Float] {
    try ModelFile.load(from: path).parameters
}

func isRunning(_ pid: Int32) -> Bool {
    // A zombie still answers kill(0); look at its state instead.
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
    let state = stat.split(separator: ")").last?.split(separator: " ").first
    return state != "Z"
}

/// The pids in the coordinator's "worker NAME (pid N) joined" log lines.
func workerPIDs(in log: String) -> [Int32] {
    log.components(separatedBy: "(pid ").dropFirst().compactMap { part in
        part.hasPrefix("") ? Int32(part.prefix { $0.isNumber }) : nil
    }
}

/// The pid in the coordinator's "worker NAME (pid N) joined" line, once it is in `child`'s
/// stderr (nil after `seconds`).
func waitForWorkerPID(_ name: String, in child: Child, seconds: Double = 60) -> Int32? {
    let marker = "worker \(name) (pid "
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if let range = child.errors.range(of: marker) {
            let digits = child.errors[range.upperBound...].prefix { $0.isNumber }
            if digits.count < child.errors.distance(from: range.upperBound, to: child.errors.endIndex) { return Int32(digits) }
        }
        usleep(20_000)
    }
    return nil
}

/// Runs `path` with its standard streams on /dev/null and waits for it, without Foundation's
/// Process: a daemon closes the descriptors Process watches, and Process then blocks its
/// monitor thread waiting for the daemon. For tools that daemonize (sshd, munged, slurmd),
/// this waits only for the parent that forks the daemon. Returns the exit status.
@discardableResult
func runDetached(_ path: String, _ arguments: [String], environment: [String: String] = [:]) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    for descriptor in Int32(0)...2 {
        posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", descriptor == 0 ? O_RDONLY : O_WRONLY, 0)
    }
    let variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
    var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
    var envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
    defer { (argv + envp).forEach { free($0) } }
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, &actions, nil, &argv, &envp) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS, which Swift does not import.
    return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}

/// Joins a coordinator the way a worker does, from a raw socket: hello, the proof of the run
/// secret (read from the file the coordinator wrote for `endpoint`) when challenged, until a
/// welcome arrives or `seconds` pass.
func joinAsWorker(_ socket: ZMQSocket, endpoint: String, name: String, seconds: Double = 60) throws -> Welcome? {
    var hello = Hello(pid: UInt32(getpid()), name: name)
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        try socket.send(hello.encode(), dontWait: true)
        while let frames = try socket.receive(timeoutMilliseconds: 200) {
            guard let envelope = try? Envelope(frames: frames[...]) else { continue }
            switch envelope.type {
            case .welcome:
                return try Welcome(envelope)
            case .challenge:
                let secret = try RunSecret.read(from: try XCTUnwrap(RunSecret.defaultPath(forEndpoint: endpoint)))
                hello.proof = secret.proof(nonce: try Challenge(envelope).nonce, pid: hello.pid, name: name)
                try socket.send(hello.encode(), dontWait: true)
            default:
                break
            }
        }
    }
    return nil
}

/// Outgoing frames as the bytes a peer would receive (a test's raw socket sends these).
func bytes(_ frames: [OutgoingFrame]) -> [[UInt8]] {
    frames.map { frame in
        switch frame {
        case let .bytes(b): b
        case let .shared(buffer, offset, count): Array(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count))
        }
    }
}

/// A test case whose tests share one synthetic data set (`makeSyntheticData()`), made
/// before the class's first test and removed after its last; `data` is its folder.
class SyntheticDataTestCase: XCTestCase {
    private static var dataFolder: String?
    var data: String { SyntheticDataTestCase.dataFolder! }

    override class func setUp() {
        super.setUp()
        dataFolder = try? makeSyntheticData()
    }

    override class func tearDown() {
        if let dataFolder { try? FileManager.default.removeItem(atPath: dataFolder) }
        dataFolder = nil
        super.tearDown()
    }
}
