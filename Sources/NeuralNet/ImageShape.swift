/// The shape of one sample seen as an image, stored channels-last (`height × width × channels`).
public struct ImageShape: Sendable, Equatable, Hashable, Codable, CustomStringConvertible {
    public let height: Int
    public let width: Int
    public let channels: Int

    public init(height: Int, width: Int, channels: Int) {
        self.height = height
        self.width = width
        self.channels = channels
    }

    /// Values per sample.
    public var count: Int { height * width * channels }

    /// For example `28x28x1`.
    public var description: String { "\(height)x\(width)x\(channels)" }
}

public enum LayerShapeError: Error, CustomStringConvertible, Equatable {
    case badConvolution(input: ImageShape, kernel: Int, stride: Int, padding: Int, channels: Int)
    case badPooling(input: ImageShape, size: Int)

    public var description: String {
        switch self {
        case let .badConvolution(input, kernel, stride, padding, channels):
            "a \(kernel)x\(kernel) convolution (stride \(stride), padding \(padding), \(channels) channels) "
                + "does not fit a \(input) input"
        case let .badPooling(input, size):
            "a \(size)x\(size) pooling does not fit a \(input) input"
        }
    }
}
