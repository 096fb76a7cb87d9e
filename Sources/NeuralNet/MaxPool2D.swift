/// Max pooling over non-overlapping `size × size` windows of a channels-last image, per channel.
///
/// It has no parameters. Forward writes, beside each output value, the index within its
/// sample of the input value it came from (the argmax mask); backward sends each output's
/// gradient to that one input and zero to the others. Rows and columns that do not fill a
/// whole window are dropped, as PyTorch's `MaxPool2d` does without `ceil_mode`.
public struct MaxPool2D: Sendable, Equatable, Codable {
    public let input: ImageShape
    public let size: Int

    public init(input: ImageShape, size: Int) throws {
        // The argmax mask holds indices within a sample as Int32.
        guard size > 0, input.height >= size, input.width >= size, input.count <= Int(Int32.max) else {
            throw LayerShapeError.badPooling(input: input, size: size)
        }
        self.input = input
        self.size = size
    }

    public var output: ImageShape {
        ImageShape(height: input.height / size, width: input.width / size, channels: input.channels)
    }
    public var inputSize: Int { input.count }
    public var outputSize: Int { output.count }

    /// Forward pass for `rows` samples.
    /// - Parameters:
    ///   - input: `rows × inputSize`; output: `rows × outputSize`.
    ///   - argmax: `rows × outputSize`; receives each output's input index within its sample.
    public func forward(input: UnsafePointer<Float>, rows: Int, output: UnsafeMutablePointer<Float>,
                        argmax: UnsafeMutablePointer<Int32>) {
        let channels = self.input.channels
        let rowStride = self.input.width * channels
        for sample in 0..<rows {
            let image = input + sample * inputSize
            var outIndex = sample * outputSize
            for outY in 0..<self.output.height {
                for outX in 0..<self.output.width {
                    let corner = (outY * size * self.input.width + outX * size) * channels
                    // Wrapping arithmetic: every index here is below `inputSize`, which fits
                    // an Int32 (checked in init), and overflow checks cost more than the compares.
                    for channel in 0..<channels {
                        let window = image + (corner &+ channel)
                        var best = window[0]
                        var bestOffset = 0
                        // Selects, not branches (on real data about half of them would be
                        // mispredicted). `>` keeps the first maximum, and a NaN never wins
                        // after the first.
                        for windowY in 0..<size {
                            for windowX in 0..<size {
                                let offset = windowY &* rowStride &+ windowX &* channels
                                let value = window[offset]
                                let wins = value > best
                                best = wins ? value : best
                                bestOffset = wins ? offset : bestOffset
                            }
                        }
                        output[outIndex &+ channel] = best
                        argmax[outIndex &+ channel] = Int32(truncatingIfNeeded: corner &+ channel &+ bestOffset)
                    }
                    outIndex += channels
                }
            }
        }
    }

    /// Backward pass: `inputGradient` (`rows × inputSize`) receives each output gradient at
    /// its argmax, zero elsewhere.
    public func backward(rows: Int, outputGradient: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                         inputGradient: UnsafeMutablePointer<Float>) {
        inputGradient.update(repeating: 0, count: rows * inputSize)
        for sample in 0..<rows {
            let image = inputGradient + sample * inputSize
            for index in (sample * outputSize)..<((sample + 1) * outputSize) {
                image[Int(argmax[index])] += outputGradient[index]
            }
        }
    }
}
