import NeuralNet
import XCTest

/// Adam, L2 regularisation and dropout: hand-computed steps and finite differences.
final class RegularizationTests: XCTestCase {
    /// Two Adam steps on two parameters, against values worked out by hand.
    func testAdamAgainstHandComputedValues() {
        var adam = Adam(parameterCount: 2, learningRate: 0.1, decay: 0.5, beta1: 0.5, beta2: 0.75, epsilon: 0)
        var parameters: [Float] = [1, -2]
        // Step 1 (t = 1, lr 0.1): mean gradient (2, -1) (sum over 2 samples: (4, -2)).
        // m = 0.5·g = (1, -0.5); v = 0.25·g² = (1, 0.25); m̂ = m/0.5 = g; v̂ = v/0.25 = g²;
        // the update is lr · g/|g| = 0.1 · sign(g).
        var gradient: [Float] = [4, -2]
        adam.step(parameters: &parameters, gradientSum: gradient, sampleCount: 2)
        XCTAssertEqual(parameters[0], 0.9, accuracy: 1e-6)
        XCTAssertEqual(parameters[1], -1.9, accuracy: 1e-6)
        XCTAssertEqual(adam.iteration, 1)
        XCTAssertEqual(adam.currentLearningRate, 0.1 / 1.5, accuracy: 1e-7)
        // Step 2 (t = 2, lr 0.1/1.5): mean gradient (1, 1).
        // m = (0.5·1 + 0.5·1, 0.5·-0.5 + 0.5·1) = (1, 0.25); m̂ = m / 0.75.
        // v = (0.75·1 + 0.25·1, 0.75·0.25 + 0.25·1) = (1, 0.4375); v̂ = v / (1 − 0.5625).
        gradient = [2, 2]
        adam.step(parameters: &parameters, gradientSum: gradient, sampleCount: 2)
        let lr = 0.1 / 1.5
        XCTAssertEqual(Double(parameters[0]), 0.9 - lr * (1 / 0.75) / (1 / 0.4375).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(Double(parameters[1]), -1.9 - lr * (0.25 / 0.75) / (0.4375 / 0.4375).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(adam.firstMoment, [1, 0.25])
        XCTAssertEqual(adam.secondMoment[1], 0.4375, accuracy: 1e-7)
    }

    func testOptimizerStateRoundTrips() {
        var optimizer = Optimizer.adam(Adam(parameterCount: 3, learningRate: 0.01))
        var parameters: [Float] = [1, 2, 3]
        optimizer.step(parameters: &parameters, gradientSum: [1, -1, 0.5], sampleCount: 1)
        var copy = Optimizer.adam(Adam(parameterCount: 3, learningRate: 0.01))
        copy.state = optimizer.state
        copy.iteration = optimizer.iteration
        XCTAssertEqual(copy, optimizer)
        XCTAssertEqual(optimizer.state.count, 2)
        XCTAssertEqual(Optimizer.sgd(SGD(parameterCount: 3, learningRate: 0.1)).state.count, 1)
    }

    /// The L2 term's gradient, added to the data gradient, matches finite differences of
    /// data loss plus `B · λ/2 · Σw²` (the gradient is a sum over the B samples), and it
    /// leaves the biases alone.
    func testL2GradientMatchesFiniteDifferences() throws {
        let spec = try ModelSpec.mlp(inputSize: 5, hidden: [4], classes: 3)
        let model = Sequential(spec: spec, seed: 3)
        let input = randomValues(4 * 5, seed: 71)
        let labels: [UInt8] = [0, 2, 1, 2]
        let lambda: Float = 0.3
        var (gradient, _) = model.gradientSum(input: input, labels: labels)
        let dataOnly = gradient
        gradient.withUnsafeMutableBufferPointer {
            L2Regularization.addGradient(coefficient: lambda, spec: spec, parameters: model.parameters,
                                         sampleCount: labels.count, to: $0.baseAddress!)
        }
        let original = model.parameters
        let numeric = numericGradient(of: original, epsilon: 2e-3) { parameters in
            model.parameters = parameters
            return model.gradientSum(input: input, labels: labels).statistics.lossSum
                + Double(labels.count) * L2Regularization.penalty(coefficient: lambda, spec: spec, parameters: parameters)
        }
        model.parameters = original
        XCTAssertLessThan(maximumRelativeError(gradient, numeric), 1e-2)
        let biases = (spec.layers[0].weightCount..<spec.layers[0].parameterCount)
        for i in biases { XCTAssertEqual(gradient[i], dataOnly[i]) }
        XCTAssertNotEqual(gradient[0], dataOnly[0])
    }

    /// With the mask fixed by its key, the dropped-out network is a fixed function of the
    /// parameters, and its backward pass matches finite differences.
    func testDropoutGradientMatchesFiniteDifferences() throws {
        let spec = try ModelSpec.mlp(inputSize: 6, hidden: [8, 7], classes: 3)
        // Non-zero biases: a row whose inputs are all dropped must not sit on ReLU's kink at 0.
        let model = Sequential(spec: spec, parameters: randomValues(spec.parameterCount, seed: 12, scale: 0.5))
        model.dropout = Dropout(rate: 0.4, seed: 99)
        let input = randomValues(5 * 6, seed: 81)
        let labels: [UInt8] = [0, 2, 1, 1, 0]
        let key = Dropout.key(step: 17, shard: 2)
        let (gradient, _) = model.gradientSum(input: input, labels: labels, dropoutKey: key)
        let original = model.parameters
        let numeric = numericGradient(of: original, epsilon: 1e-3) { parameters in
            model.parameters = parameters
            return model.gradientSum(input: input, labels: labels, dropoutKey: key).statistics.lossSum
        }
        model.parameters = original
        XCTAssertLessThan(maximumRelativeError(gradient, numeric), 1e-2)

        // Another key draws another mask; no dropout gives a third gradient.
        let other = model.gradientSum(input: input, labels: labels, dropoutKey: Dropout.key(step: 18, shard: 2)).gradient
        XCTAssertNotEqual(other, gradient)
        XCTAssertEqual(model.gradientSum(input: input, labels: labels, dropoutKey: key).gradient, gradient)
    }

    /// About `rate` of the units are dropped, the kept ones scaled by 1/(1 − rate), and the
    /// mask depends only on (seed, key, layer, position).
    func testDropoutMaskStatistics() {
        let dropout = Dropout(rate: 0.25, seed: 5)
        var values = [Float](repeating: 1, count: 100_000)
        values.withUnsafeMutableBufferPointer {
            dropout.apply(to: $0.baseAddress!, rows: 1000, columns: 100, layer: 0, key: Dropout.key(step: 3, shard: 0))
        }
        let dropped = values.filter { $0 == 0 }.count
        XCTAssertEqual(Double(dropped) / Double(values.count), 0.25, accuracy: 0.01)
        XCTAssertTrue(values.allSatisfy { $0 == 0 || abs($0 - 1 / 0.75) < 1e-6 })
        var again = [Float](repeating: 1, count: 100_000)
        again.withUnsafeMutableBufferPointer {
            dropout.apply(to: $0.baseAddress!, rows: 1000, columns: 100, layer: 0, key: Dropout.key(step: 3, shard: 0))
        }
        XCTAssertEqual(again, values)
    }

    /// Evaluation (`forward`, `evaluate`) never drops anything.
    func testForwardIgnoresDropout() throws {
        let spec = try ModelSpec.mlp(inputSize: 4, hidden: [16], classes: 3)
        let model = Sequential(spec: spec, seed: 2)
        let input = randomValues(8, seed: 4)
        let before = Array(UnsafeBufferPointer(start: model.forward(input: input, rows: 2), count: 6))
        model.dropout = Dropout(rate: 0.5, seed: 1)
        let after = Array(UnsafeBufferPointer(start: model.forward(input: input, rows: 2), count: 6))
        XCTAssertEqual(before, after)
    }
}
