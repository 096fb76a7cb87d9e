import NeuralNet
import XCTest

final class LayerAndLossTests: XCTestCase {
    /// L = Σ w ⊙ dense(x): dweights, dbiases and dinputs against finite differences.
    func testDenseBackwardMatchesFiniteDifferences() {
        for activation in [Activation.linear, .relu, .tanh, .sigmoid] {
            let layer = Dense(inputSize: 5, outputSize: 3, activation: activation)
            let rows = 4
            let input = randomValues(rows * 5, seed: 21)
            // A nudge of epsilon must not carry a ReLU input across its kink at 0, where the
            // derivative jumps: pick parameters whose pre-activations all keep clear of it.
            var seed: UInt64 = 22
            var parameters = randomValues(layer.parameterCount, seed: seed)
            while activation == .relu && minimumPreactivation(layer, input, parameters, rows) < 0.1 {
                seed += 1
                parameters = randomValues(layer.parameterCount, seed: seed)
            }
            let weights = randomValues(rows * 3, seed: 23)

            func loss(input: [Float], parameters: [Float]) -> Double {
                var output = [Float](repeating: 0, count: rows * 3)
                layer.forward(input: input, rows: rows, parameters: parameters, output: &output)
                return zip(output, weights).reduce(0.0) { $0 + Double($1.0 * $1.1) }
            }

            var output = [Float](repeating: 0, count: rows * 3)
            layer.forward(input: input, rows: rows, parameters: parameters, output: &output)
            var outputGradient = weights
            activation.backward(output: output, gradient: &outputGradient, rows: rows, columns: 3)
            var parameterGradient = [Float](repeating: .nan, count: layer.parameterCount)
            var inputGradient = [Float](repeating: .nan, count: rows * 5)
            layer.backward(input: input, rows: rows, parameters: parameters, outputGradient: outputGradient,
                           parameterGradient: &parameterGradient, inputGradient: &inputGradient)

            let numericParameters = numericGradient(of: parameters) { loss(input: input, parameters: $0) }
            let numericInput = numericGradient(of: input) { loss(input: $0, parameters: parameters) }
            XCTAssertLessThan(maximumRelativeError(parameterGradient, numericParameters), 5e-3, "\(activation) parameters")
            XCTAssertLessThan(maximumRelativeError(inputGradient, numericInput), 5e-3, "\(activation) inputs")
        }
    }

    private func minimumPreactivation(_ layer: Dense, _ input: [Float], _ parameters: [Float], _ rows: Int) -> Float {
        let linear = Dense(inputSize: layer.inputSize, outputSize: layer.outputSize, activation: .linear)
        var z = [Float](repeating: 0, count: rows * layer.outputSize)
        linear.forward(input: input, rows: rows, parameters: parameters, output: &z)
        return z.map { abs($0) }.min()!
    }

    func testCrossEntropyBackwardMatchesFiniteDifferences() {
        let rows = 3, classes = 4
        let labels: [UInt8] = [2, 0, 3]
        // Valid probabilities, away from the clip.
        var probabilities = randomValues(rows * classes, seed: 31).map { abs($0) + 0.2 }
        Activation.softmax.forward(&probabilities, rows: rows, columns: classes)
        var gradient = [Float](repeating: 0, count: rows * classes)
        CategoricalCrossEntropy.backward(probabilities: probabilities, labels: labels, rows: rows,
                                         classes: classes, gradient: &gradient)
        let numeric = numericGradient(of: probabilities, epsilon: 1e-3) {
            CategoricalCrossEntropy.lossSum(probabilities: $0, labels: labels, rows: rows, classes: classes)
        }
        XCTAssertLessThan(maximumRelativeError(gradient, numeric), 5e-3)
    }

    /// The fused softmax + cross-entropy backward equals the chained one and finite differences.
    func testFusedSoftmaxCrossEntropyBackward() {
        let rows = 3, classes = 4
        let labels: [UInt8] = [1, 3, 0]
        let logits = randomValues(rows * classes, seed: 41, scale: 3)
        func loss(_ z: [Float]) -> Double {
            var p = z
            Activation.softmax.forward(&p, rows: rows, columns: classes)
            return CategoricalCrossEntropy.lossSum(probabilities: p, labels: labels, rows: rows, classes: classes)
        }
        var p = logits
        Activation.softmax.forward(&p, rows: rows, columns: classes)
        var fused = [Float](repeating: 0, count: rows * classes)
        CategoricalCrossEntropy.softmaxBackward(probabilities: p, labels: labels, rows: rows, classes: classes, gradient: &fused)
        var chained = [Float](repeating: 0, count: rows * classes)
        CategoricalCrossEntropy.backward(probabilities: p, labels: labels, rows: rows, classes: classes, gradient: &chained)
        Activation.softmax.backward(output: p, gradient: &chained, rows: rows, columns: classes)
        for (a, b) in zip(fused, chained) { XCTAssertEqual(a, b, accuracy: 1e-5) }
        XCTAssertLessThan(maximumRelativeError(fused, numericGradient(of: logits, epsilon: 1e-2, loss: loss)), 3e-3)
    }

    func testLossClipsAndAccuracyCounts() {
        let probabilities: [Float] = [0, 1, 0.7, 0.3]
        let loss = CategoricalCrossEntropy.lossSum(probabilities: probabilities, labels: [0, 0], rows: 2, classes: 2)
        XCTAssertEqual(loss, -log(Double(CategoricalCrossEntropy.clip)) - log(0.7), accuracy: 1e-4)
        XCTAssertEqual(CategoricalCrossEntropy.correctCount(probabilities: probabilities, labels: [1, 0], rows: 2, classes: 2), 2)
        XCTAssertEqual(CategoricalCrossEntropy.correctCount(probabilities: probabilities, labels: [0, 1], rows: 2, classes: 2), 0)
    }
}
