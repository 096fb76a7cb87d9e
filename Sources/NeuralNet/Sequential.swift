/// The model of the thesis design: layers in order (dense, convolution, max pooling,
/// flatten), each feeding the next, with the last layer's activation output as the model's
/// output.
///
/// Parameters and gradients are each one flat `[Float]` in `ModelSpec`'s documented layout,
/// so averaging, sending, checksumming and saving are loops over one buffer. Activations and
/// their gradients, pooling masks and the im2col scratch live in a workspace preallocated
/// for the batch size: after the first call at a given batch size, a step allocates nothing.
public final class Sequential {
    public let spec: ModelSpec
    /// All weights and biases, layer after layer (see `ModelSpec`).
    public var parameters: [Float]
    private let offsets: [Int]
    private let workspace: Workspace
    /// When set, forward and backward passes read the parameters from here instead of
    /// `parameters`: `parameterCount` floats that the caller keeps valid and unchanged
    /// during each pass (a worker points it at the coordinator's shared weights, which
    /// saves copying them every step).
    public var parameterSource: UnsafePointer<Float>?

    private func withParameterPointer<R>(_ body: (UnsafePointer<Float>) -> R) -> R {
        if let parameterSource { return body(parameterSource) }
        return parameters.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Dropout on the dense hidden layers' outputs in training passes (never in `forward` or
    /// `evaluate`). Only after ReLU layers: their backward pass reads the dropped output.
    public var dropout: Dropout? {
        didSet {
            precondition(dropout == nil || spec.allowsDropout, "Dropout needs ReLU dense hidden layers.")
        }
    }

    /// A freshly initialised model: He-normal weights for ReLU layers (they keep the
    /// activations' variance through the ReLU; a convolution's fan-in is its patch size),
    /// Glorot-uniform for the others, zero biases.
    public convenience init(spec: ModelSpec, seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var parameters = [Float]()
        parameters.reserveCapacity(spec.parameterCount)
        for layer in spec.layers {
            let (fanIn, fanOut) = (Double(layer.fans.fanIn), Double(layer.fans.fanOut))
            for _ in 0..<layer.weightCount {
                if layer.activation == .relu {
                    parameters.append(Float(generator.nextGaussian() * (2 / fanIn).squareRoot()))
                } else {
                    let limit = Float((6 / (fanIn + fanOut)).squareRoot())
                    parameters.append((generator.nextUnitFloat() * 2 - 1) * limit)
                }
            }
            parameters.append(contentsOf: repeatElement(0, count: layer.parameterCount - layer.weightCount))
        }
        self.init(spec: spec, parameters: parameters)
    }

    public init(spec: ModelSpec, parameters: [Float]) {
        precondition(parameters.count == spec.parameterCount,
                     "\(spec) has \(spec.parameterCount) parameters, got \(parameters.count).")
        self.spec = spec
        self.parameters = parameters
        self.offsets = spec.parameterOffsets
        self.workspace = Workspace(spec: spec)
    }

    /// Runs the layers in order on `rows` samples (`rows × inputSize`) and returns the last
    /// layer's output (`rows × outputSize`), valid until the next call on this model.
    @discardableResult
    public func forward(input: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        forward(input: input, rows: rows, dropoutKey: nil)
    }

    /// The buffer layer `index` reads: the output of the layer before (a flatten passes its
    /// own input through), or the model's input.
    private func layerInput(_ index: Int, modelInput: UnsafePointer<Float>) -> UnsafePointer<Float> {
        workspace.inputSource[index].map { UnsafePointer(workspace.outputs[$0]) } ?? modelInput
    }

    /// The forward pass; with a `dropoutKey` (training) the dense hidden outputs are dropped
    /// out. Each layer leaves what its backward pass needs: its output, and a pooling layer
    /// its argmax mask.
    private func forward(input: UnsafePointer<Float>, rows: Int, dropoutKey: UInt64?) -> UnsafePointer<Float> {
        workspace.reserve(rows: rows)
        let last = spec.layers.count - 1
        withParameterPointer { p in
            var pooledAlready = -1
            for (index, layer) in spec.layers.enumerated() where index != pooledAlready {
                let x = layerInput(index, modelInput: input)
                let output = workspace.outputs[index]
                switch layer {
                case let .dense(dense):
                    dense.forward(input: x, rows: rows, parameters: p + offsets[index], output: output)
                    if let dropout, let dropoutKey, index < last {
                        dropout.apply(to: output, rows: rows, columns: dense.outputSize, layer: index, key: dropoutKey)
                    }
                case let .conv(conv):
                    let (parameters, scratchCapacity) = (p + offsets[index], workspace.scratchCapacity[index])
                    // A pooling layer right after pools each block of the convolution's output
                    // while the block is in the cache (samples are independent: the same bits).
                    // The closure is passed as a literal, so that its context is not boxed.
                    guard index < last, case let .maxPool(pool) = spec.layers[index + 1] else {
                        conv.forward(input: x, rows: rows, parameters: parameters, output: output,
                                     scratch: workspace.scratch, scratchCapacity: scratchCapacity)
                        continue
                    }
                    let (pooled, argmax) = (workspace.outputs[index + 1], workspace.argmax[index + 1]!)
                    conv.forward(input: x, rows: rows, parameters: parameters, output: output,
                                 scratch: workspace.scratch, scratchCapacity: scratchCapacity) { first, count in
                        pool.forward(input: output + first * pool.inputSize, rows: count,
                                     output: pooled + first * pool.outputSize, argmax: argmax + first * pool.outputSize)
                    }
                    pooledAlready = index + 1
                case let .maxPool(pool):
                    pool.forward(input: x, rows: rows, output: output, argmax: workspace.argmax[index]!)
                case .flatten:
                    break
                }
            }
        }
        return UnsafePointer(workspace.outputs[last])
    }

    /// One forward and backward pass over `rows` samples in the thesis order: forward, the
    /// loss, the loss's gradient, then each layer from last to first (activation backward,
    /// then dweights, dbiases and the input gradient for the layer before).
    ///
    /// Writes dL/dparameters summed over the rows to `gradient` (`parameterCount` floats, in
    /// the flat layout) and returns the summed loss and the number of correct predictions.
    /// With `dropout` set, `dropoutKey` (see `Dropout.key`) picks this pass's masks.
    @discardableResult
    public func computeGradientSum(input: UnsafePointer<Float>, labels: UnsafePointer<UInt8>,
                                   rows: Int, gradient: UnsafeMutablePointer<Float>,
                                   dropoutKey: UInt64 = 0) -> BatchStatistics {
        let probabilities = forward(input: input, rows: rows, dropoutKey: dropoutKey)
        let classes = spec.outputSize
        let last = spec.layers.count - 1
        let lossSum = CategoricalCrossEntropy.lossSum(probabilities: probabilities, labels: labels,
                                                      rows: rows, classes: classes)
        let correct = CategoricalCrossEntropy.correctCount(probabilities: probabilities, labels: labels,
                                                           rows: rows, classes: classes)
        let lastGradient = workspace.gradients[last]
        let outputActivation = spec.layers[last].activation ?? .linear
        if outputActivation == .softmax {
            CategoricalCrossEntropy.softmaxBackward(probabilities: probabilities, labels: labels,
                                                    rows: rows, classes: classes, gradient: lastGradient)
        } else {
            CategoricalCrossEntropy.backward(probabilities: probabilities, labels: labels,
                                             rows: rows, classes: classes, gradient: lastGradient)
            outputActivation.backward(output: probabilities, gradient: lastGradient, rows: rows, columns: classes)
        }
        withParameterPointer { p in
            let first = spec.firstTrainableLayer
            for index in stride(from: last, through: first, by: -1) {
                backward(layer: index, rows: rows, modelInput: input, parameters: p,
                         gradient: gradient, computesInputGradient: index > first, dropoutKey: dropoutKey)
            }
        }
        return BatchStatistics(sampleCount: rows, lossSum: lossSum, correctCount: correct)
    }

    /// Layer `index`'s backward pass from dL/dz in its gradient buffer: its parameter
    /// gradient, and (unless nothing before it learns) dL/dz of the layer whose output it
    /// read: the input gradient, through that layer's dropout mask and activation.
    private func backward(layer index: Int, rows: Int, modelInput: UnsafePointer<Float>,
                          parameters p: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>,
                          computesInputGradient: Bool, dropoutKey: UInt64) {
        let source = workspace.inputSource[index]
        let x = layerInput(index, modelInput: modelInput)
        let outputGradient = UnsafePointer(workspace.gradients[index])
        let inputGradient = computesInputGradient ? source.map { workspace.gradients[$0] } : nil
        switch spec.layers[index] {
        case let .dense(dense):
            dense.backward(input: x, rows: rows, parameters: p + offsets[index], outputGradient: outputGradient,
                           parameterGradient: gradient + offsets[index], inputGradient: inputGradient)
        case let .conv(conv):
            conv.backward(input: x, rows: rows, parameters: p + offsets[index], outputGradient: outputGradient,
                          parameterGradient: gradient + offsets[index], inputGradient: inputGradient,
                          scratch: workspace.scratch, scratchCapacity: workspace.scratchCapacity[index])
        case let .maxPool(pool):
            if let inputGradient {
                pool.backward(rows: rows, outputGradient: outputGradient, argmax: workspace.argmax[index]!,
                              inputGradient: inputGradient)
            }
        case .flatten:
            return  // the layer after it wrote straight into the gradient of the layer before
        }
        guard let source, let inputGradient else { return }
        let previous = spec.layers[source]
        if case .dense = previous {
            // The gradient reaches the kept units only, scaled as they were.
            dropout?.apply(to: inputGradient, rows: rows, columns: previous.outputSize, layer: source, key: dropoutKey)
        }
        previous.activation?.backward(output: workspace.outputs[source], gradient: inputGradient,
                                      rows: rows, columns: previous.outputSize)
    }

    /// `computeGradientSum` on raw 0–255 pixels, scaled to [0, 1] into the workspace first.
    @discardableResult
    public func computeGradientSum(pixels: UnsafePointer<UInt8>, labels: UnsafePointer<UInt8>,
                                   rows: Int, gradient: UnsafeMutablePointer<Float>,
                                   dropoutKey: UInt64 = 0) -> BatchStatistics {
        computeGradientSum(input: scaleInput(pixels: pixels, rows: rows), labels: labels, rows: rows,
                           gradient: gradient, dropoutKey: dropoutKey)
    }

    /// Scales raw 0–255 pixels to [0, 1] into the workspace's input buffer, which a pass
    /// can then take as its `input`: a worker does this while it waits for a step's weights.
    /// Valid until the next call that scales pixels (this, or any call taking `pixels:`).
    public func scaleInput(pixels: UnsafePointer<UInt8>, rows: Int) -> UnsafePointer<Float> {
        workspace.scaledInput(pixels: pixels, rows: rows)
    }

    /// Convenience for tools and tests: the gradient sum as a new array.
    public func gradientSum(input: [Float], labels: [UInt8], dropoutKey: UInt64 = 0) -> (gradient: [Float], statistics: BatchStatistics) {
        precondition(input.count == labels.count * spec.inputSize)
        var gradient = [Float](repeating: 0, count: spec.parameterCount)
        let statistics = input.withUnsafeBufferPointer { x in
            labels.withUnsafeBufferPointer { y in
                gradient.withUnsafeMutableBufferPointer { g in
                    computeGradientSum(input: x.baseAddress!, labels: y.baseAddress!, rows: labels.count,
                                       gradient: g.baseAddress!, dropoutKey: dropoutKey)
                }
            }
        }
        return (gradient, statistics)
    }

    /// Forward pass on raw 0–255 pixels; returns the output probabilities (`rows × classes`).
    @discardableResult
    public func forward(pixels: UnsafePointer<UInt8>, rows: Int) -> UnsafePointer<Float> {
        forward(input: workspace.scaledInput(pixels: pixels, rows: rows), rows: rows)
    }

    /// Loss sum and correct count on `rows` samples without touching the gradients.
    public func evaluate(pixels: UnsafePointer<UInt8>, labels: UnsafePointer<UInt8>, rows: Int) -> BatchStatistics {
        let probabilities = forward(pixels: pixels, rows: rows)
        let classes = spec.outputSize
        return BatchStatistics(
            sampleCount: rows,
            lossSum: CategoricalCrossEntropy.lossSum(probabilities: probabilities, labels: labels,
                                                     rows: rows, classes: classes),
            correctCount: CategoricalCrossEntropy.correctCount(probabilities: probabilities, labels: labels,
                                                               rows: rows, classes: classes))
    }

    /// Replaces the parameters from raw memory, reusing the buffer.
    public func loadParameters(from source: UnsafePointer<Float>) {
        let count = parameters.count
        parameters.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: source, count: count) }
    }
}

/// What one pass over some samples measured: a sum, so shards add up.
public struct BatchStatistics: Sendable, Equatable, Codable {
    public var sampleCount: Int
    public var lossSum: Double
    public var correctCount: Int

    public init(sampleCount: Int = 0, lossSum: Double = 0, correctCount: Int = 0) {
        self.sampleCount = sampleCount
        self.lossSum = lossSum
        self.correctCount = correctCount
    }

    public static func += (lhs: inout BatchStatistics, rhs: BatchStatistics) {
        lhs.sampleCount += rhs.sampleCount
        lhs.lossSum += rhs.lossSum
        lhs.correctCount += rhs.correctCount
    }

    public var meanLoss: Double { sampleCount == 0 ? 0 : lossSum / Double(sampleCount) }
    public var accuracy: Double { sampleCount == 0 ? 0 : Double(correctCount) / Double(sampleCount) }
}

