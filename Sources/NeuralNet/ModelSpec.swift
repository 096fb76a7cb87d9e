/// The architecture of a sequential network: the shape of one input sample and its layers
/// in order, each taking the shape the one before gives.
///
/// Parameter layout (the "flat buffer" that optimizers, the wire and model files share):
/// for each layer in order, its weights (dense: `inputSize × outputSize` row-major; conv:
/// `patchSize × outputChannels`, see `Conv2D`), then its biases; pooling and flatten layers
/// have none. Gradients and momentum mirror the same layout.
///
/// Built in code with `init(input:layers:)`, `mlp` or `parse`; from bytes only by
/// `ModelCodec`, whose decoder checks every size before it builds one.
public struct ModelSpec: Sendable, Equatable, CustomStringConvertible {
    public let input: ImageShape
    public let layers: [Layer]

    /// - Throws: `ModelSpecError` when a layer does not take the shape the one before gives
    ///   (a dense layer needs a vector: a `flatten` must come between an image and it), when
    ///   the last layer is not dense (the model is a classifier), or a convolution has a
    ///   softmax (which is not element-wise).
    public init(input: ImageShape, layers: [Layer]) throws {
        guard let last = layers.last else { throw ModelSpecError.noLayers }
        var shape = input
        for (index, layer) in layers.enumerated() {
            guard layer.input == shape else {
                throw ModelSpecError.shapeMismatch(layer: index, expected: shape, got: layer.input)
            }
            if case let .conv(conv) = layer, conv.activation == .softmax {
                throw ModelSpecError.invalidLayer(layer: index, reason: "a convolution's activation must be element-wise, not softmax")
            }
            shape = layer.output
        }
        guard case .dense = last else {
            throw ModelSpecError.invalidLayer(layer: layers.count - 1, reason: "the last layer must be dense (it gives the class scores)")
        }
        self.input = input
        self.layers = layers
    }

    /// A spec of dense layers over a vector input.
    public init(inputSize: Int, layers: [Dense]) throws {
        try self.init(input: .vector(inputSize), layers: layers.map(Layer.dense))
    }

    /// A multilayer perceptron: ReLU hidden layers of the given widths, then a softmax layer.
    public static func mlp(inputSize: Int, hidden: [Int], classes: Int) throws -> ModelSpec {
        guard inputSize > 0, classes > 1, hidden.allSatisfy({ $0 > 0 }) else {
            throw ModelSpecError.badSizes(inputSize: inputSize, hidden: hidden, classes: classes)
        }
        var layers: [Dense] = []
        var width = inputSize
        for size in hidden {
            layers.append(Dense(inputSize: width, outputSize: size, activation: .relu))
            width = size
        }
        layers.append(Dense(inputSize: width, outputSize: classes, activation: .softmax))
        return try ModelSpec(inputSize: inputSize, layers: layers)
    }

    /// Values per input sample.
    public var inputSize: Int { input.count }
    public var outputSize: Int { layers[layers.count - 1].outputSize }
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

    /// Whether samples of `shape` fit this model: the same image shape, or any image of the
    /// right size for a model that starts with a vector (an MLP reads an image flattened).
    public func accepts(_ shape: ImageShape) -> Bool {
        input == shape || (input.isVector && input.count == shape.count)
    }

    /// Whether dropout may run on this model: every dense layer but the last is ReLU (the
    /// backward pass finds the dropped units in the ReLU's output). Convolutions get none.
    public var allowsDropout: Bool {
        layers.dropLast().allSatisfy { layer in
            guard case let .dense(dense) = layer else { return true }
            return dense.activation == .relu
        }
    }

    /// The first layer with parameters: backward stops there, since nothing before it learns.
    public var firstTrainableLayer: Int { layers.firstIndex { $0.parameterCount > 0 } ?? 0 }

    /// Offset of each layer's slice in the flat parameter buffer.
    public var parameterOffsets: [Int] {
        var offsets: [Int] = []
        var offset = 0
        for layer in layers {
            offsets.append(offset)
            offset += layer.parameterCount
        }
        return offsets
    }

    /// The values (4 bytes each) a model's workspace holds per sample of a pass: the scaled
    /// input, each layer's output and its gradient (a flatten has none of its own), and each
    /// pooling layer's argmax mask. The im2col scratch comes on top, once.
    public var workspaceValuesPerSample: Int {
        layers.reduce(inputSize) { total, layer in
            switch layer {
            case .flatten: total
            case .maxPool: total + 3 * layer.outputSize
            case .dense, .conv: total + 2 * layer.outputSize
            }
        }
    }

    /// The im2col scratch a model's workspace holds, in floats: the largest block of any of
    /// its convolutions (`Conv2D.blockSamples` samples), which every convolution shares. It
    /// does not depend on the batch.
    public var convolutionScratchCount: Int {
        layers.reduce(0) { largest, layer in
            guard case let .conv(conv) = layer else { return largest }
            return max(largest, conv.scratchCount(rows: conv.blockSamples))
        }
    }

    /// Matrix-product FLOPs one training sample costs: each layer's forward product, the
    /// same again for its weight gradient, and again for its input gradient unless it is the
    /// first layer with parameters (whose input gradient nothing uses).
    public var trainingFlopsPerSample: Int {
        let first = firstTrainableLayer
        return layers.enumerated().reduce(0) { total, item in
            total + (item.offset <= first ? 2 : 3) * item.element.forwardProductFlops
        }
    }

    /// For example `784-128(relu)-10(softmax)` or
    /// `28x28x1-conv5x32(relu)-pool2-flatten-10(softmax)`.
    public var description: String { Self.describe(layers: layers, input: input) }

    static func describe(layers: [Layer], input: ImageShape) -> String {
        (input.isVector ? "\(input.count)" : input.description) + layers.map { "-\($0)" }.joined()
    }
}

public enum ModelSpecError: Error, CustomStringConvertible, Equatable {
    case noLayers
    case tooLarge(layer: Int, limit: Int)
    /// A layer's output or im2col rows would hold more values per sample than allowed.
    case tooManyValues(layer: Int, limit: Int)
    case shapeMismatch(layer: Int, expected: ImageShape, got: ImageShape)
    case badSizes(inputSize: Int, hidden: [Int], classes: Int)
    case invalidLayer(layer: Int, reason: String)

    public var description: String {
        switch self {
        case .noLayers:
            return "a model needs at least one layer"
        case let .tooLarge(layer, limit):
            return "layer \(layer)'s size takes the model past \(limit) parameters"
        case let .tooManyValues(layer, limit):
            return "layer \(layer) would hold more than \(limit) values per sample"
        case let .shapeMismatch(layer, expected, got):
            func text(_ shape: ImageShape) -> String { shape.isVector ? "\(shape.count) inputs" : "a \(shape) image" }
            let hint = got.isVector && !expected.isVector ? " (a flatten must come before a dense layer)" : ""
            return "layer \(layer) takes \(text(got)) but the layer before gives \(text(expected))\(hint)"
        case let .badSizes(inputSize, hidden, classes):
            return "layer sizes must be positive (input \(inputSize), hidden \(hidden), classes \(classes))"
        case let .invalidLayer(layer, reason):
            return "layer \(layer): \(reason)"
        }
    }
}
