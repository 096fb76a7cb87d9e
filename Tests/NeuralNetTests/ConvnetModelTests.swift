import NeuralNet
import XCTest

/// `Sequential` running convolutions, pooling and flatten: the whole model's gradient against
/// finite differences, initialisation, and sums that do not depend on the workspace's past.
final class ConvnetModelTests: XCTestCase {
    private func convnet(input: ImageShape = ImageShape(height: 6, width: 6, channels: 2),
                         hidden: Activation = .sigmoid, poolFirst: Bool = false) throws -> ModelSpec {
        var layers: [Layer] = []
        var shape = input
        if poolFirst {
            let pool = try MaxPool2D(input: shape, size: 2)
            layers.append(.maxPool(pool))
            shape = pool.output
        }
        let conv1 = try Conv2D(input: shape, outputChannels: 3, kernelSize: 3, padding: 1, activation: .tanh)
        let pool = try MaxPool2D(input: conv1.output, size: 2)
        let conv2 = try Conv2D(input: pool.output, outputChannels: 4, kernelSize: 2, activation: .relu)
        layers += [.conv(conv1), .maxPool(pool), .conv(conv2), .flatten(conv2.output),
                   .dense(Dense(inputSize: conv2.outputSize, outputSize: 5, activation: hidden)),
                   .dense(Dense(inputSize: 5, outputSize: 3, activation: .softmax))]
        return try ModelSpec(input: input, layers: layers)
    }

    private func assertGradientMatchesFiniteDifferences(_ model: Sequential, rows: Int, dropoutKey: UInt64 = 0,
                                                        file: StaticString = #filePath, line: UInt = #line) {
        let input = randomValues(rows * model.spec.inputSize, seed: 71)
        let labels = (0..<rows).map { UInt8($0 % model.spec.outputSize) }
        let (gradient, statistics) = model.gradientSum(input: input, labels: labels, dropoutKey: dropoutKey)
        XCTAssertEqual(statistics.sampleCount, rows, file: file, line: line)
        let original = model.parameters
        let numeric = numericGradient(of: original, epsilon: 2e-3) { parameters in
            model.parameters = parameters
            return model.gradientSum(input: input, labels: labels, dropoutKey: dropoutKey).statistics.lossSum
        }
        model.parameters = original
        XCTAssertLessThan(maximumRelativeError(gradient, numeric), 1e-2, "\(model.spec)", file: file, line: line)
    }

    /// Every parameter of conv → pool → conv → flatten → dense → dense.
    func testConvnetGradientMatchesFiniteDifferences() throws {
        assertGradientMatchesFiniteDifferences(Sequential(spec: try convnet(), seed: 5), rows: 3)
    }

    /// A pooling layer before any parameter (backward stops at the first conv), and dropout
    /// on the dense hidden layer, whose masks are fixed by the key.
    func testPoolingFirstAndDropoutKeepTheGradientExact() throws {
        let spec = try convnet(input: ImageShape(height: 8, width: 8, channels: 1), hidden: .relu, poolFirst: true)
        XCTAssertTrue(spec.allowsDropout)
        XCTAssertEqual(spec.firstTrainableLayer, 1)
        let model = Sequential(spec: spec, seed: 6)
        model.dropout = Dropout(rate: 0.3, seed: 9)
        assertGradientMatchesFiniteDifferences(model, rows: 2, dropoutKey: 17)
    }

    /// A convolution is computed in blocks of samples fixed by the layer alone: a model that
    /// has seen a large batch gives the same bits for a small one as a fresh model, and a
    /// batch's gradient is the sum of its samples'.
    func testGradientBitsDoNotDependOnEarlierBatches() throws {
        let spec = try convnet()
        let fresh = Sequential(spec: spec, seed: 3), used = Sequential(spec: spec, seed: 3)
        _ = used.gradientSum(input: randomValues(40 * spec.inputSize, seed: 2), labels: [UInt8](repeating: 1, count: 40))
        let input = randomValues(4 * spec.inputSize, seed: 12)
        let labels: [UInt8] = [0, 1, 2, 1]
        let whole = fresh.gradientSum(input: input, labels: labels).gradient
        XCTAssertEqual(used.gradientSum(input: input, labels: labels).gradient, whole)
        var sum = [Float](repeating: 0, count: spec.parameterCount)
        for row in 0..<4 {
            let one = fresh.gradientSum(input: Array(input[(row * spec.inputSize)..<((row + 1) * spec.inputSize)]),
                                        labels: [labels[row]]).gradient
            for i in sum.indices { sum[i] += one[i] }
        }
        for i in sum.indices { XCTAssertEqual(sum[i], whole[i], accuracy: 1e-4) }
    }

