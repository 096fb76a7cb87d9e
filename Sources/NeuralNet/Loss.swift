#if canImport(Glibc)
import Glibc
#endif

/// Categorical cross-entropy over class-index labels: `L = −log p[label]` per sample.
///
/// Everything here is a *sum* over the samples, never a mean: shards of a batch are summed
/// in shard order and divided by the batch size once, so a batch gives the same bits however
/// it was split.
public enum CategoricalCrossEntropy {
    /// Probabilities are clipped to [1e-7, 1 − 1e-7] so that a confident mistake costs a
    /// large but finite loss.
    public static let clip: Float = 1e-7

    /// Σ over rows of −log(clip(p[label])), accumulated in Double.
    public static func lossSum(probabilities: UnsafePointer<Float>, labels: UnsafePointer<UInt8>,
                               rows: Int, classes: Int) -> Double {
        var sum = 0.0
        for row in 0..<rows {
            let p = probabilities[row * classes + Int(labels[row])]
            sum -= Double(logf(min(max(p, clip), 1 - clip)))
        }
        return sum
    }

    /// dL/dp for each sample (not divided by the row count): −1/p at the label, 0 elsewhere.
    public static func backward(probabilities: UnsafePointer<Float>, labels: UnsafePointer<UInt8>,
                                rows: Int, classes: Int, gradient: UnsafeMutablePointer<Float>) {
        gradient.update(repeating: 0, count: rows * classes)
        for row in 0..<rows {
            let index = row * classes + Int(labels[row])
            gradient[index] = -1 / min(max(probabilities[index], clip), 1 - clip)
        }
    }

    /// dL/dz through softmax and cross-entropy together: `p − onehot(label)` per sample.
    /// Cheaper and better conditioned than chaining the two backward passes.
    public static func softmaxBackward(probabilities: UnsafePointer<Float>,
                                       labels: UnsafePointer<UInt8>,
                                       rows: Int, classes: Int,
                                       gradient: UnsafeMutablePointer<Float>) {
        gradient.update(from: probabilities, count: rows * classes)
        for row in 0..<rows {
            gradient[row * classes + Int(labels[row])] -= 1
        }
    }

    /// Number of rows whose largest probability sits at the label (first maximum wins).
    public static func correctCount(probabilities: UnsafePointer<Float>, labels: UnsafePointer<UInt8>,
                                    rows: Int, classes: Int) -> Int {
        var correct = 0
        for row in 0..<rows where argmax(probabilities + row * classes, count: classes) == Int(labels[row]) {
            correct += 1
        }
        return correct
    }

    public static func argmax(_ values: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        for j in 1..<count where values[j] > values[best] { best = j }
        return best
    }
}
