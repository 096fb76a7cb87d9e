/// The architecture of a sequential network: the input width and its dense layers in order.
///
/// Parameter layout (the "flat buffer" that optimizers, the wire and model files share):
/// for each layer in order, its weights `inputSize × outputSize` row-major, then its
/// `outputSize` biases. Gradients and momentum mirror the same layout.
public struct ModelSpec: Sendable, Equatable, CustomStringConvertible {
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

    /// A spec from sizes that came from outside (a model file, a checkpoint, the wire): the
    /// one way to build a model from bytes. Every size must be positive and the parameter
    /// count, computed with checked arithmetic, at most `maximumParameterCount`, which callers
    /// derive from the bytes actually there; so no header can trap or ask for memory its file
    /// does not fill.
    public init(untrustedInputSize inputSize: Int, layers shape: [(outputSize: Int, activation: Activation)],
                maximumParameterCount: Int) throws {
        guard !shape.isEmpty else { throw ModelSpecError.noLayers }
        guard inputSize > 0, shape.allSatisfy({ $0.outputSize > 0 }) else {
            throw ModelSpecError.badSizes(inputSize: inputSize, hidden: shape.map(\.outputSize), classes: 0)
        }
        var width = inputSize
        var parameterCount = 0
        var layers: [Dense] = []
        for (index, layer) in shape.enumerated() {
            guard let weights = CheckedSize.product([width, layer.outputSize]),
                  let total = CheckedSize.sum([parameterCount, weights, layer.outputSize], atMost: maximumParameterCount)
            else { throw ModelSpecError.tooLarge(layer: index, limit: maximumParameterCount) }
            parameterCount = total
            layers.append(Dense(inputSize: width, outputSize: layer.outputSize, activation: layer.activation))
            width = layer.outputSize
        }
        try self.init(inputSize: inputSize, layers: layers)
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

/// JSON (in checkpoints) as `{"inputSize": 784, "layers": [{"inputSize", "outputSize",
/// "activation"}…]}`; decoding goes through the checked initializer, so a spec read back is
/// as valid as one built in code.
extension ModelSpec: Codable {
    private enum CodingKeys: String, CodingKey { case inputSize, layers }
    private struct LayerRecord: Codable {
        var inputSize: Int
        var outputSize: Int
        var activation: Activation
    }

    /// Far beyond any model this trainer can hold, and small enough that a parameter count
    /// times the bytes of every buffer the run keeps cannot overflow.
    public static let maximumDecodedParameterCount = 1 << 40

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let inputSize = try container.decode(Int.self, forKey: .inputSize)
        let records = try container.decode([LayerRecord].self, forKey: .layers)
        var width = inputSize
        for (index, record) in records.enumerated() {
            guard record.inputSize == width else {
                throw ModelSpecError.shapeMismatch(layer: index, expected: width, got: record.inputSize)
            }
            width = record.outputSize
        }
        try self.init(untrustedInputSize: inputSize, layers: records.map { ($0.outputSize, $0.activation) },
                      maximumParameterCount: Self.maximumDecodedParameterCount)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(inputSize, forKey: .inputSize)
        try container.encode(layers.map { LayerRecord(inputSize: $0.inputSize, outputSize: $0.outputSize, activation: $0.activation) },
                             forKey: .layers)
    }
}

public enum ModelSpecError: Error, CustomStringConvertible, Equatable {
    case noLayers
    case tooLarge(layer: Int, limit: Int)
    case shapeMismatch(layer: Int, expected: Int, got: Int)
    case badSizes(inputSize: Int, hidden: [Int], classes: Int)

    public var description: String {
        switch self {
        case .noLayers:
            "a model needs at least one layer"
        case let .tooLarge(layer, limit):
            "layer \(layer)'s size takes the model past \(limit) parameters"
        case let .shapeMismatch(layer, expected, got):
            "layer \(layer) takes \(got) inputs but the layer before gives \(expected)"
        case let .badSizes(inputSize, hidden, classes):
            "layer sizes must be positive (input \(inputSize), hidden \(hidden), classes \(classes))"
        }
    }
}
