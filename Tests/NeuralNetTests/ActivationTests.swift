import NeuralNet
import XCTest

final class ActivationTests: XCTestCase {
    let rows = 3, columns = 4

    /// L = Σ w ⊙ f(z) for fixed random w: dL/dz from `backward` must match finite differences.
    func testBackwardMatchesFiniteDifferencesForEveryActivation() {
        let weights = randomValues(rows * columns, seed: 11)
        for activation in Activation.allCases {
            // Keep ReLU inputs away from its kink at 0, where the derivative jumps.
            var z = randomValues(rows * columns, seed: 12, scale: 2)
            if activation == .relu { z = z.map { abs($0) < 0.05 ? $0 + 0.2 : $0 } }
            func loss(_ input: [Float]) -> Double {
                var output = input
                activation.forward(&output, rows: rows, columns: columns)
                return zip(output, weights).reduce(0.0) { $0 + Double($1.0 * $1.1) }
            }
            var output = z
            activation.forward(&output, rows: rows, columns: columns)
            var gradient = weights
            activation.backward(output: output, gradient: &gradient, rows: rows, columns: columns)
            let numeric = numericGradient(of: z, epsilon: 1e-2, loss: loss)
            XCTAssertLessThan(maximumRelativeError(gradient, numeric), 2e-3, "\(activation)")
        }
    }

    func testSoftmaxIsStableForLargeLogits() {
        var logits: [Float] = [1000, 1001, 1002, -1000]
        Activation.softmax.forward(&logits, rows: 1, columns: 4)
        XCTAssertTrue(logits.allSatisfy { $0.isFinite })
        XCTAssertEqual(logits.reduce(0, +), 1, accuracy: 1e-6)
        XCTAssertEqual(logits[2], 1 / (1 + expf(-1) + expf(-2)), accuracy: 1e-6)
        XCTAssertEqual(logits[3], 0)
    }

    func testForwardValues() {
        var values: [Float] = [-2, 0, 3]
        Activation.relu.forward(&values, rows: 1, columns: 3)
        XCTAssertEqual(values, [0, 0, 3])
        values = [0]
        Activation.sigmoid.forward(&values, rows: 1, columns: 1)
        XCTAssertEqual(values, [0.5])
        values = [0.5]
        Activation.tanh.forward(&values, rows: 1, columns: 1)
        XCTAssertEqual(values[0], tanhf(0.5), accuracy: 1e-7)
        XCTAssertEqual(Activation(name: "ReLU"), .relu)
        XCTAssertNil(Activation(name: "swish"))
    }

    /// ReLU's bit-mask loops compile to vectors and a scalar tail: every value, in either
    /// part and whatever its kind (signed zeros, NaN, infinities), must come out as the
    /// plain definition gives it, `max(z, 0)` forward and `a > 0 ? g : 0` backward.
    func testReLUVectorLoopsMatchTheScalarDefinition() {
        let special: [Float] = [-0.0, 0, .nan, -.nan, .infinity, -.infinity, .leastNonzeroMagnitude, -1e-30]
        let z = special + randomValues(29, seed: 21, scale: 3)  // 37: not a multiple of any vector width
        let g = randomValues(z.count, seed: 22)
        var output = z
        Activation.relu.forward(&output, rows: 1, columns: z.count)
        var gradient = g
        Activation.relu.backward(output: output, gradient: &gradient, rows: 1, columns: z.count)
        for i in z.indices {
            let expected = max(z[i], 0)
            XCTAssertEqual(output[i].bitPattern, expected.bitPattern, "forward at \(i): z = \(z[i])")
            let expectedGradient: Float = expected > 0 ? g[i] : 0
            XCTAssertEqual(gradient[i].bitPattern, expectedGradient.bitPattern, "backward at \(i): a = \(output[i])")
        }
    }
}
