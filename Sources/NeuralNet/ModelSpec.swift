/// The architecture of a sequential network: the input width and its dense layers in order.
///
/// Parameter layout (the "flat buffer" that optimizers, the wire and model files share):
/// for each layer in order, its weights `inputSize × outputSize` row-major, then its
/// `outputSize` biases. Gradients and momentum mirror the same layout.
public struct ModelSpec: Sendable, Equatable, Codable, CustomStringConvertible {
    public let inputSize: Int
    public let layers: [Dense]

    public init(inputSize: Int, layers: [Dense]) throws {
        guard !layers.isEmpty else { throw ModelSpecError.noLayers }
        var width = inputSize
        for (index, layer) in layers.enumerated() {
            guard layer.inputSize == width else {
                throw ModelSpecError.shapeMismatch(layer: index, expected: width, got: layer.inputSize)
            }
            width = layer.outputSize
        }
        self.inputSize = inputSize
        self.layers = layers
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

    public var outputSize: Int { layers[layers.count - 1].outputSize }
    public var parameterCount: Int { layers.reduce(0) { $0 + $1.parameterCount } }

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

    /// Matrix-product FLOPs one training sample costs: forward `2·in·out` per layer, and
    /// backward `2·in·out` for the weight gradient plus `2·in·out` for the input gradient of
    /// every layer but the first.
    public var trainingFlopsPerSample: Int {
        layers.enumerated().reduce(0) { total, item in
            let product = 2 * item.element.inputSize * item.element.outputSize
            return total + (item.offset == 0 ? 2 : 3) * product
        }
    }

    /// For example `784-128(relu)-10(softmax)`.
    public var description: String {
        "\(inputSize)" + layers.map { "-\($0.outputSize)(\($0.activation))" }.joined()
    }
}

public enum ModelSpecError: Error, CustomStringConvertible, Equatable {
    case noLayers
    case shapeMismatch(layer: Int, expected: Int, got: Int)
    case badSizes(inputSize: Int, hidden: [Int], classes: Int)

    public var description: String {
        switch self {
        case .noLayers:
            "a model needs at least one layer"
        case let .shapeMismatch(layer, expected, got):
            "layer \(layer) takes \(got) inputs but the layer before gives \(expected)"
        case let .badSizes(inputSize, hidden, classes):
            "layer sizes must be positive (input \(inputSize), hidden \(hidden), classes \(classes))"
        }
    }
}
