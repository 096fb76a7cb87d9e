import Foundation

/// Models as a user types them: comma-separated layers, for example
/// `conv5x32,pool2,conv5x64,pool2,dense128,dense10`.
///
/// - `convKxC`: a K×K convolution to C channels, stride 1, padding K/2 ('same' for odd K), ReLU.
/// - `poolP`: P×P max pooling.
/// - `denseN`: a dense layer of N units, ReLU; the last layer must be dense, has softmax,
///   and N must be the data's class count.
/// - `flatten`: optional; one is put before the first dense layer that follows an image.
extension ModelSpec {
    /// - Parameters:
    ///   - input: one sample's shape, from the data set.
    ///   - classes: the data set's class count.
    public static func parse(_ text: String, input: ImageShape, classes: Int) throws -> ModelSpec {
        let tokens = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        var layers: [Layer] = []
        var shape = input
        for (index, token) in tokens.enumerated() {
            let isLast = index == tokens.count - 1
            func fail(_ reason: String) -> ModelDescriptionError { ModelDescriptionError(token: token, reason: reason) }
            do {
                if token == "flatten" {
                    layers.append(.flatten(shape))
                } else if let number = Self.number(after: "dense", in: token, range: 1...(1 << 24)) {
                    if !shape.isVector { layers.append(.flatten(shape)) }
                    if isLast && number != classes {
                        throw fail("the last layer gives the class scores, so it needs \(classes) units (the data's classes)")
                    }
                    layers.append(.dense(Dense(inputSize: shape.count, outputSize: number, activation: isLast ? .softmax : .relu)))
                } else if token.hasPrefix("conv") {
                    let parts = token.dropFirst(4).split(separator: "x", omittingEmptySubsequences: false)
                    guard parts.count == 2, let kernel = Int(parts[0]), let channels = Int(parts[1]),
                          (1...255).contains(kernel), (1...(1 << 16)).contains(channels)
                    else { throw fail("write convKxC with a kernel size K in 1…255 and C in 1…65536 channels, e.g. conv5x32") }
                    guard shape.height > 1 || shape.width > 1 || layers.isEmpty else {
                        throw fail("a convolution needs an image, not the vector a dense layer gives")
                    }
                    layers.append(.conv(try Conv2D(input: shape, outputChannels: channels, kernelSize: kernel,
                                                   padding: kernel / 2, activation: .relu)))
                } else if let size = Self.number(after: "pool", in: token, range: 1...255) {
                    layers.append(.maxPool(try MaxPool2D(input: shape, size: size)))
                } else if token.hasPrefix("dense") {
                    throw fail("write denseN with N in 1…16777216 units, e.g. dense128")
                } else if token.hasPrefix("pool") {
                    throw fail("write poolP with a window size P in 1…255, e.g. pool2")
                } else {
                    throw fail("unknown layer (use convKxC, poolP, denseN or flatten)")
                }
            } catch let error as LayerShapeError {
                throw fail(error.description)
            }
            shape = layers[layers.count - 1].output
        }
        guard case .dense = layers.last else {
            throw ModelDescriptionError(token: tokens.last ?? "", reason: "the last layer must be dense (denseN, N the class count)")
        }
        do {
            let spec = try ModelSpec(input: input, layers: layers)
            // The same limits as a model read from a file or the wire: nothing typed here can
            // build a model they would refuse.
            return try ModelCodec.decode(ModelCodec.encode(spec), maximumParameterCount: ModelCodec.maximumTypedParameterCount)
        } catch let error as ModelSpecError {
            throw ModelDescriptionError(token: nil, reason: "\(ModelSpec.describe(layers: layers, input: input)): \(error)")
        }
    }

    private static func number(after prefix: String, in token: String, range: ClosedRange<Int>) -> Int? {
        guard token.hasPrefix(prefix), let value = Int(token.dropFirst(prefix.count)), range.contains(value) else { return nil }
        return value
    }
}

/// A layer of a typed model description that cannot be built, and why.
public struct ModelDescriptionError: Error, CustomStringConvertible, Equatable {
    /// The layer as typed (nil: the model as a whole).
    public let token: String?
    public let reason: String
    public var description: String { token.map { "--model layer '\($0)': \(reason)" } ?? "--model: \(reason)" }
}
