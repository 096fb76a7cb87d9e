import MNISTData
import NeuralNet

/// How a model classifies a labelled data set: the confusion matrix and what follows from it.
public struct ConfusionMatrix: Sendable, Equatable {
    public let classCount: Int
    /// `counts[actual][predicted]`.
    public private(set) var counts: [[Int]]
    public private(set) var lossSum = 0.0

    public init(classCount: Int) {
        self.classCount = classCount
        counts = Array(repeating: Array(repeating: 0, count: classCount), count: classCount)
    }

    /// Runs `model` over `dataset` in chunks of `chunk` samples.
    public init(model: Sequential, dataset: Dataset, chunk: Int = 1000) {
        self.init(classCount: model.spec.outputSize)
        let classes = classCount
        dataset.pixels.withUnsafeBufferPointer { pixels in
            dataset.labels.withUnsafeBufferPointer { labels in
                var start = 0
                while start < dataset.count {
                    let rows = min(chunk, dataset.count - start)
                    let batchLabels = labels.baseAddress! + start
                    let probabilities = model.forward(pixels: pixels.baseAddress! + start * dataset.featureCount, rows: rows)
                    lossSum += CategoricalCrossEntropy.lossSum(probabilities: probabilities, labels: batchLabels,
                                                               rows: rows, classes: classes)
                    for row in 0..<rows {
                        let scores = UnsafeBufferPointer(start: probabilities + row * classes, count: classes)
                        add(actual: Int(batchLabels[row]), predicted: Self.argmax(scores))
                    }
                    start += rows
                }
            }
        }
    }

    public mutating func add(actual: Int, predicted: Int) {
        counts[actual][predicted] += 1
    }

    public var total: Int { counts.reduce(0) { $0 + $1.reduce(0, +) } }
    public var correct: Int { (0..<classCount).reduce(0) { $0 + counts[$1][$1] } }
    public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }
    public var meanLoss: Double { total == 0 ? 0 : lossSum / Double(total) }

    /// Of the samples predicted as `label`, the fraction that are `label` (nil: none predicted).
    public func precision(_ label: Int) -> Double? {
        let predicted = (0..<classCount).reduce(0) { $0 + counts[$1][label] }
        return predicted == 0 ? nil : Double(counts[label][label]) / Double(predicted)
    }

    /// Of the samples that are `label`, the fraction predicted as `label` (nil: none present).
    public func recall(_ label: Int) -> Double? {
        let actual = counts[label].reduce(0, +)
        return actual == 0 ? nil : Double(counts[label][label]) / Double(actual)
    }

    public func support(_ label: Int) -> Int { counts[label].reduce(0, +) }

    /// The first index of the largest score (ties go to the lower class, as in `correctCount`).
    public static func argmax(_ scores: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for index in 1..<scores.count where scores[index] > scores[best] { best = index }
        return best
    }
}
