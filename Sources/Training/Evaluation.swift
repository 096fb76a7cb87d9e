import MNISTData
import NeuralNet

/// Loss and accuracy of a model on a whole data set.
public enum Evaluation {
    public static func statistics(of model: Sequential, on dataset: Dataset, chunk: Int = 1000) -> BatchStatistics {
        var total = BatchStatistics()
        dataset.pixels.withUnsafeBufferPointer { pixels in
            dataset.labels.withUnsafeBufferPointer { labels in
                var start = 0
                while start < dataset.count {
                    let rows = min(chunk, dataset.count - start)
                    total += model.evaluate(pixels: pixels.baseAddress! + start * dataset.featureCount,
                                            labels: labels.baseAddress! + start, rows: rows)
                    start += rows
                }
            }
        }
        return total
    }
}
