/// Preallocated buffers of a `Sequential` model's passes for up to `capacity` rows: the
/// scaled input, each layer's output and output gradient, each pooling layer's argmax mask,
/// and one im2col scratch that every convolution shares.
///
/// A flatten layer moves no data, so it has no buffers: the layer after it reads the output
/// of the layer before it (`inputSource`).
final class Workspace {
    private let spec: ModelSpec
    private(set) var capacity = 0
    private(set) var input: UnsafeMutablePointer<Float>?
    private(set) var outputs: [UnsafeMutablePointer<Float>] = []
    private(set) var gradients: [UnsafeMutablePointer<Float>] = []
    private(set) var argmax: [UnsafeMutablePointer<Int32>?] = []
    /// For each layer, the layer whose output buffer is its input (nil: the model's input).
    let inputSource: [Int?]
    /// The im2col scratch, and for each layer the part of it that layer uses (0 unless conv).
    let scratch: UnsafeMutablePointer<Float>
    let scratchCapacity: [Int]

    init(spec: ModelSpec) {
        self.spec = spec
        var source: Int?
        var sources: [Int?] = []
        for (index, layer) in spec.layers.enumerated() {
            sources.append(source)
            if case .flatten = layer { continue }
            source = index
        }
        inputSource = sources
        scratchCapacity = spec.layers.map { layer in
            guard case let .conv(conv) = layer else { return 0 }
            return conv.scratchCount(rows: conv.blockSamples)
        }
        scratch = .allocate(capacity: max(1, spec.convolutionScratchCount))
    }

    deinit {
        release()
        scratch.deallocate()
    }

    /// Grows the buffers when a larger batch arrives; a no-op otherwise.
    func reserve(rows: Int) {
        guard rows > capacity else { return }
        release()
        capacity = rows
        input = .allocate(capacity: rows * spec.inputSize)
        for layer in spec.layers {
            let values: Int
            if case .flatten = layer { values = 1 } else { values = rows * layer.outputSize }
            outputs.append(.allocate(capacity: values))
            gradients.append(.allocate(capacity: values))
            if case .maxPool = layer { argmax.append(.allocate(capacity: values)) } else { argmax.append(nil) }
        }
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
        argmax.forEach { $0?.deallocate() }
        input = nil
        outputs = []
        gradients = []
        argmax = []
    }
}