    /// He-normal for a ReLU convolution: variance 2 / patch size; biases zero; the layout is
    /// each layer's weights then biases, in order.
    func testConvolutionInitialisationUsesThePatchAsFanIn() throws {
        let input = ImageShape(height: 12, width: 12, channels: 8)
        let conv = try Conv2D(input: input, outputChannels: 64, kernelSize: 5, padding: 2, activation: .relu)
        let spec = try ModelSpec(input: input, layers: [
            .conv(conv), .flatten(conv.output), .dense(Dense(inputSize: conv.outputSize, outputSize: 2, activation: .softmax)),
        ])
        XCTAssertEqual(spec.parameterOffsets, [0, 200 * 64 + 64, 200 * 64 + 64])
        XCTAssertEqual(spec.parameterCount, 200 * 64 + 64 + conv.outputSize * 2 + 2)
        let model = Sequential(spec: spec, seed: 1)
        let weights = model.parameters[0..<conv.weightCount]
        let variance = weights.reduce(0.0) { $0 + Double($1 * $1) } / Double(weights.count)
        XCTAssertEqual(variance, 2.0 / 200, accuracy: 0.05 * 2.0 / 200)
        XCTAssertTrue(model.parameters[conv.weightCount..<conv.parameterCount].allSatisfy { $0 == 0 })
    }

    /// L2 decays every weight, convolutions' included, and no bias.
    func testL2CoversConvolutionWeightsAndNoBiases() throws {
        let spec = try convnet()
        let model = Sequential(spec: spec, seed: 8)
        let weightIndices = zip(spec.layers, spec.parameterOffsets).flatMap { $1..<($1 + $0.weightCount) }
        XCTAssertEqual(weightIndices.count, spec.layers.reduce(0) { $0 + $1.weightCount })
        let expected = 0.5 * 0.1 * weightIndices.reduce(0.0) { $0 + Double(model.parameters[$1]) * Double(model.parameters[$1]) }
        XCTAssertEqual(L2Regularization.penalty(coefficient: 0.1, spec: spec, parameters: model.parameters), expected, accuracy: expected * 1e-6)
        var gradient = [Float](repeating: 0, count: spec.parameterCount)
        gradient.withUnsafeMutableBufferPointer {
            L2Regularization.addGradient(coefficient: 0.1, spec: spec, parameters: model.parameters, sampleCount: 2, to: $0.baseAddress!)
        }
        let weights = Set(weightIndices)
        for i in gradient.indices {
            XCTAssertEqual(gradient[i], weights.contains(i) ? 0.2 * model.parameters[i] : 0, accuracy: 1e-7)
        }
    }

    /// The network: 454,922 parameters, described as it is typed.
    func testTheMNISTConvnetHasTheExpectedSize() throws {
        let spec = try ModelSpec.parse("conv5x32,pool2,conv5x64,pool2,dense128,dense10",
                                       input: ImageShape(height: 28, width: 28, channels: 1), classes: 10)
        XCTAssertEqual(spec.parameterCount, 454_922)
        XCTAssertEqual(spec.description,
                       "28x28x1-conv5x32(relu)-pool2-conv5x64(relu)-pool2-flatten-128(relu)-10(softmax)")
    }
}

/// What a user types after `--model`, and the one-line errors for what cannot be built.
final class ModelDescriptionTests: XCTestCase {
    private let mnist = ImageShape(height: 28, width: 28, channels: 1)

    func testTypedModelsBuildTheLayersTheyName() throws {
        let spec = try ModelSpec.parse("conv3x4, pool2 ,dense10", input: mnist, classes: 10)
        XCTAssertEqual(spec.description, "28x28x1-conv3x4(relu)-pool2-flatten-10(softmax)")
        guard case let .conv(conv) = spec.layers[0] else { return XCTFail("\(spec)") }
        XCTAssertEqual([conv.kernelSize, conv.stride, conv.padding, conv.outputChannels], [3, 1, 1, 4])
        // Dense layers alone over an image: flattened first, as an MLP of the same widths.
        XCTAssertEqual(try ModelSpec.parse("dense16,dense10", input: mnist, classes: 10).description,
                       "28x28x1-flatten-16(relu)-10(softmax)")
        XCTAssertEqual(try ModelSpec.parse("pool2,flatten,dense10", input: mnist, classes: 10).layers.count, 3)
    }

    func testUntypableModelsNameTheLayerAndTheReason() {
        let cases = [
            ("conv5x32,pool2", "'pool2': the last layer must be dense"),
            ("conv5x32,dense12", "'dense12': the last layer gives the class scores, so it needs 10 units"),
            ("conv5,dense10", "'conv5': write convKxC"),
            ("conv0x3,dense10", "'conv0x3': write convKxC"),
            ("conv5x32,pool64,dense10", "'pool64': a 64x64 pooling does not fit a 28x28x32 input"),
            ("dense0,dense10", "'dense0': write denseN"),
            ("pool,dense10", "'pool': write poolP"),
            ("lstm8,dense10", "'lstm8': unknown layer"),
            ("dense8,conv3x3,dense10", "'conv3x3': a convolution needs an image"),
            ("conv3x3,,dense10", "'': unknown layer"),
            ("conv255x65536,dense10", "--model: 28x28x1-conv255x65536(relu)-flatten-10(softmax): layer 0 would hold more than"),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try ModelSpec.parse(text, input: mnist, classes: 10)) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(text): \(error)")
            }
        }
    }
}
