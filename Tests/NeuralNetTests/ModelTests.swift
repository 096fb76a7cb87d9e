import NeuralNet
import XCTest

final class ModelTests: XCTestCase {
    /// The whole model's backward pass against finite differences, on every parameter,
    /// for a net with every hidden activation and both loss paths (fused and chained).
    func testModelGradientMatchesFiniteDifferences() throws {
        for output in [Activation.softmax, .sigmoid] {
            let spec = try ModelSpec(inputSize: 6, layers: [
                Dense(inputSize: 6, outputSize: 5, activation: .tanh),
                Dense(inputSize: 5, outputSize: 4, activation: .sigmoid),
                Dense(inputSize: 4, outputSize: 4, activation: .relu),
                Dense(inputSize: 4, outputSize: 3, activation: output),
            ])
            let model = Sequential(spec: spec, seed: 5)
            let rows = 5
            let input = randomValues(rows * 6, seed: 51)
            let labels: [UInt8] = [0, 2, 1, 1, 0]
            let (gradient, statistics) = model.gradientSum(input: input, labels: labels)
            XCTAssertEqual(statistics.sampleCount, rows)

            let original = model.parameters
            let numeric = numericGradient(of: original, epsilon: 2e-3) { parameters in
                model.parameters = parameters
                return model.gradientSum(input: input, labels: labels).statistics.lossSum
            }
            model.parameters = original
            XCTAssertLessThan(maximumRelativeError(gradient, numeric), 1e-2, "output \(output)")
        }
    }

    /// A pass reading the parameters from outside memory gives the bits of a pass reading
    /// the model's own array; changing the array then changes nothing.
    func testParameterSourceReplacesTheParameterArray() throws {
        let spec = try ModelSpec.mlp(inputSize: 5, hidden: [4], classes: 3)
        let model = Sequential(spec: spec, seed: 4)
        let input = randomValues(10, seed: 8)
        let expected = model.gradientSum(input: input, labels: [1, 2]).gradient
        let outside = model.parameters
        try outside.withUnsafeBufferPointer { pointer in
            model.parameterSource = pointer.baseAddress!
            model.parameters = Array(repeating: 0, count: spec.parameterCount)
            XCTAssertEqual(model.gradientSum(input: input, labels: [1, 2]).gradient, expected)
            model.parameterSource = nil
            XCTAssertNotEqual(model.gradientSum(input: input, labels: [1, 2]).gradient, expected)
            _ = try XCTUnwrap(pointer.baseAddress)
        }
    }

    /// Pixels scaled ahead (as a worker does while it waits for weights) give the bits of
    /// a pass that scales them itself, and are the pixels divided by 255.
    func testInputScaledAheadGivesTheSamePass() throws {
        let spec = try ModelSpec.mlp(inputSize: 6, hidden: [4], classes: 3)
        let model = Sequential(spec: spec, seed: 2)
        let pixels: [UInt8] = [0, 255, 17, 128, 3, 99, 250, 1, 64, 200, 5, 77]
        let labels: [UInt8] = [2, 0]
        var direct = [Float](repeating: 0, count: spec.parameterCount)
        var ahead = [Float](repeating: 0, count: spec.parameterCount)
        let (first, second) = pixels.withUnsafeBufferPointer { p in
            labels.withUnsafeBufferPointer { y in
                let first = direct.withUnsafeMutableBufferPointer {
                    model.computeGradientSum(pixels: p.baseAddress!, labels: y.baseAddress!, rows: 2, gradient: $0.baseAddress!, dropoutKey: 3)
                }
                let input = model.scaleInput(pixels: p.baseAddress!, rows: 2)
                XCTAssertEqual(Array(UnsafeBufferPointer(start: input, count: pixels.count)), pixels.map { Float($0) * (1 / 255) })
                let second = ahead.withUnsafeMutableBufferPointer {
                    model.computeGradientSum(input: input, labels: y.baseAddress!, rows: 2, gradient: $0.baseAddress!, dropoutKey: 3)
                }
                return (first, second)
            }
        }
        XCTAssertEqual(ahead, direct)
        XCTAssertEqual(first, second)
    }

    func testGradientIsASumOverSamples() throws {
        let spec = try ModelSpec.mlp(inputSize: 4, hidden: [3], classes: 2)
        let model = Sequential(spec: spec, seed: 9)
        let input = randomValues(8, seed: 61)
        let both = model.gradientSum(input: input, labels: [0, 1]).gradient
        let first = model.gradientSum(input: Array(input[0..<4]), labels: [0]).gradient
        let second = model.gradientSum(input: Array(input[4..<8]), labels: [1]).gradient
        for i in both.indices { XCTAssertEqual(both[i], first[i] + second[i], accuracy: 1e-5) }
    }

    func testSeededInitialisationIsReproducible() throws {
        let spec = try ModelSpec.mlp(inputSize: 784, hidden: [128], classes: 10)
        XCTAssertEqual(spec.parameterCount, 784 * 128 + 128 + 128 * 10 + 10)
        let a = Sequential(spec: spec, seed: 42), b = Sequential(spec: spec, seed: 42), c = Sequential(spec: spec, seed: 43)
        XCTAssertEqual(a.parameters, b.parameters)
        XCTAssertNotEqual(a.parameters, c.parameters)
        // He initialisation: the ReLU layer's weights have variance 2 / fan-in.
        let weights = a.parameters[0..<(784 * 128)]
        let variance = weights.reduce(0.0) { $0 + Double($1 * $1) } / Double(weights.count)
        XCTAssertEqual(variance, 2.0 / 784, accuracy: 0.05 * 2.0 / 784)
        XCTAssertTrue(a.parameters[(784 * 128)..<(784 * 128 + 128)].allSatisfy { $0 == 0 })
    }

