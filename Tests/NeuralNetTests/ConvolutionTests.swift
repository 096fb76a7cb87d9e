import NeuralNet
import XCTest

final class ConvolutionTests: XCTestCase {
    private let shapes: [(ImageShape, channels: Int, kernel: Int, stride: Int, padding: Int)] = [
        (ImageShape(height: 5, width: 5, channels: 1), 2, 3, 1, 1),
        (ImageShape(height: 6, width: 5, channels: 2), 3, 3, 2, 0),
        (ImageShape(height: 4, width: 7, channels: 3), 2, 2, 1, 1),
        (ImageShape(height: 5, width: 5, channels: 2), 2, 5, 1, 2),
        // Kernel rows of at least `Conv2D.minimumKernelRowValues` values: unfolded by kernel rows.
        (ImageShape(height: 5, width: 4, channels: 8), 3, 5, 1, 2),
        (ImageShape(height: 4, width: 5, channels: 11), 2, 3, 1, 1),
        (ImageShape(height: 6, width: 6, channels: 16), 2, 3, 1, 0),
    ]

    func testBothWaysOfUnfoldingAreCovered() throws {
        let unfolded = try shapes.map { input, channels, kernel, stride, padding in
            try Conv2D(input: input, outputChannels: channels, kernelSize: kernel, stride: stride,
                       padding: padding, activation: .linear).unfoldsKernelRows
        }
        XCTAssertEqual(Set(unfolded), [false, true])
        // The MNIST convnet's second layer (5×5 over 32 channels) unfolds by kernel rows.
        let second = try Conv2D(input: ImageShape(height: 14, width: 14, channels: 32), outputChannels: 64,
                                kernelSize: 5, padding: 2, activation: .relu)
        XCTAssertTrue(second.unfoldsKernelRows)
        XCTAssertEqual(second.scratchCount(rows: 1), 14 * 14 * 5 * 32)
    }

    /// The im2col + sgemm forward pass against a direct seven-loop convolution.
    func testForwardMatchesDirectConvolution() throws {
        for (input, channels, kernel, stride, padding) in shapes {
            let layer = try Conv2D(input: input, outputChannels: channels, kernelSize: kernel,
                                   stride: stride, padding: padding, activation: .linear)
            let rows = 3
            let images = randomValues(rows * layer.inputSize, seed: 41)
            let parameters = randomValues(layer.parameterCount, seed: 42)
            for capacity in [layer.scratchCount(rows: 1), layer.scratchCount(rows: rows)] {
                let output = forward(layer, images, rows, parameters, capacity: capacity)
                let expected = directConvolution(layer, images, rows, parameters)
                let error = zip(output, expected).map { abs(Double($0) - $1) }.max()!
                XCTAssertLessThan(error, 1e-4, "\(input) k\(kernel) s\(stride) p\(padding) capacity \(capacity)")
            }
        }
    }

