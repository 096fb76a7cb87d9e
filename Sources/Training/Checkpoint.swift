import Foundation
import NeuralNet

/// A snapshot from which a run continues exactly: model, momentum, optimizer iteration,
/// position in the data (epoch, step, the data-order generator's state) and configuration.
/// A resumed run ends with the same `weights_sha256` as an uninterrupted one.
///
/// File layout, little-endian:
///
///     magic "ZMQK" · format version UInt16 · header length UInt32 · header (JSON) ·
///     parameter count UInt64 · parameters Float32 · optimizer state buffer count UInt32 ·
///     the buffers (Float32 each: SGD's velocity; Adam's two moments) · SHA-256 of all before
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

    public static let magic: [UInt8] = Array("ZMQK".utf8)
    public static let version: UInt16 = 2

    /// Refuses to continue a different run: the settings that decide the weights must match.
    func checkCompatible(with other: TrainingConfig, spec otherSpec: ModelSpec, trainCount otherCount: Int) throws {
        var differences: [String] = []
        func compare<T: Equatable>(_ name: String, _ a: T, _ b: T) {
            if a != b { differences.append("\(name) \(a) (checkpoint) vs \(b)") }
        }
        compare("--hidden", config.hidden, other.hidden)
        compare("--batch-size", config.batchSize, other.batchSize)
        compare("--learning-rate", config.learningRate, other.learningRate)
        compare("--decay", config.decay, other.decay)
        compare("--momentum", config.momentum, other.momentum)
        compare("--optimizer", config.optimizer.rawValue, other.optimizer.rawValue)
        compare("--beta1", config.beta1, other.beta1)
        compare("--beta2", config.beta2, other.beta2)
        compare("--l2", config.l2, other.l2)
        compare("--dropout", config.dropout, other.dropout)
        compare("--seed", config.seed, other.seed)
        compare("--shards", config.shardCount, other.shardCount)
        compare("model", spec.description, otherSpec.description)
        compare("training samples", trainCount, otherCount)
        guard differences.isEmpty else {
            throw CheckpointError(path: nil, reason: "it belongs to another run: " + differences.joined(separator: "; "))
        }
    }

    private struct Header: Codable {
        var config: TrainingConfig
        var spec: ModelSpec
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
    }

    public func encode() throws -> [UInt8] {
        let header = Header(config: config, spec: spec, trainCount: trainCount, step: step, epoch: epoch,
                            stepInEpoch: stepInEpoch, generatorState: generatorState,
                            epochStatistics: epochStatistics, epochSeconds: epochSeconds,
                            trainSeconds: trainSeconds, history: history, iteration: iteration)
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
                guard fileVersion == version else { throw fail("format version \(fileVersion), expected \(version)") }
                let headerLength = Int(try reader.read(UInt32.self))
                let json = Data(try reader.readBytes(count: headerLength))
                let header = try JSONDecoder().decode(Header.self, from: json)
                let count = Int(try reader.read(UInt64.self))
                guard count == header.spec.parameterCount, reader.remaining >= count * 4 + 4 else {
                    throw fail("holds \(count) parameters; \(header.spec) needs \(header.spec.parameterCount)")
                }
                let parameters = try reader.readFloats(count: count)
                let bufferCount = Int(try reader.read(UInt32.self))
                let expectedBuffers = header.config.makeOptimizer(parameterCount: 0).state.count
                guard bufferCount == expectedBuffers, reader.remaining == bufferCount * count * 4 else {
                    throw fail("holds \(bufferCount) optimizer buffers of the wrong size; \(header.config.optimizer.rawValue) needs \(expectedBuffers) of \(count)")
                }
                guard header.generatorState.count == 4, header.generatorState.contains(where: { $0 != 0 }) else {
                    throw fail("invalid data-order generator state")
                }
                return Checkpoint(config: header.config, spec: header.spec, trainCount: header.trainCount,
                                  step: header.step, epoch: header.epoch, stepInEpoch: header.stepInEpoch,
                                  generatorState: header.generatorState, epochStatistics: header.epochStatistics,
                                  epochSeconds: header.epochSeconds, trainSeconds: header.trainSeconds,
                                  history: header.history, iteration: header.iteration,
                                  parameters: parameters,
                                  optimizerState: try (0..<bufferCount).map { _ in try reader.readFloats(count: count) })
            } catch let error as CheckpointError {
                throw error
            } catch {
                throw fail("\(error)")
            }
        }
    }

    /// Atomic: temporary file, fsync, rename.
    public func save(to path: String) throws {
        try AtomicFile.write(encode(), to: path)
    }

    public static func load(from path: String) throws -> Checkpoint {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CheckpointError(path: path, reason: "cannot read the file")
        }
        return try decode([UInt8](data), path: path)
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

