import Foundation
import NeuralNet
import Wire

/// A snapshot from which a run continues exactly: model, momentum, optimizer iteration,
/// position in the data (epoch, step, the data-order generator's state) and configuration.
/// A resumed run ends with the same `weights_sha256` as an uninterrupted one.
///
/// File layout, little-endian:
///
///     magic "ZMQK" · format version UInt16 · header length UInt32 · header (JSON) ·
///     parameter count UInt64 · parameters Float32 · optimizer state buffer count UInt32 ·
///     the buffers (Float32 each: SGD's velocity; Adam's two moments) · SHA-256 of all before
///
/// The header's `model` is the architecture in `ModelCodec`'s bytes, base64: the same checked
/// decoder as model files and the wire builds it. Version 4 introduced it; versions 2 and 3
/// (an MLP as JSON layer records in `spec`) still load through that decoder, and version 2
/// files have the wire precision unknown (see `validate`).
public struct Checkpoint: Equatable, Sendable {
    public var config: TrainingConfig
    public var spec: ModelSpec
    public var trainCount: Int
    public var step: Int
    public var epoch: Int
    public var stepInEpoch: Int
    public var generatorState: [UInt64]
    public var epochStatistics: BatchStatistics
    public var epochSeconds: Double
    public var trainSeconds: Double
    public var history: [EpochReport]
    public var iteration: Int
    public var parameters: [Float]
    /// The optimizer's buffers (`Optimizer.state`).
    public var optimizerState: [[Float]]
    /// How weights and gradients were rounded on the wire (it decides the weights); nil in
    /// checkpoints written before it was recorded.
    public var wirePrecision: WirePrecision?

    public static let magic: [UInt8] = Array("ZMQK".utf8)
    public static let version: UInt16 = 4
    static let readableVersions: ClosedRange<UInt16> = 2...4

    private struct Header: Codable {
        var config: TrainingConfig
        /// `ModelCodec` bytes, base64 (version 4 on).
        var model: String?
        /// Versions 2 and 3 only.
        var spec: LegacySpec?
        var trainCount: Int
        var step: Int
        var epoch: Int
        var stepInEpoch: Int
        var generatorState: [UInt64]
        var epochStatistics: BatchStatistics
        var epochSeconds: Double
        var trainSeconds: Double
        var history: [EpochReport]
        var iteration: Int
        var wirePrecision: String?

        /// The architecture's codec bytes, from whichever field this version wrote.
        func modelBytes() throws -> [UInt8] {
            if let model {
                guard let data = Data(base64Encoded: model) else { throw CheckpointError(path: nil, reason: "model is not base64") }
                return [UInt8](data)
            }
            if let spec { return try spec.codecBytes() }
            throw CheckpointError(path: nil, reason: "the header names no model")
        }
    }