    /// L = Σ w ⊙ conv(x): dweights, dbiases and dinputs against finite differences, with the
    /// scratch holding one sample (blocks) and the whole batch.
    func testBackwardMatchesFiniteDifferences() throws {
        for (input, channels, kernel, stride, padding) in shapes {
            for activation in [Activation.linear, .tanh] {
                let layer = try Conv2D(input: input, outputChannels: channels, kernelSize: kernel,
                                       stride: stride, padding: padding, activation: activation)
                let rows = 2
                let images = randomValues(rows * layer.inputSize, seed: 51)
                let parameters = randomValues(layer.parameterCount, seed: 52, scale: 0.5)
                let weights = randomValues(rows * layer.outputSize, seed: 53)
                for capacity in [layer.scratchCount(rows: 1), layer.scratchCount(rows: rows)] {
                    func loss(_ images: [Float], _ parameters: [Float]) -> Double {
                        let output = forward(layer, images, rows, parameters, capacity: capacity)
                        return zip(output, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                    }
                    let output = forward(layer, images, rows, parameters, capacity: capacity)
                    var outputGradient = weights
                    activation.backward(output: output, gradient: &outputGradient,
                                        rows: rows * layer.output.height * layer.output.width,
                                        columns: layer.outputChannels)
                    var parameterGradient = [Float](repeating: .nan, count: layer.parameterCount)
                    var inputGradient = [Float](repeating: .nan, count: rows * layer.inputSize)
                    var scratch = [Float](repeating: .nan, count: capacity)
                    layer.backward(input: images, rows: rows, parameters: parameters,
                                   outputGradient: outputGradient, parameterGradient: &parameterGradient,
                                   inputGradient: &inputGradient, scratch: &scratch, scratchCapacity: capacity)
                    let label = "\(input) k\(kernel) s\(stride) p\(padding) \(activation) capacity \(capacity)"
                    let numericParameters = numericGradient(of: parameters) { loss(images, $0) }
                    let numericInputs = numericGradient(of: images) { loss($0, parameters) }
                    XCTAssertLessThan(maximumRelativeError(parameterGradient, numericParameters), 5e-3, label)
                    XCTAssertLessThan(maximumRelativeError(inputGradient, numericInputs), 5e-3, label)
                }
            }
        }
    }

    func testShapesThatDoNotFitAreRefused() {
        let small = ImageShape(height: 3, width: 3, channels: 1)
        XCTAssertThrowsError(try Conv2D(input: small, outputChannels: 1, kernelSize: 5, activation: .relu))
        XCTAssertThrowsError(try Conv2D(input: small, outputChannels: 0, kernelSize: 3, activation: .relu))
        XCTAssertThrowsError(try Conv2D(input: small, outputChannels: 1, kernelSize: 3, stride: 0, activation: .relu))
        XCTAssertThrowsError(try Conv2D(input: small, outputChannels: 1, kernelSize: 3, padding: 3, activation: .relu))
        XCTAssertThrowsError(try MaxPool2D(input: small, size: 4))
        XCTAssertEqual(try Conv2D(input: ImageShape(height: 28, width: 28, channels: 1), outputChannels: 32,
                                  kernelSize: 5, padding: 2, activation: .relu).output,
                       ImageShape(height: 28, width: 28, channels: 32))
    }

    /// Each output is its window's maximum; the gradient goes to that one input.
    func testMaxPoolForwardAndBackward() throws {
        let layer = try MaxPool2D(input: ImageShape(height: 5, width: 4, channels: 2), size: 2)
        XCTAssertEqual(layer.output, ImageShape(height: 2, width: 2, channels: 2))
        let rows = 2
        // Distinct values, so that a nudge of epsilon never changes which one is the maximum.
        var generator = SeededGenerator(seed: 61)
        let images = (0..<(rows * layer.inputSize)).map { Float($0) * 0.1 }.shuffled(using: &generator)
        var output = [Float](repeating: .nan, count: rows * layer.outputSize)
        var argmax = [Int32](repeating: -1, count: rows * layer.outputSize)
        layer.forward(input: images, rows: rows, output: &output, argmax: &argmax)
        for sample in 0..<rows {
            for y in 0..<2 {
                for x in 0..<2 {
                    for c in 0..<2 {
                        let window = (0..<2).flatMap { dy in (0..<2).map { dx in
                            images[sample * layer.inputSize + ((2 * y + dy) * 4 + 2 * x + dx) * 2 + c] } }
                        XCTAssertEqual(output[sample * layer.outputSize + (y * 2 + x) * 2 + c], window.max())
                    }
                }
            }
        }
        let weights = randomValues(rows * layer.outputSize, seed: 62)
        var inputGradient = [Float](repeating: .nan, count: rows * layer.inputSize)
        layer.backward(rows: rows, outputGradient: weights, argmax: argmax, inputGradient: &inputGradient)
        let numeric = numericGradient(of: images, epsilon: 1e-3) { values in
            var output = [Float](repeating: 0, count: rows * layer.outputSize)
            var mask = [Int32](repeating: 0, count: rows * layer.outputSize)
            layer.forward(input: values, rows: rows, output: &output, argmax: &mask)
            return zip(output, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        XCTAssertLessThan(maximumRelativeError(inputGradient, numeric), 5e-3)
        XCTAssertEqual(inputGradient.filter { $0 != 0 }.count, rows * layer.outputSize)
    }

    private func forward(_ layer: Conv2D, _ images: [Float], _ rows: Int, _ parameters: [Float],
                         capacity: Int) -> [Float] {
        var output = [Float](repeating: .nan, count: rows * layer.outputSize)
        var scratch = [Float](repeating: .nan, count: capacity)
        layer.forward(input: images, rows: rows, parameters: parameters, output: &output,
                      scratch: &scratch, scratchCapacity: capacity)
        return output
    }

    private func directConvolution(_ layer: Conv2D, _ images: [Float], _ rows: Int,
                                   _ parameters: [Float]) -> [Double] {
        let input = layer.input, output = layer.output, k = layer.kernelSize
        var result = [Double](repeating: 0, count: rows * layer.outputSize)
        for sample in 0..<rows {
            for outY in 0..<output.height {
                for outX in 0..<output.width {
                    for outC in 0..<output.channels {
                        var sum = Double(parameters[layer.weightCount + outC])
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let y = outY * layer.stride - layer.padding + ky
                                let x = outX * layer.stride - layer.padding + kx
                                guard y >= 0, y < input.height, x >= 0, x < input.width else { continue }
                                for c in 0..<input.channels {
                                    let pixel = images[sample * layer.inputSize + (y * input.width + x) * input.channels + c]
                                    let weight = parameters[((ky * k + kx) * input.channels + c) * output.channels + outC]
                                    sum += Double(pixel) * Double(weight)
                                }
                            }
                        }
                        result[((sample * output.height + outY) * output.width + outX) * output.channels + outC] = sum
                    }
                }
            }
        }
        return result
    }
}
