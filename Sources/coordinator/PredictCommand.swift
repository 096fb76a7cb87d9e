import ArgumentParser
import Foundation
import MNISTData
import NeuralNet
import Training

/// `coordinator predict`: classifies images with a saved model.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify images with a saved model: PGM or PNG files, or CSV rows of pixels.",
        discussion: """
        Images must have the model's size (28×28 for MNIST) and look like MNIST: a light digit \
        on a dark background. CSV rows hold the pixels (0–255), optionally after a label, as \
        in mnist_test.csv; a row with a label also says whether the prediction is right.

        Examples:
          coordinator predict --model model.bin digit.png
          coordinator predict --model model.bin --top 10 data/mnist_test.csv
        """
    )

    @Option(help: "A model file written by --save-model.")
    var model: String

    @Option(help: "How many of the most likely classes to print per image.")
    var top = 3

    @Argument(help: "Images (.pgm, .png) or CSV files of pixel rows.")
    var inputs: [String]

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
    }

    func run() throws {
        do {
            BLAS.setThreadCount(1)
            let (spec, parameters) = try ModelFile.load(from: model)
            let network = Sequential(spec: spec, parameters: parameters)
            var right = 0, labelled = 0
            for path in inputs {
                for input in try PredictionInput.load(path: path, featureCount: spec.inputSize,
                                                           imageShape: spec.input.isVector ? nil : spec.input,
                                                           classCount: spec.outputSize) {
                    let probabilities = input.pixels.withUnsafeBufferPointer {
                        Array(UnsafeBufferPointer(start: network.forward(pixels: $0.baseAddress!, rows: 1), count: spec.outputSize))
                    }
                    let ranked = probabilities.indices.sorted { (probabilities[$0], -$0) > (probabilities[$1], -$1) }
                    let best = ranked[0]
                    var line = "\(input.source): \(best)  (" + ranked.prefix(top).map {
                        String(format: "%d %.1f%%", $0, probabilities[$0] * 100)
                    }.joined(separator: ", ") + ")"
                    if let label = input.label {
                        labelled += 1
                        if label == best { right += 1 }
                        line += label == best ? "  label \(label) ✓" : "  label \(label) ✗"
                    }
                    try OutputFile.standardOutput.write(line + "\n")
                }
            }
            if labelled > 1 {
                try OutputFile.standardOutput.write(String(format: "%d of %d labelled images right (%.2f%%)\n", right, labelled, Double(right) / Double(labelled) * 100))
            }
        } catch {
            OutputFile.standardError.writeIgnoringErrors("error: \(error)\n")
            throw ExitCode.failure
        }
    }
}