    public func encode() throws -> [UInt8] {
        let header = Header(config: config, model: Data(ModelCodec.encode(spec)).base64EncodedString(), trainCount: trainCount, step: step, epoch: epoch,
                            stepInEpoch: stepInEpoch, generatorState: generatorState,
                            epochStatistics: epochStatistics, epochSeconds: epochSeconds,
                            trainSeconds: trainSeconds, history: history, iteration: iteration,
                            wirePrecision: wirePrecision?.description)
        let json = try JSONEncoder().encode(header)
        var writer = ByteWriter(capacity: 64 + json.count + parameters.count * 4 * (1 + optimizerState.count))
        writer.write(raw: Self.magic)
        writer.write(Self.version)
        writer.write(UInt32(json.count))
        writer.write(raw: json)
        writer.write(UInt64(parameters.count))
        writer.write(floats: parameters)
        writer.write(UInt32(optimizerState.count))
        for buffer in optimizerState { writer.write(floats: buffer) }
        writer.write(raw: Checksum.sha256(writer.bytes))
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8], path: String) throws -> Checkpoint {
        func fail(_ reason: String) -> CheckpointError { CheckpointError(path: path, reason: reason) }
        guard bytes.count > 4 + 32, Array(bytes[0..<4]) == magic else { throw fail("not a checkpoint (bad magic number)") }
        let body = Array(bytes[0..<(bytes.count - 32)])
        guard Checksum.sha256(body) == Array(bytes[(bytes.count - 32)...]) else {
            throw fail("checksum mismatch: the file is truncated or corrupted")
        }
        return try body.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            do {
                _ = try reader.readBytes(count: 4)
                let fileVersion = try reader.read(UInt16.self)
                guard readableVersions.contains(fileVersion) else {
                    throw fail("format version \(fileVersion) is not supported (this build reads \(readableVersions.lowerBound) to \(version))")
                }
                let headerLength = try reader.read(UInt32.self, in: 0...reader.remaining, field: "header length")
                let header = try JSONDecoder().decode(Header.self, from: Data(try reader.readBytes(count: headerLength)))
                var precision: WirePrecision?
                if let name = header.wirePrecision {
                    guard let known = WirePrecision(name: name) else { throw fail("unknown wire precision '\(name)'") }
                    precision = known
                }
                // Every count is checked against the bytes that follow before it sizes anything.
                let spec = try ModelCodec.decode(try header.modelBytes(), maximumParameterCount: reader.remaining / 4)
                let count = try reader.read(UInt64.self, in: 0...(reader.remaining / 4), field: "parameter count")
                guard count == spec.parameterCount else {
                    throw fail("holds \(count) parameters; \(spec) needs \(spec.parameterCount)")
                }
                let parameters = try reader.readFloats(count: count)
                let bufferCount = try reader.read(UInt32.self, in: 0...2, field: "optimizer buffer count")
                let expectedBuffers = header.config.makeOptimizer(parameterCount: 0).state.count
                guard bufferCount == expectedBuffers, reader.remaining == bufferCount * count * 4 else {
                    throw fail("holds \(bufferCount) optimizer buffers of the wrong size; \(header.config.optimizer.rawValue) needs \(expectedBuffers) of \(count)")
                }
                return Checkpoint(config: header.config, spec: spec, trainCount: header.trainCount,
                                  step: header.step, epoch: header.epoch, stepInEpoch: header.stepInEpoch,
                                  generatorState: header.generatorState, epochStatistics: header.epochStatistics,
                                  epochSeconds: header.epochSeconds, trainSeconds: header.trainSeconds,
                                  history: header.history, iteration: header.iteration,
                                  parameters: parameters,
                                  optimizerState: try (0..<bufferCount).map { _ in try reader.readFloats(count: count) },
                                  wirePrecision: precision)
            } catch let error as CheckpointError {
                throw error.path == nil ? fail(error.reason) : error
            } catch let error as DecodingError {
                throw fail("invalid header: \(Self.explain(error))")
            } catch {
                throw fail("\(error)")
            }
        }
    }

    /// JSON layer records of versions 2 and 3: `{"inputSize": 784, "layers": [{"inputSize",
    /// "outputSize", "activation"}…]}`.
    private struct LegacySpec: Codable {
        struct Record: Codable {
            var inputSize: Int
            var outputSize: Int
            var activation: Activation
        }
        var inputSize: Int
        var layers: [Record]

        /// The same MLP in `ModelCodec`'s bytes, so that it meets the codec's checks; sizes
        /// outside what the codec can hold, and layers that do not chain, are refused here.
        func codecBytes() throws -> [UInt8] {
            let sizes = 1...ModelCodec.maximumValuesPerSample
            guard sizes.contains(inputSize), (1...ModelCodec.maximumLayerCount).contains(layers.count) else {
                throw CheckpointError(path: nil, reason: "model of \(layers.count) layers on \(inputSize) inputs")
            }
            var writer = ByteWriter()
            for value in [1, 1, inputSize] { writer.write(UInt32(value)) }
            writer.write(UInt16(layers.count))
            var width = inputSize
            for (index, record) in layers.enumerated() {
                guard record.inputSize == width, sizes.contains(record.outputSize) else {
                    throw CheckpointError(path: nil, reason: "model layer \(index) takes \(record.inputSize) inputs and gives \(record.outputSize) but the layer before gives \(width)")
                }
                writer.write(ModelCodec.Kind.dense.rawValue)
                writer.write(UInt32(record.outputSize))
                writer.write(record.activation.rawValue)
                width = record.outputSize
            }
            return writer.bytes
        }
    }

    /// A decoding error in one line, with the field it is about.
    private static func explain(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            context.codingPath.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case let .dataCorrupted(context): return "\(path(context)): \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)"
        case let .keyNotFound(key, context): return "\(path(context)): missing \(key.stringValue)"
        case let .typeMismatch(_, context), let .valueNotFound(_, context): return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// Atomic: temporary file, fsync, rename.
    public func save(to path: String) throws {
        try AtomicFile.write(encode(), to: path)
    }

    public static func load(from path: String) throws -> Checkpoint {
        let bytes: [UInt8]
        do {
            bytes = try RegularFile.read(path)
        } catch let error as ModelFileError {
            throw CheckpointError(path: path, reason: error.reason)
        }
        return try decode(bytes, path: path)
    }
}

public struct CheckpointError: Error, CustomStringConvertible {
    public var path: String?
    public var reason: String

    public init(path: String?, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "checkpoint \(path ?? ""): \(reason)".replacingOccurrences(of: "checkpoint : ", with: "checkpoint: ") }
}

