import Foundation
import XCTest

/// What a user reads: the --metrics file, `coordinator evaluate` and `coordinator predict`,
/// from real processes.
final class UserViewTests: XCTestCase {
    private var data = ""
    private var scratch = ""

    override func setUpWithError() throws {
        data = try makeSyntheticData(trainCount: 600, testCount: 150)
        scratch = scratchFolder + "user-view-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: data)
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// Every line parses, the fields are there, and the values are sane: epochs count up,
    /// steps add up, accuracies lie in [0, 1], the learning rate decays, timings are ≥ 0.
    func testMetricsFileFormat() throws {
        let metrics = scratch + "/metrics.jsonl"
        let run = try runCoordinator(["--data", data, "--hidden", "16", "--batch-size", "50", "--epochs", "3",
                                      "--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*",
                                      "--metrics", metrics, "--metrics-every", "4"])
        XCTAssertEqual(run.status, 0, run.errors)
        let lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n")
        let records = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any], String($0)) }
        let epochs = records.filter { $0["kind"] as? String == "epoch" }
        let steps = records.filter { $0["kind"] as? String == "steps" }
        XCTAssertEqual(epochs.count, 3)
        XCTAssertEqual(steps.count, 9, "12 steps an epoch, a line every 4")
        XCTAssertEqual(epochs.map { $0["epoch"] as? Int }, [1, 2, 3])
        XCTAssertEqual(epochs.map { $0["step"] as? Int }, [12, 24, 36])
        XCTAssertEqual(steps.map { $0["step"] as? Int }, stride(from: 4, through: 36, by: 4).map { $0 })
        var lastRate = Double.infinity
        for record in records {
            for key in ["loss", "accuracy", "learning_rate", "samples_per_second", "elapsed_seconds"] {
                XCTAssertNotNil(record[key] as? Double, "\(key) in \(record)")
            }
            XCTAssertEqual(record["live_workers"] as? Int, 2)
            let accuracy = record["accuracy"] as? Double ?? -1
            XCTAssertTrue((0...1).contains(accuracy))
            XCTAssertGreaterThan(record["loss"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(record["samples_per_second"] as? Double ?? 0, 0)
            let timing = try XCTUnwrap(record["ms_per_step"] as? [String: Double])
            XCTAssertEqual(Set(timing.keys), ["compute", "send", "network_wait", "receive", "reduce", "optimizer", "batch"])
            XCTAssertTrue(timing.values.allSatisfy { $0 >= 0 })
            XCTAssertGreaterThan(timing["compute"] ?? 0, 0)
            let rate = record["learning_rate"] as? Double ?? 0
            XCTAssertLessThanOrEqual(rate, lastRate)
            lastRate = rate
        }
        for epoch in epochs {
            XCTAssertTrue((0...1).contains(epoch["test_accuracy"] as? Double ?? -1))
            XCTAssertNotNil(epoch["test_loss"] as? Double)
        }
        XCTAssertEqual(epochs.last?["test_accuracy"] as? Double, run.summary["test_accuracy"] as? Double)
        // Per-epoch timings add up to the run's: every step counted once.
        let timing = try XCTUnwrap(run.summary["timing"] as? [String: Double])
        for (phase, key) in [("compute", "compute_seconds"), ("optimizer", "optimizer_seconds")] {
            let total = epochs.reduce(0.0) { $0 + ((($1["ms_per_step"] as? [String: Double])?[phase] ?? 0) * 12) }
            XCTAssertEqual(total, (timing[key] ?? 0) * 1000, accuracy: 1e-6 * max(1, total), phase)
        }
        // The stepping thread's CPU time: counted, and never more than the training's wall time.
        let cpu = try XCTUnwrap(timing["thread_cpu_seconds"])
        XCTAssertGreaterThan(cpu, 0)
        XCTAssertLessThanOrEqual(cpu, try XCTUnwrap(run.summary["train_seconds"] as? Double) + 0.5)
    }

    /// evaluate agrees with the training run's own test accuracy; predict classifies CSV rows
    /// and an image, and refuses bad input with the file and line.
    func testEvaluateAndPredictOnASavedModel() throws {
        let model = scratch + "/model.bin"
        let run = try runCoordinator(["--data", data, "--hidden", "16", "--batch-size", "50", "--epochs", "2",
                                      "--local", "--quiet", "--save-model", model])
        XCTAssertEqual(run.status, 0, run.errors)

        let json = scratch + "/evaluation.json"
        let evaluate = try Child("coordinator", ["evaluate", "--model", model, "--data", data, "--json", json])
        XCTAssertEqual(evaluate.wait(), 0, evaluate.errors)
        XCTAssertTrue(evaluate.output.contains("confusion matrix"), evaluate.output)
        let figures = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        XCTAssertEqual(figures["accuracy"] as? Double ?? 0, run.summary["test_accuracy"] as? Double ?? 1, accuracy: 1e-12)
        let matrix = try XCTUnwrap(figures["confusion_matrix"] as? [[Int]])
        XCTAssertEqual(matrix.count, 10)
        XCTAssertEqual(matrix.joined().reduce(0, +), 150)
        let classes = try XCTUnwrap(figures["classes"] as? [[String: Any]])
        XCTAssertEqual(classes.map { $0["support"] as? Int ?? 0 }, matrix.map { $0.reduce(0, +) })
        for (label, entry) in classes.enumerated() where matrix[label].reduce(0, +) > 0 {
            XCTAssertEqual(entry["recall"] as? Double ?? -1, Double(matrix[label][label]) / Double(matrix[label].reduce(0, +)), accuracy: 1e-12)
        }

        // The first five test rows (with labels), then one of them as a binary PGM.
        let rows = try String(contentsOfFile: data + "/mnist_test.csv", encoding: .utf8)
            .split(whereSeparator: \.isNewline).filter { $0.first?.isNumber == true }.prefix(5)
        let csv = scratch + "/rows.csv"
        try rows.joined(separator: "\n").write(toFile: csv, atomically: true, encoding: .utf8)
        let pixels = rows[rows.startIndex].split(separator: ",").dropFirst().map { UInt8($0)! }
        let pgm = scratch + "/digit.pgm"
        _ = FileManager.default.createFile(atPath: pgm, contents: Data(Array("P5\n28 28\n255\n".utf8) + pixels))
        let predict = try Child("coordinator", ["predict", "--model", model, "--top", "2", csv, pgm])
        XCTAssertEqual(predict.wait(), 0, predict.errors)
        let lines = predict.output.split(separator: "\n")
        XCTAssertEqual(lines.count, 7, predict.output)  // 5 rows, the image, the tally
        XCTAssertTrue(lines[0].hasPrefix(csv + ":1: "), predict.output)
        XCTAssertTrue(lines[5].hasPrefix(pgm + ": "), predict.output)
        // The image is row 1 again: the same prediction.
        XCTAssertEqual(lines[0].split(separator: " ")[1], lines[5].split(separator: " ")[1])
        XCTAssertTrue(lines[6].contains("of 5 labelled images right"), predict.output)

        let bad = scratch + "/bad.csv"
        try "1,2,3\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try Child("coordinator", ["predict", "--model", model, bad])
        XCTAssertNotEqual(refused.wait(), 0)
        XCTAssertTrue(refused.errors.contains("bad.csv:1: expected 785"), refused.errors)
        let missing = try Child("coordinator", ["evaluate", "--model", scratch + "/nope.bin", "--data", data])
        XCTAssertNotEqual(missing.wait(), 0)
        XCTAssertTrue(missing.errors.contains("nope.bin"), missing.errors)
    }

    /// Each script's --help is its header comment, whole: the usage line, and no code after.
    func testScriptsExplainThemselves() throws {
        let scripts = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../scripts").standardized
        for name in ["bench", "chaos", "cluster", "compare", "fetch-mnist", "launch", "netsim", "scale"] {
            let path = scripts.appendingPathComponent("\(name).sh").path
            let help = try Child(executable: URL(fileURLWithPath: "/bin/bash"), [path, "--help"])
            XCTAssertEqual(help.wait(seconds: 10), 0, "\(name).sh --help: \(help.errors)")
            let text = help.output
            XCTAssertTrue(text.contains("scripts/\(name).sh"), "\(name).sh --help has no usage line:\n\(text)")
            XCTAssertFalse(text.contains("set -euo") || text.contains("#"), "\(name).sh --help prints code or comment marks:\n\(text)")
            // The last line of the header is there too.
            let header = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
                .dropFirst().prefix { $0.hasPrefix("#") }
            let lastLine = header.last.map { $0.dropFirst().trimmingCharacters(in: .whitespaces) } ?? ""
            XCTAssertTrue(text.contains(lastLine), "\(name).sh --help lacks its header's last line \"\(lastLine)\"")
        }
    }
}
