/// The one encoding of a `ModelSpec`, shared by model files, checkpoints and the wire; its
/// decoder is the only way to build a model from bytes. Little-endian:
///
///     size  field
///     4     input height (UInt32)
///     4     input width (UInt32)
///     4     input channels (UInt32)
///     2     layer count L (UInt16, 1…1024)
///     …     L layers, each a kind tag (UInt8) and the kind's fields:
///             1 dense:    output size UInt32, activation UInt8
///             2 conv:     output channels UInt32, kernel size UInt16, stride UInt16,
///                         padding UInt16, activation UInt8
///             3 max pool: window size UInt16
///             4 flatten:  nothing
///
/// Every layer's input shape is the shape the one before gives, so the bytes hold no shape
/// twice and none can disagree. `Activation` codes are its raw values.
public enum ModelCodec {
    public enum Kind: UInt8, Sendable {
        case dense = 1, conv = 2, maxPool = 3, flatten = 4
    }

    public static let maximumLayerCount = 1024
    /// The most values one sample may hold in the input, in any layer's output or in a
    /// convolution's im2col rows (2²⁴ floats, 64 MiB): the workspace is sized from these,
    /// so a decoded model cannot ask for more memory per sample than this.
    public static let maximumValuesPerSample = 1 << 24
    /// The most parameters a model built in code may have (2³⁰, 4 GiB of weights alone):
    /// far beyond any model this trainer can train, and small enough that a parameter count
    /// times the bytes of every buffer a run keeps cannot overflow.
    public static let maximumTypedParameterCount = 1 << 30

    public static func encode(_ spec: ModelSpec) -> [UInt8] {
        var writer = ByteWriter()
        write(spec, to: &writer)
        return writer.bytes
    }

    /// SHA-256 of the encoding: what a worker's hello names the model by.
    public static func hash(_ spec: ModelSpec) -> [UInt8] { Checksum.sha256(encode(spec)) }

    public static func write(_ spec: ModelSpec, to writer: inout ByteWriter) {
        writer.write(UInt32(spec.input.height))
        writer.write(UInt32(spec.input.width))
        writer.write(UInt32(spec.input.channels))
        writer.write(UInt16(spec.layers.count))
        for layer in spec.layers {
            switch layer {
            case let .dense(dense):
                writer.write(Kind.dense.rawValue)
                writer.write(UInt32(dense.outputSize))
                writer.write(dense.activation.rawValue)
            case let .conv(conv):
                writer.write(Kind.conv.rawValue)
                writer.write(UInt32(conv.outputChannels))
                writer.write(UInt16(conv.kernelSize))
                writer.write(UInt16(conv.stride))
                writer.write(UInt16(conv.padding))
                writer.write(conv.activation.rawValue)
            case let .maxPool(pool):
                writer.write(Kind.maxPool.rawValue)
                writer.write(UInt16(pool.size))
            case .flatten:
                writer.write(Kind.flatten.rawValue)
            }
        }
    }

