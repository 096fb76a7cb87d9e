/// A 2-D convolution: `output = activation(im2col(inputs) · weights + biases)`.
///
/// Images are stored channels-last: a sample is `height × width × channels` row-major, so a
/// convolution's output is already the next layer's input and flattening costs nothing.
/// The layer owns no memory. Its parameters live in the model's flat parameter buffer:
/// weights `patchSize × outputChannels` row-major, where a patch row is indexed
/// `(kernelY · kernelSize + kernelX) · inputChannels + channel`, then `outputChannels` biases.
/// `scratch` holds the im2col matrix of a block of samples; `scratchCount(rows:)` says how
/// much a whole batch would take, and any smaller capacity of at least one sample works.
public struct Conv2D: Sendable, Equatable, Codable {
    public let input: ImageShape
    public let outputChannels: Int
    public let kernelSize: Int
    public let stride: Int
    public let padding: Int
    public let activation: Activation

    public init(input: ImageShape, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: Int = 0, activation: Activation) throws {
        guard outputChannels > 0, kernelSize > 0, stride > 0, padding >= 0, padding < kernelSize,
              input.height + 2 * padding >= kernelSize, input.width + 2 * padding >= kernelSize
        else {
            throw LayerShapeError.badConvolution(input: input, kernel: kernelSize, stride: stride,
                                                 padding: padding, channels: outputChannels)
        }
        self.input = input
        self.outputChannels = outputChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
        self.activation = activation
    }

    public var output: ImageShape {
        ImageShape(height: (input.height + 2 * padding - kernelSize) / stride + 1,
                   width: (input.width + 2 * padding - kernelSize) / stride + 1,
                   channels: outputChannels)
    }
    public var inputSize: Int { input.count }
    public var outputSize: Int { output.count }
    /// Values in one im2col row: one kernel window over every input channel.
    public var patchSize: Int { kernelSize * kernelSize * input.channels }
    public var weightCount: Int { patchSize * outputChannels }
    public var parameterCount: Int { weightCount + outputChannels }
    /// Scratch values that hold the im2col matrix of `rows` samples.
    public func scratchCount(rows: Int) -> Int { rows * output.height * output.width * patchSize }

    /// The im2col values one convolution unfolds at a time, at most (unless one sample needs
    /// more): 512 KiB of floats, about what this machine's L2 cache holds, so that the product
    /// reads the im2col matrix, and backward's col2im the input gradient's, from the cache.
    public static let scratchBudget = 1 << 17

    /// Samples per im2col block: `max(1, scratchBudget / perSample)`, a size that depends on
    /// the layer alone, never on the batch or on what ran before, so a shard's sums (and
    /// `weights_sha256`) are the same wherever it is computed.
    public var blockSamples: Int { max(1, Self.scratchBudget / scratchCount(rows: 1)) }

    /// Forward pass for `rows` samples.
    /// - Parameters:
    ///   - input: `rows × inputSize`, channels-last.
    ///   - parameters: this layer's slice of the parameter buffer (weights, then biases).
    ///   - output: `rows × outputSize`; receives `activation(convolution + biases)`.
    ///   - scratch: at least `scratchCount(rows: 1)` values, `scratchCapacity` of them.
    public func forward(input: UnsafePointer<Float>, rows: Int, parameters: UnsafePointer<Float>,
                        output: UnsafeMutablePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, scratchCapacity: Int) {
        let positions = self.output.height * self.output.width
        let biases = parameters + weightCount
        forEachBlock(rows: rows, scratchCapacity: scratchCapacity) { first, count in
            let block = output + first * outputSize
            im2col(input + first * inputSize, samples: count, into: scratch)
            BLAS.sgemm(m: count * positions, n: outputChannels, k: patchSize,
                       a: scratch, lda: patchSize, b: parameters, ldb: outputChannels,
                       c: block, ldc: outputChannels)
            // While the block is still in the cache. Element-wise activations only: a softmax
            // over a feature map is not a classifier.
            activation.forward(block, rows: count * positions, columns: outputChannels, biases: biases)
        }
    }

