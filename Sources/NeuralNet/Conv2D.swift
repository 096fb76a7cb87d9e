/// A 2-D convolution: `output = activation(im2col(inputs) · weights + biases)`.
///
/// Images are stored channels-last: a sample is `height × width × channels` row-major, so a
/// convolution's output is already the next layer's input and flattening costs nothing.
/// The layer owns no memory. Its parameters live in the model's flat parameter buffer:
/// weights `patchSize × outputChannels` row-major, where a patch row is indexed
/// `(kernelY · kernelSize + kernelX) · inputChannels + channel`, then `outputChannels` biases.
///
/// Two ways to unfold the input for `cblas_sgemm` (see Conv2DUnfolding.swift):
/// - im2col: one row of `patchSize` values per output position; one product per block of
///   samples for each of forward, weight gradient and input gradient.
/// - kernel rows (stride 1, and kernel rows of at least `minimumKernelRowValues` values):
///   one row per input row and output column, holding one kernel row's window
///   (`kernelSize × inputChannels` values), a fifth of im2col's values for a 5×5 kernel.
///   Kernel row `kernelY`'s part of the convolution is then one product of a contiguous
///   block of those rows with weight rows `kernelY`, so each sample takes `kernelSize`
///   products per pass, which also skip the windows' rows that lie in the padding.
/// `scratch` holds the unfolded values of a block of samples; `scratchCount(rows:)` says how
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
    /// Values in one kernel row's window: `kernelSize × inputChannels`.
    public var kernelRowValues: Int { kernelSize * input.channels }

    /// Below this many values in a kernel row its products would be too shallow for sgemm
    /// (5 for the first 5×5 layer on grey images): such layers unfold by im2col.
    public static let minimumKernelRowValues = 32

    /// Whether the layer unfolds kernel rows rather than whole windows (see the type).
    public var unfoldsKernelRows: Bool { stride == 1 && kernelRowValues >= Self.minimumKernelRowValues }

    /// Scratch values that hold the unfolded input of `rows` samples.
    public func scratchCount(rows: Int) -> Int {
        unfoldsKernelRows ? rows * input.height * output.width * kernelRowValues
                          : rows * output.height * output.width * patchSize
    }

    /// The values one convolution unfolds at a time, at most (unless one sample needs more):
    /// 512 KiB of floats, about what this machine's L2 cache holds, so that the products read
    /// the unfolded input, and backward's fold the input gradient's, from the cache. One
    /// sample's is bounded by `ModelCodec.maximumValuesPerSample`: kernel rows never unfold
    /// more values than im2col would.
    public static let scratchBudget = 1 << 17

    /// Samples per block: `max(1, scratchBudget / perSample)`, a size that depends on
    /// the layer alone, never on the batch or on what ran before, so a shard's sums (and
    /// `weights_sha256`) are the same wherever it is computed.
    public var blockSamples: Int { max(1, Self.scratchBudget / scratchCount(rows: 1)) }

    /// Forward pass for `rows` samples.
    /// - Parameters:
    ///   - input: `rows × inputSize`, channels-last.
    ///   - parameters: this layer's slice of the parameter buffer (weights, then biases).
    ///   - output: `rows × outputSize`; receives `activation(convolution + biases)`.
    ///   - scratch: at least `scratchCount(rows: 1)` values, `scratchCapacity` of them.
    ///   - blockDone: called with (first sample, sample count) once a block's output is final,
    ///     while it is still in the cache (a pooling layer after this one runs there).
    public func forward(input: UnsafePointer<Float>, rows: Int, parameters: UnsafePointer<Float>,
                        output: UnsafeMutablePointer<Float>,
                        scratch: UnsafeMutablePointer<Float>, scratchCapacity: Int,
                        blockDone: (Int, Int) -> Void = { _, _ in }) {
        let positions = self.output.height * self.output.width
        let biases = parameters + weightCount
        forEachBlock(rows: rows, scratchCapacity: scratchCapacity) { first, count in
            let block = output + first * outputSize
            if unfoldsKernelRows {
                unfoldKernelRows(input + first * inputSize, samples: count, into: scratch)
                for sample in 0..<count {
                    let z = block + sample * outputSize
                    // The products below add to the biases; some skip rows in the padding.
                    for position in 0..<positions { (z + position * outputChannels).update(from: biases, count: outputChannels) }
                    forEachKernelRowProduct(sample: sample, unfolded: scratch) { kernelY, outputRow, rows, unfolded in
                        BLAS.sgemm(m: rows, n: outputChannels, k: kernelRowValues,
                                   a: unfolded, lda: kernelRowValues,
                                   b: parameters + kernelY * kernelRowValues * outputChannels, ldb: outputChannels,
                                   beta: 1, c: z + outputRow * outputChannels, ldc: outputChannels)
                    }
                }
                activation.forward(block, rows: count * positions, columns: outputChannels)
                blockDone(first, count)
                return
            }
            im2col(input + first * inputSize, samples: count, into: scratch)
            BLAS.sgemm(m: count * positions, n: outputChannels, k: patchSize,
                       a: scratch, lda: patchSize, b: parameters, ldb: outputChannels,
                       c: block, ldc: outputChannels)
            // While the block is still in the cache. Element-wise activations only: a softmax
            // over a feature map is not a classifier.
            activation.forward(block, rows: count * positions, columns: outputChannels, biases: biases)
            blockDone(first, count)
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
            if unfoldsKernelRows {
                backwardByKernelRows(input: input + first * inputSize, samples: count, parameters: parameters,
                                     outputGradient: blockGradient, parameterGradient: parameterGradient,
                                     inputGradient: inputGradient.map { $0 + first * inputSize }, scratch: scratch)
                return
            }
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

    /// One block's backward products by kernel rows: dW_kernelY += rowsᵀ · dZ, then
    /// dRows += dZ · W_kernelYᵀ folded back onto the input gradient.
    private func backwardByKernelRows(input: UnsafePointer<Float>, samples: Int, parameters: UnsafePointer<Float>,
                                      outputGradient: UnsafePointer<Float>,
                                      parameterGradient: UnsafeMutablePointer<Float>,
                                      inputGradient: UnsafeMutablePointer<Float>?,
                                      scratch: UnsafeMutablePointer<Float>) {
        let weightRows = kernelRowValues * outputChannels
        unfoldKernelRows(input, samples: samples, into: scratch)
        for sample in 0..<samples {
            let dZ = outputGradient + sample * outputSize
            forEachKernelRowProduct(sample: sample, unfolded: scratch) { kernelY, outputRow, rows, unfolded in
                BLAS.sgemm(transposeA: true, m: kernelRowValues, n: outputChannels, k: rows,
                           a: unfolded, lda: kernelRowValues,
                           b: dZ + outputRow * outputChannels, ldb: outputChannels,
                           beta: 1, c: parameterGradient + kernelY * weightRows, ldc: outputChannels)
            }
        }
        guard let inputGradient else { return }
        scratch.update(repeating: 0, count: scratchCount(rows: samples))
        for sample in 0..<samples {
            let dZ = outputGradient + sample * outputSize
            forEachKernelRowProduct(sample: sample, unfolded: scratch) { kernelY, outputRow, rows, unfolded in
                BLAS.sgemm(transposeB: true, m: rows, n: kernelRowValues, k: outputChannels,
                           a: dZ + outputRow * outputChannels, lda: outputChannels,
                           b: parameters + kernelY * weightRows, ldb: outputChannels,
                           beta: 1, c: unfolded, ldc: kernelRowValues)
            }
        }
        foldKernelRows(scratch, samples: samples, into: inputGradient)
    }

    /// For each kernel row whose window rows are not all padding: `body(kernelY, first
    /// output position, positions, the unfolded rows under them)`: output rows whose kernel
    /// row `kernelY` lies in the padding contribute nothing and are left out.
    @inline(__always)
    private func forEachKernelRowProduct(sample: Int, unfolded: UnsafeMutablePointer<Float>,
                                         _ body: (Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let width = output.width
        let sampleRows = unfolded + sample * scratchCount(rows: 1)
        for kernelY in 0..<kernelSize {
            let outputRows = kernelRowOutputRows(kernelY)
            guard !outputRows.isEmpty else { continue }
            body(kernelY, outputRows.lowerBound * width, outputRows.count * width,
                 sampleRows + (outputRows.lowerBound - padding + kernelY) * width * kernelRowValues)
        }
    }

    /// The output rows whose window's kernel row `kernelY` lies on an input row (stride 1).
    func kernelRowOutputRows(_ kernelY: Int) -> Range<Int> {
        let first = max(0, padding - kernelY)
        return first..<max(first, min(output.height, input.height + padding - kernelY))
    }

    /// The matrix products a pass over a block of `samples` samples makes, with their
    /// shapes as `BLAS.sgemm` gets them (for a benchmark's roofline).
    public func products(samples: Int) -> [ConvolutionProduct] {
        let positions = output.height * output.width
        guard unfoldsKernelRows else {
            return [
                ConvolutionProduct(pass: .forward, m: samples * positions, n: outputChannels, k: patchSize,
                                   transposeA: false, transposeB: false, calls: 1),
                ConvolutionProduct(pass: .weightGradient, m: patchSize, n: outputChannels, k: samples * positions,
                                   transposeA: true, transposeB: false, calls: 1),
                ConvolutionProduct(pass: .inputGradient, m: samples * positions, n: patchSize, k: outputChannels,
                                   transposeA: false, transposeB: true, calls: 1),
            ]
        }
        return (0..<kernelSize).flatMap { kernelY -> [ConvolutionProduct] in
            let rows = kernelRowOutputRows(kernelY).count * output.width
            guard rows > 0 else { return [] }
            return [
                ConvolutionProduct(pass: .forward, m: rows, n: outputChannels, k: kernelRowValues,
                                   transposeA: false, transposeB: false, calls: samples),
                ConvolutionProduct(pass: .weightGradient, m: kernelRowValues, n: outputChannels, k: rows,
                                   transposeA: true, transposeB: false, calls: samples),
                ConvolutionProduct(pass: .inputGradient, m: rows, n: kernelRowValues, k: outputChannels,
                                   transposeA: false, transposeB: true, calls: samples),
            ]
        }
    }

    /// Calls `body(firstSample, sampleCount)` over blocks whose unfolded input fits the scratch.
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
}

/// One `sgemm` call shape of a convolution's pass (see `Conv2D.products(samples:)`).
public struct ConvolutionProduct: Sendable, Equatable {
    public enum Pass: String, Sendable { case forward, weightGradient = "dW", inputGradient = "dX" }
    public var pass: Pass
    public var m: Int, n: Int, k: Int
    public var transposeA: Bool, transposeB: Bool
    /// Calls of this shape per block.
    public var calls: Int
}