    /// Decodes a spec that must fill `bytes` exactly.
    public static func decode(_ bytes: [UInt8], maximumParameterCount: Int) throws -> ModelSpec {
        try bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            let spec = try read(from: &reader, maximumParameterCount: maximumParameterCount)
            guard reader.remaining == 0 else {
                throw ModelSpecError.invalidLayer(layer: spec.layers.count - 1, reason: "\(reader.remaining) bytes follow the last layer")
            }
            return spec
        }
    }

    /// Reads one spec. Every size is range-checked as it is read, and the parameter count
    /// and per-sample values are computed with checked arithmetic against
    /// `maximumParameterCount` (which the caller derives from the bytes actually there: a
    /// file's remaining length, a message's size) and `maximumValuesPerSample`, so no
    /// header can trap or make the model allocate what its source does not justify.
    /// - Throws: `ByteReaderError` (truncated, out of range) or `ModelSpecError`.
    public static func read(from reader: inout ByteReader, maximumParameterCount: Int) throws -> ModelSpec {
        let dimensions = 1...maximumValuesPerSample
        let input = ImageShape(height: try reader.read(UInt32.self, in: dimensions, field: "input height"),
                               width: try reader.read(UInt32.self, in: dimensions, field: "input width"),
                               channels: try reader.read(UInt32.self, in: dimensions, field: "input channels"))
        guard CheckedSize.product([input.height, input.width, input.channels], atMost: maximumValuesPerSample) != nil else {
            throw ModelSpecError.tooManyValues(layer: 0, limit: maximumValuesPerSample)
        }
        let count = try reader.read(UInt16.self, in: 1...maximumLayerCount, field: "layer count")
        var budget = LayerBudget(maximumParameters: maximumParameterCount)
        var layers: [Layer] = []
        var shape = input
        for index in 0..<count {
            let layer = try readLayer(index, input: shape, from: &reader, budget: &budget)
            layers.append(layer)
            shape = layer.output
        }
        return try ModelSpec(input: input, layers: layers)
    }

    private static func readLayer(_ index: Int, input: ImageShape, from reader: inout ByteReader,
                                  budget: inout LayerBudget) throws -> Layer {
        let code = try reader.read(UInt8.self)
        guard let kind = Kind(rawValue: code) else {
            throw ModelSpecError.invalidLayer(layer: index, reason: "unknown layer kind \(code)")
        }
        let sizes = 1...maximumValuesPerSample
        switch kind {
        case .dense:
            let outputs = try reader.read(UInt32.self, in: sizes, field: "layer \(index) output size")
            let activation = try readActivation(index, from: &reader)
            guard input.isVector else {
                throw ModelSpecError.shapeMismatch(layer: index, expected: input, got: .vector(input.count))
            }
            try budget.add(layer: index, parameters: [[input.count, outputs], [outputs]], values: [[outputs]])
            return .dense(Dense(inputSize: input.count, outputSize: outputs, activation: activation))
        case .conv:
            let channels = try reader.read(UInt32.self, in: sizes, field: "layer \(index) channels")
            let kernel = try reader.read(UInt16.self, in: 1...Int(UInt16.max), field: "layer \(index) kernel size")
            let stride = try reader.read(UInt16.self, in: 1...Int(UInt16.max), field: "layer \(index) stride")
            let padding = try reader.read(UInt16.self, in: 0...Int(UInt16.max), field: "layer \(index) padding")
            let activation = try readActivation(index, from: &reader)
            // Every factor is at most 2²⁴, so the geometry below cannot overflow.
            let conv = try checked(index) {
                try Conv2D(input: input, outputChannels: channels, kernelSize: kernel, stride: stride,
                           padding: padding, activation: activation)
            }
            let positions = conv.output.height * conv.output.width
            try budget.add(layer: index, parameters: [[kernel, kernel, input.channels, channels], [channels]],
                           values: [[positions, channels], [positions, kernel, kernel, input.channels]])
            return .conv(conv)
        case .maxPool:
            let size = try reader.read(UInt16.self, in: 1...Int(UInt16.max), field: "layer \(index) pool size")
            return .maxPool(try checked(index) { try MaxPool2D(input: input, size: size) })
        case .flatten:
            return .flatten(input)
        }
    }

    private static func readActivation(_ index: Int, from reader: inout ByteReader) throws -> Activation {
        let code = try reader.read(UInt8.self)
        guard let activation = Activation(rawValue: code) else {
            throw ModelSpecError.invalidLayer(layer: index, reason: "unknown activation \(code)")
        }
        return activation
    }

    private static func checked<T>(_ index: Int, _ make: () throws -> T) throws -> T {
        do { return try make() } catch let error as LayerShapeError {
            throw ModelSpecError.invalidLayer(layer: index, reason: error.description)
        }
    }

    /// The running parameter count and the per-sample limit, in checked arithmetic.
    private struct LayerBudget {
        let maximumParameters: Int
        var parameters = 0

        init(maximumParameters: Int) { self.maximumParameters = max(0, maximumParameters) }

        /// - Parameters:
        ///   - parameters: factors of each parameter block the layer adds (weights, biases).
        ///   - values: factors of each per-sample buffer the layer needs.
        mutating func add(layer: Int, parameters blocks: [[Int]], values: [[Int]]) throws {
            for factors in values where CheckedSize.product(factors, atMost: maximumValuesPerSample) == nil {
                throw ModelSpecError.tooManyValues(layer: layer, limit: maximumValuesPerSample)
            }
            var total = parameters
            for factors in blocks {
                guard let block = CheckedSize.product(factors),
                      let next = CheckedSize.sum([total, block], atMost: maximumParameters)
                else { throw ModelSpecError.tooLarge(layer: layer, limit: maximumParameters) }
                total = next
            }
            parameters = total
        }
    }
}
