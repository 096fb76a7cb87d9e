/// The model of the thesis design: dense layers in order, each feeding the next, with the
/// last layer's activation output as the model's output.
///
/// Parameters and gradients are each one flat `[Float]` in `ModelSpec`'s documented layout,
/// so averaging, sending, checksumming and saving are loops over one buffer. Activations and
/// their gradients live in a workspace preallocated for the batch size: after the first
/// call at a given batch size, a training step allocates nothing.
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

    /// Dropout on the hidden layers' outputs in training passes (never in `forward` or
    /// `evaluate`). Only after ReLU layers: their backward pass reads the dropped output.
    public var dropout: Dropout? {
        didSet {
            precondition(dropout == nil || spec.layers.dropLast().allSatisfy { $0.activation == .relu },
                         "Dropout needs ReLU hidden layers.")
        }
    }

    /// A freshly initialised model: He-normal weights for ReLU layers (they keep the
    /// activations' variance through the ReLU), Glorot-uniform for the others, zero biases.
    public convenience init(spec: ModelSpec, seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var parameters = [Float]()
        parameters.reserveCapacity(spec.parameterCount)
        for layer in spec.layers {
            let fanIn = Double(layer.inputSize)
            let fanOut = Double(layer.outputSize)
            for _ in 0..<layer.weightCount {
                if layer.activation == .relu {
                    parameters.append(Float(generator.nextGaussian() * (2 / fanIn).squareRoot()))
                } else {
                    let limit = Float((6 / (fanIn + fanOut)).squareRoot())
                    parameters.append((generator.nextUnitFloat() * 2 - 1) * limit)
                }
            }
            parameters.append(contentsOf: repeatElement(0, count: layer.outputSize))
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

    /// The forward pass; with a `dropoutKey` (training) the hidden outputs are dropped out.
    private func forward(input: UnsafePointer<Float>, rows: Int, dropoutKey: UInt64?) -> UnsafePointer<Float> {
        workspace.reserve(rows: rows)
        let last = spec.layers.count - 1
        withParameterPointer { p in
            var layerInput = input
            for (index, layer) in spec.layers.enumerated() {
                let output = workspace.outputs[index]
                layer.forward(input: layerInput, rows: rows,
                              parameters: p + offsets[index], output: output)
                if let dropout, let dropoutKey, index < last {
                    dropout.apply(to: output, rows: rows, columns: layer.outputSize, layer: index, key: dropoutKey)
                }
                layerInput = UnsafePointer(output)
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
        if spec.layers[last].activation == .softmax {
            CategoricalCrossEntropy.softmaxBackward(probabilities: probabilities, labels: labels,
                                                    rows: rows, classes: classes, gradient: lastGradient)
        } else {
            CategoricalCrossEntropy.backward(probabilities: probabilities, labels: labels,
                                             rows: rows, classes: classes, gradient: lastGradient)
            spec.layers[last].activation.backward(output: probabilities, gradient: lastGradient,
                                                  rows: rows, columns: classes)
        }
        withParameterPointer { p in
            for index in stride(from: last, through: 0, by: -1) {
                let layer = spec.layers[index]
                let isFirst = index == 0
                let layerInput = isFirst ? input : UnsafePointer(workspace.outputs[index - 1])
                layer.backward(input: layerInput, rows: rows,
                               parameters: p + offsets[index],
                               outputGradient: workspace.gradients[index],
                               parameterGradient: gradient + offsets[index],
                               inputGradient: isFirst ? nil : workspace.gradients[index - 1])
                if !isFirst {
                    let previous = spec.layers[index - 1]
                    // The gradient reaches the kept units only, scaled as they were.
                    dropout?.apply(to: workspace.gradients[index - 1], rows: rows,
                                   columns: previous.outputSize, layer: index - 1, key: dropoutKey)
                    previous.activation.backward(output: workspace.outputs[index - 1],
                                                 gradient: workspace.gradients[index - 1],
                                                 rows: rows, columns: previous.outputSize)
                }
            }
        }
        return BatchStatistics(sampleCount: rows, lossSum: lossSum, correctCount: correct)
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

/// Preallocated per-layer activation and gradient buffers for up to `capacity` rows.
final class Workspace {
    private let spec: ModelSpec
    private(set) var capacity = 0
    private(set) var input: UnsafeMutablePointer<Float>?
    private(set) var outputs: [UnsafeMutablePointer<Float>] = []
    private(set) var gradients: [UnsafeMutablePointer<Float>] = []

    init(spec: ModelSpec) { self.spec = spec }

    deinit { release() }

    /// Grows the buffers when a larger batch arrives; a no-op otherwise.
    func reserve(rows: Int) {
        guard rows > capacity else { return }
        release()
        capacity = rows
        input = .allocate(capacity: rows * spec.inputSize)
        outputs = spec.layers.map { .allocate(capacity: rows * $0.outputSize) }
        gradients = spec.layers.map { .allocate(capacity: rows * $0.outputSize) }
    }

    /// Pixels 0–255 to floats in [0, 1], in the input buffer.
    func scaledInput(pixels: UnsafePointer<UInt8>, rows: Int) -> UnsafePointer<Float> {
        reserve(rows: rows)
        let destination = input!
        let scale: Float = 1 / 255
        for i in 0..<(rows * spec.inputSize) { destination[i] = Float(pixels[i]) * scale }
        return UnsafePointer(destination)
    }

    private func release() {
        input?.deallocate()
        outputs.forEach { $0.deallocate() }
        gradients.forEach { $0.deallocate() }
        input = nil
        outputs = []
        gradients = []
    }
}
