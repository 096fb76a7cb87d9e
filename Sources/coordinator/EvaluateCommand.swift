import ArgumentParser
import Foundation
import MNISTData
import NeuralNet
import Training

/// `coordinator evaluate`: a saved model's accuracy, per-class precision and recall, and the
/// confusion matrix on the test set.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Test accuracy, per-class precision/recall and the confusion matrix of a saved model.",
        discussion: """
        Examples:
          coordinator --local --save-model model.bin && coordinator evaluate --model model.bin
          coordinator evaluate --model model.bin --data /usr/share/datasets/fashion-mnist --json eval.json
        """
    )

    @Option(help: "A model file written by --save-model.")
    var model: String

    @Option(help: "Folder with the test set (mnist_test.csv, or t10k-* IDX files).")
    var data = "data"

    @Option(help: "Also write the figures as JSON to this file.")
    var json: String?

    func run() throws {
        do {
            BLAS.setThreadCount(1)
            let (spec, parameters) = try ModelFile.load(from: model)
            let test = try DataDirectory.load(.test, from: data)
            guard spec.accepts(test.imageShape), test.classCount == spec.outputSize else {
                throw ValidationError("\(model) takes \(spec.input.isVector ? "\(spec.inputSize) inputs" : "\(spec.input) images") and \(spec.outputSize) classes; the data in \(data) has \(test.imageShape) images (\(test.featureCount) pixels) and \(test.classCount)")
            }
            let matrix = ConfusionMatrix(model: Sequential(spec: spec, parameters: parameters), dataset: test)
            try OutputFile.standardOutput.write(Self.report(matrix, title: "\(model) (\(spec)) on \(test.count) test samples from \(data)") + "\n")
            if let json {
                try OutputFile.write([UInt8](try Self.json(matrix)), to: json)
            }
        } catch let error as ValidationError {
            throw error
        } catch {
            OutputFile.standardError.writeIgnoringErrors("error: \(error)\n")
            throw ExitCode.failure
        }
    }

    static func report(_ matrix: ConfusionMatrix, title: String) -> String {
        func percent(_ value: Double?) -> String { value.map { String(format: "%6.2f%%", $0 * 100) } ?? "     –" }
        var lines = [title,
                     String(format: "  accuracy  %.2f%% (%d of %d)   loss %.4f", matrix.accuracy * 100, matrix.correct,
                            matrix.total, matrix.meanLoss),
                     "",
                     "  class  precision   recall   support"]
        for label in 0..<matrix.classCount {
            lines.append(String(format: "  %5d    %@  %@   %7d", label, percent(matrix.precision(label)),
                                percent(matrix.recall(label)), matrix.support(label)))
        }
        lines += ["", "  confusion matrix (rows: actual, columns: predicted)",
                  "        " + (0..<matrix.classCount).map { String(format: "%6d", $0) }.joined()]
        for actual in 0..<matrix.classCount {
            lines.append(String(format: "  %5d ", actual) + matrix.counts[actual].map { String(format: "%6d", $0) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ matrix: ConfusionMatrix) throws -> Data {
        let classes = (0..<matrix.classCount).map { label -> [String: Any] in
            var entry: [String: Any] = ["class": label, "support": matrix.support(label)]
            if let precision = matrix.precision(label) { entry["precision"] = precision }
            if let recall = matrix.recall(label) { entry["recall"] = recall }
            return entry
        }
        let object: [String: Any] = ["accuracy": matrix.accuracy, "loss": matrix.meanLoss, "samples": matrix.total,
                                     "classes": classes, "confusion_matrix": matrix.counts]
        return try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    }
}