    func testSpecRejectsMismatchedLayers() {
        XCTAssertThrowsError(try ModelSpec(inputSize: 4, layers: [Dense(inputSize: 5, outputSize: 2, activation: .softmax)]))
        XCTAssertThrowsError(try ModelSpec(inputSize: 4, layers: []))
        XCTAssertThrowsError(try ModelSpec.mlp(inputSize: 4, hidden: [0], classes: 2))
        XCTAssertEqual(try ModelSpec.mlp(inputSize: 784, hidden: [128], classes: 10).description, "784-128(relu)-10(softmax)")
        XCTAssertEqual(try ModelSpec.mlp(inputSize: 784, hidden: [128], classes: 10).trainingFlopsPerSample, 409_088)
    }

    /// The scaling loop compiles to vectors with a scalar tail and a scalar path for
    /// overlapping buffers; every byte value must give exactly `Float(p) * (1 / 255)`.
    func testPixelScalingGivesEveryByteItsExactValue() throws {
        let spec = try ModelSpec(inputSize: 37, layers: [Dense(inputSize: 37, outputSize: 2, activation: .softmax)])
        let model = Sequential(spec: spec, seed: 1)
        let rows = 9  // 333 values: not a multiple of any vector width
        let pixels = (0..<(rows * 37)).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 3) }
        XCTAssertEqual(Set(pixels).count, 256)
        let scaled = pixels.withUnsafeBufferPointer { model.scaleInput(pixels: $0.baseAddress!, rows: rows) }
        let scale: Float = 1 / 255
        for (i, pixel) in pixels.enumerated() {
            XCTAssertEqual(scaled[i].bitPattern, (Float(pixel) * scale).bitPattern, "pixel \(pixel) at \(i)")
        }
    }
}

final class SGDTests: XCTestCase {
    /// Two steps worked by hand: lr0 0.5, decay 0.25, momentum 0.9, a gradient summed over
    /// 2 samples.
    func testDecayAndMomentumAgainstHandComputedValues() {
        var sgd = SGD(parameterCount: 2, learningRate: 0.5, decay: 0.25, momentum: 0.9)
        var parameters: [Float] = [1, -2]
        XCTAssertEqual(sgd.currentLearningRate, 0.5)  // step 0 uses the full rate
        sgd.step(parameters: &parameters, gradientSum: [2, -4], sampleCount: 2)
        // mean gradient (1, -2); v = -0.5·g = (-0.5, 1); p = (0.5, -1)
        XCTAssertEqual(parameters[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(parameters[1], -1, accuracy: 1e-6)
        XCTAssertEqual(sgd.iteration, 1)
        XCTAssertEqual(sgd.currentLearningRate, 0.4, accuracy: 1e-7)  // 0.5 / (1 + 0.25)
        sgd.step(parameters: &parameters, gradientSum: [2, 0], sampleCount: 2)
        // v = 0.9·(-0.5, 1) − 0.4·(1, 0) = (-0.85, 0.9); p = (-0.35, -0.1)
        XCTAssertEqual(sgd.velocity[0], -0.85, accuracy: 1e-6)
        XCTAssertEqual(sgd.velocity[1], 0.9, accuracy: 1e-6)
        XCTAssertEqual(parameters[0], -0.35, accuracy: 1e-6)
        XCTAssertEqual(parameters[1], -0.1, accuracy: 1e-6)
        XCTAssertEqual(sgd.currentLearningRate, 0.5 / 1.5, accuracy: 1e-7)
    }
}

final class ModelFileTests: XCTestCase {
    func testRoundTripAndRejections() throws {
        let spec = try ModelSpec.mlp(inputSize: 5, hidden: [4, 3], classes: 2)
        let model = Sequential(spec: spec, seed: 3)
        let bytes = ModelFile.encode(spec: spec, parameters: model.parameters)
        let decoded = try ModelFile.decode(bytes)
        XCTAssertEqual(decoded.spec, spec)
        XCTAssertEqual(decoded.parameters, model.parameters)

        XCTAssertThrowsError(try ModelFile.decode(Array(bytes.dropLast(7)), path: "m.bin")) { error in
            XCTAssertTrue("\(error)".hasPrefix("m.bin: checksum mismatch"), "\(error)")
        }
        var corrupted = bytes
        corrupted[40] ^= 1
        XCTAssertThrowsError(try ModelFile.decode(corrupted, path: "m.bin")) { error in
            XCTAssertTrue("\(error)".contains("checksum"), "\(error)")
        }
        XCTAssertThrowsError(try ModelFile.decode(Array("not a model at all, really not one".utf8) + [UInt8](repeating: 0, count: 40))) { error in
            XCTAssertTrue("\(error)".contains("magic"), "\(error)")
        }
        XCTAssertThrowsError(try ModelFile.decode([1, 2, 3]))

        let path = NSTemporaryDirectory() + "model-\(getpid()).bin"
        defer { unlink(path) }
        try ModelFile.save(spec: spec, parameters: model.parameters, to: path)
        XCTAssertEqual(try ModelFile.load(from: path).parameters, model.parameters)
        XCTAssertThrowsError(try ModelFile.load(from: path + ".missing"))
    }
}
