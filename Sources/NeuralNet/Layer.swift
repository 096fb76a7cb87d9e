/// One layer of a `Sequential` model: what kind it is, and its shapes.
///
/// An enum rather than a protocol: the kinds are few and fixed by the model codec's tags,
/// and a switch lets the model and the codec see every kind in one place.
public enum Layer: Sendable, Equatable, CustomStringConvertible {
    /// Fully connected; its input is a vector (`1×1×inputSize`).
    case dense(Dense)
    case conv(Conv2D)
    case maxPool(MaxPool2D)
    /// Reinterprets an image as a vector. Channels-last storage is already flat, so it
    /// moves no data; only the shape changes.
    case flatten(ImageShape)

    public var input: ImageShape {
        switch self {
        case let .dense(layer): .vector(layer.inputSize)
        case let .conv(layer): layer.input
        case let .maxPool(layer): layer.input
        case let .flatten(shape): shape
        }
    }

    public var output: ImageShape {
        switch self {
        case let .dense(layer): .vector(layer.outputSize)
        case let .conv(layer): layer.output
        case let .maxPool(layer): layer.output
        case let .flatten(shape): .vector(shape.count)
        }
    }

    public var inputSize: Int { input.count }
    public var outputSize: Int { output.count }

    /// Weights (decayed by L2, He- or Glorot-initialised) come first in a layer's slice of
    /// the parameter buffer, then `parameterCount - weightCount` biases.
    public var weightCount: Int {
        switch self {
        case let .dense(layer): layer.weightCount
        case let .conv(layer): layer.weightCount
        case .maxPool, .flatten: 0
        }
    }

    public var parameterCount: Int {
        switch self {
        case let .dense(layer): layer.parameterCount
        case let .conv(layer): layer.parameterCount
        case .maxPool, .flatten: 0
        }
    }

    /// The nonlinearity on the output (nil: none, the layer only moves values).
    public var activation: Activation? {
        switch self {
        case let .dense(layer): layer.activation
        case let .conv(layer): layer.activation
        case .maxPool, .flatten: nil
        }
    }

    /// Fan-in and fan-out of one weight, for initialisation.
    var fans: (fanIn: Int, fanOut: Int) {
        switch self {
        case let .dense(layer): (layer.inputSize, layer.outputSize)
        case let .conv(layer): (layer.patchSize, layer.kernelSize * layer.kernelSize * layer.outputChannels)
        case .maxPool, .flatten: (0, 0)
        }
    }

    /// FLOPs of the forward matrix product per sample (the weight gradient and the input
    /// gradient each cost as much again).
    public var forwardProductFlops: Int {
        switch self {
        case let .dense(layer): 2 * layer.inputSize * layer.outputSize
        case let .conv(layer): 2 * layer.output.height * layer.output.width * layer.patchSize * layer.outputChannels
        case .maxPool, .flatten: 0
        }
    }

    /// For example `128(relu)`, `conv5x32(relu)`, `conv3x8/s2p0(relu)`, `pool2`, `flatten`.
    public var description: String {
        switch self {
        case let .dense(layer):
            return "\(layer.outputSize)(\(layer.activation))"
        case let .conv(layer):
            let geometry = layer.stride == 1 && layer.padding == layer.kernelSize / 2
                ? "" : "/s\(layer.stride)p\(layer.padding)"
            return "conv\(layer.kernelSize)x\(layer.outputChannels)\(geometry)(\(layer.activation))"
        case let .maxPool(layer):
            return "pool\(layer.size)"
        case .flatten:
            return "flatten"
        }
    }
}

extension ImageShape {
    /// A vector of `count` values, as a dense layer sees its input and output.
    public static func vector(_ count: Int) -> ImageShape { ImageShape(height: 1, width: 1, channels: count) }

    public var isVector: Bool { height == 1 && width == 1 }
}