    /// Backward pass for `rows` samples, given dL/dz (the activation's backward already applied).
    /// - Parameters:
    ///   - input: the input the forward pass saw.
    ///   - outputGradient: dL/dz, `rows × outputSize`.
    ///   - parameterGradient: receives dL/dweights then dL/dbiases, summed over the rows.
    ///   - inputGradient: receives dL/dinput (`rows × inputSize`); `nil` skips it.
    public func backward(input: UnsafePointer<Float>, rows: Int, parameters: UnsafePointer<Float>,
                         outputGradient: UnsafePointer<Float>,
                         parameterGradient: UnsafeMutablePointer<Float>,
                         inputGradient: UnsafeMutablePointer<Float>?,
                         scratch: UnsafeMutablePointer<Float>, scratchCapacity: Int) {
        let positions = output.height * output.width
        parameterGradient.update(repeating: 0, count: parameterCount)
        let biasGradient = parameterGradient + weightCount
        for position in 0..<(rows * positions) {
            let g = outputGradient + position * outputChannels
            for channel in 0..<outputChannels { biasGradient[channel] += g[channel] }
        }
        forEachBlock(rows: rows, scratchCapacity: scratchCapacity) { first, count in
            let blockGradient = outputGradient + first * outputSize
            // dW += colᵀ · dZ
            im2col(input + first * inputSize, samples: count, into: scratch)
            BLAS.sgemm(transposeA: true, m: patchSize, n: outputChannels, k: count * positions,
                       a: scratch, lda: patchSize, b: blockGradient, ldb: outputChannels,
                       beta: 1, c: parameterGradient, ldc: outputChannels)
            // dX = col2im(dZ · Wᵀ)
            if let inputGradient {
                BLAS.sgemm(transposeB: true, m: count * positions, n: patchSize, k: outputChannels,
                           a: blockGradient, lda: outputChannels, b: parameters, ldb: outputChannels,
                           c: scratch, ldc: patchSize)
                col2im(scratch, samples: count, into: inputGradient + first * inputSize)
            }
        }
    }

    /// Calls `body(firstSample, sampleCount)` over blocks whose im2col fits the scratch.
    private func forEachBlock(rows: Int, scratchCapacity: Int, _ body: (Int, Int) -> Void) {
        let perSample = scratchCount(rows: 1)
        precondition(scratchCapacity >= perSample, "Conv2D scratch holds less than one sample.")
        let block = scratchCapacity / perSample
        var first = 0
        while first < rows {
            let count = min(block, rows - first)
            body(first, count)
            first += count
        }
    }

    /// Unfolds every kernel window of `samples` images into one row of `patchSize` values
    /// (zeros where the window hangs over the padding). Channels-last, the part of a kernel
    /// row that lies inside the image is one contiguous run of values: one copy each.
    func im2col(_ images: UnsafePointer<Float>, samples: Int, into columns: UnsafeMutablePointer<Float>) {
        let channels = input.channels
        var row = columns
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for outY in 0..<output.height {
                for outX in 0..<output.width {
                    forEachKernelRow(outY: outY, outX: outX) { destinationOffset, span in
                        let destination = row + destinationOffset
                        guard let span else {
                            destination.update(repeating: 0, count: kernelSize * channels)
                            return
                        }
                        destination.update(repeating: 0, count: span.first * channels)
                        Self.copy(image + span.pixel * channels, to: destination + span.first * channels,
                                  count: (span.end - span.first) * channels)
                        (destination + span.end * channels).update(repeating: 0, count: (kernelSize - span.end) * channels)
                    }
                    row += patchSize
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds every window's values back onto the pixels they came from.
    func col2im(_ columns: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>) {
        images.update(repeating: 0, count: samples * inputSize)
        let channels = input.channels
        var row = columns
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for outY in 0..<output.height {
                for outX in 0..<output.width {
                    forEachKernelRow(outY: outY, outX: outX) { sourceOffset, span in
                        guard let span else { return }
                        Self.add(row + sourceOffset + span.first * channels, onto: image + span.pixel * channels,
                                 count: (span.end - span.first) * channels)
                    }
                    row += patchSize
                }
            }
        }
    }

    /// The part of one kernel row that lies inside the image: kernel columns `first..<end`,
    /// over the run of pixels that starts at `pixel` (an index within the sample, in pixels).
    typealias KernelRowSpan = (first: Int, end: Int, pixel: Int)

    /// For each kernel row of the window at (outY, outX): its offset within the patch row, and
    /// its span inside the image (nil: the whole kernel row lies in the padding).
    @inline(__always)
    private func forEachKernelRow(outY: Int, outX: Int, _ body: (Int, KernelRowSpan?) -> Void) {
        let top = outY * stride - padding
        let left = outX * stride - padding
        let first = max(0, -left)
        let end = min(kernelSize, input.width - left)
        let rowValues = kernelSize * input.channels
        for kernelY in 0..<kernelSize {
            let y = top + kernelY
            if y >= 0 && y < input.height && first < end {
                body(kernelY * rowValues, (first, end, y * input.width + left + first))
            } else {
                body(kernelY * rowValues, nil)
            }
        }
    }

    /// Plain loops rather than `memcpy`: most runs are a few values (5 for one input channel),
    /// where a call costs more than the copy; the compiler vectorises the long ones.
    @inline(__always)
    private static func copy(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] = source[i] }
    }

    @inline(__always)
    private static func add(_ source: UnsafePointer<Float>, onto destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] += source[i] }
    }
}
