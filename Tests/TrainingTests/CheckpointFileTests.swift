import Foundation
import MNISTData
import NeuralNet
import Training
import Wire
import XCTest

/// Crafted checkpoints, with valid checksums: each is refused before it reaches the trainer's
/// state, naming what does not fit; none traps or is read past its end.
final class CheckpointFileTests: XCTestCase {
    private static var data: (Dataset, Dataset)?

    override class func setUp() {
        guard let folder = try? makeSyntheticData(trainCount: 320, testCount: 50) else { return }
        data = try? DataDirectory.loadTrainAndTest(from: folder)
        try? FileManager.default.removeItem(atPath: folder)
    }

    private var config: TrainingConfig {
        var config = TrainingConfig()
        config.hidden = [8]
        config.batchSize = 64
        config.epochs = 3
        config.maximumSteps = 7  // inside the second epoch (5 steps each)
        return config
    }

    private func trainer(_ checkpoint: Checkpoint? = nil, precision: WirePrecision = .fp32) throws -> Trainer {
        let (train, test) = try XCTUnwrap(Self.data)
        return try Trainer(config: config, train: train, test: test, source: LocalShardSource(precision: precision),
                           resume: checkpoint)
    }

    private func saved(precision: WirePrecision = .fp32, steps: Int = 7) throws -> Checkpoint {
        let (train, test) = try XCTUnwrap(Self.data)
        var config = config
        config.maximumSteps = steps
        let trainer = try Trainer(config: config, train: train, test: test, source: LocalShardSource(precision: precision))
        try trainer.run()
        return trainer.checkpoint()
    }

    /// The file of `checkpoint` with fields of its JSON header set (`key` to the JSON text
    /// `value`) or rewritten (regular expressions), its version or parameter count changed, and its checksum
    /// made valid again. The header is edited as text: a JSON round trip through
    /// `JSONSerialization` would not keep its 64-bit generator state exact.
    private func crafted(_ checkpoint: Checkpoint, version: UInt16? = nil, parameterCount: UInt64? = nil,
                         set fields: [(key: String, value: String)] = [],
                         replace replacements: [(pattern: String, replacement: String)] = []) throws -> [UInt8] {
        let bytes = try checkpoint.encode()
        let headerLength = bytes[6..<10].withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) }
        var header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
        for (key, value) in fields {
            // The header's own field (nesting depth 1), not one of the same name in its
            // history; `epochStatistics.` reaches into that object. Key order varies by run.
            let depth = key.hasPrefix("epochStatistics.") ? 2 : 1
            let name = key.replacingOccurrences(of: "epochStatistics.", with: "")
            let pattern = "\"\(name)\":(-?[0-9.e+]+|\"[^\"]*\"|\\[[0-9,]*\\])"
            var searchStart = header.startIndex
            var found: Range<String.Index>?
            while found == nil, let range = header.range(of: pattern, options: .regularExpression, range: searchStart..<header.endIndex) {
                let prefix = header[..<range.lowerBound]
                let opened = prefix.filter { $0 == "{" || $0 == "[" }.count, closed = prefix.filter { $0 == "}" || $0 == "]" }.count
                if opened - closed == depth { found = range }
                searchStart = range.upperBound
            }
            let range = try XCTUnwrap(found, "no \(key) in \(header)")
            header.replaceSubrange(range, with: "\"\(name)\":\(value)")
        }
        for (pattern, replacement) in replacements {
            XCTAssertNotNil(header.range(of: pattern, options: .regularExpression), "no \(pattern) in \(header)")
            header = header.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        let json = Array(header.utf8)
        var writer = ByteWriter()
        writer.write(raw: Checkpoint.magic)
        writer.write(version ?? Checkpoint.version)
        writer.write(UInt32(json.count))
        writer.write(raw: json)
        var rest = Array(bytes[(10 + headerLength)..<(bytes.count - 32)])
        if let parameterCount { withUnsafeBytes(of: parameterCount.littleEndian) { rest.replaceSubrange(0..<8, with: $0) } }
        writer.write(raw: rest)
        writer.write(raw: Checksum.sha256(writer.bytes))
        return writer.bytes
    }

    private func assertRefused(_ bytes: [UInt8], _ reason: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try trainer(try Checkpoint.decode(bytes, path: "crafted.ckpt")), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(reason), "\(error)", file: file, line: line)
        }
    }

    func testTheUntouchedCheckpointResumes() throws {
        let checkpoint = try saved()
        XCTAssertEqual(checkpoint.wirePrecision, .fp32)
        XCTAssertEqual(try Checkpoint.decode(try crafted(checkpoint), path: "c"), checkpoint)
        XCTAssertEqual(try Checkpoint.decode(try crafted(checkpoint, set: [("step", "7")]), path: "c"), checkpoint)
        XCTAssertNoThrow(try trainer(try Checkpoint.decode(try crafted(checkpoint), path: "c")))
        // At an epoch's end, the statistics still describe the epoch just done.
        let epochEnd = try saved(steps: 5)
        XCTAssertEqual(epochEnd.stepInEpoch, 0)
        XCTAssertGreaterThan(epochEnd.epochStatistics.sampleCount, 0)
        XCTAssertNoThrow(try trainer(epochEnd))
    }

    func testCountsAndPositionsOutOfRangeAreRefused() throws {
        let checkpoint = try saved()
        assertRefused(try crafted(checkpoint, parameterCount: 1 << 63), "parameter count 9223372036854775808")
        assertRefused(try crafted(checkpoint, parameterCount: 3), "holds 3 parameters")
        assertRefused(try crafted(checkpoint, set: [("stepInEpoch", "-1")]), "position does not add up")
        assertRefused(try crafted(checkpoint, set: [("stepInEpoch", "1099511627776")]), "position does not add up")
        assertRefused(try crafted(checkpoint, set: [("step", "\(Int.max)")]), "position does not add up")
        assertRefused(try crafted(checkpoint, set: [("iteration", "\(Int.max)")]), "position does not add up")
        assertRefused(try crafted(checkpoint, set: [("epoch", "\(Int.max / 2)")]), "position does not add up")
        assertRefused(try crafted(checkpoint, set: [("step", "1e30")]), "invalid header")
        assertRefused(try crafted(checkpoint, set: [("epochStatistics.sampleCount", "\(Int.max)")]), "statistics of the current epoch")
        assertRefused(try crafted(checkpoint, set: [("generatorState", "[0,0,0,0]")]), "generator state")
    }

    /// A spec whose layers do not chain (the description alone looks right) and parameters
    /// that do not fit the run's model were once accepted and read past. Versions 2 and 3
    /// carried the spec as JSON layer records; they load through the model codec's checks.
    func testAParameterArrayThatDoesNotFitTheModelIsRefused() throws {
        let checkpoint = try saved()
        let model = "\"model\":\"[^\"]*\""
        func legacy(_ secondInputs: Int) -> String {
            #""spec":{"inputSize":784,"layers":[{"inputSize":784,"outputSize":8,"activation":1},"#
                + #"{"inputSize":\#(secondInputs),"outputSize":10,"activation":4}]}"#
        }
        XCTAssertEqual(try Checkpoint.decode(try crafted(checkpoint, version: 3, replace: [(model, legacy(8))]), path: "c"), checkpoint)
        // The second layer claims 9 inputs; the first gives 8.
        assertRefused(try crafted(checkpoint, version: 3, replace: [(model, legacy(9))]), "takes 9 inputs")
        assertRefused(try crafted(checkpoint, replace: [(model, #""formerlyModel":0"#)]), "the header names no model")
        assertRefused(try crafted(checkpoint, replace: [(model, #""model":"%%""#)]), "model is not base64")
        // Codec bytes that claim more parameters than the file holds.
        let huge = try ModelSpec.mlp(inputSize: 784, hidden: [1 << 20], classes: 10)
        let hugeModel = #""model":""# + Data(ModelCodec.encode(huge)).base64EncodedString() + "\""
        assertRefused(try crafted(checkpoint, replace: [(model, hugeModel)]), "past")
        let other = try ModelSpec.mlp(inputSize: 784, hidden: [8, 8], classes: 10)
        let otherModel = #""model":""# + Data(ModelCodec.encode(other)).base64EncodedString() + "\""
        assertRefused(try crafted(checkpoint, replace: [(model, otherModel)]), "holds 6370 parameters; 784-8(relu)-8(relu)-10(softmax) needs 6442")
        var short = checkpoint
        short.parameters.removeLast(100)
        XCTAssertThrowsError(try trainer(short)) { XCTAssertTrue("\($0)".contains("arrays do not fit"), "\($0)") }
        var shortState = checkpoint
        shortState.optimizerState[0].removeLast()
        XCTAssertThrowsError(try trainer(shortState)) { XCTAssertTrue("\($0)".contains("arrays do not fit"), "\($0)") }
        var poisoned = checkpoint
        poisoned.parameters[5] = .nan
        XCTAssertThrowsError(try trainer(poisoned)) { XCTAssertTrue("\($0)".contains("NaN"), "\($0)") }
    }

    /// The wire precision decides the weights: a resume with another one is refused; a
    /// version-2 checkpoint, which does not record it, still loads.
    func testTheWirePrecisionIsRecordedAndMustMatch() throws {
        let fp16 = try saved(precision: .fp16)
        let decoded = try Checkpoint.decode(try fp16.encode(), path: "c")
        XCTAssertEqual(decoded.wirePrecision, .fp16)
        XCTAssertNoThrow(try trainer(decoded, precision: .fp16))
        XCTAssertThrowsError(try trainer(decoded, precision: .fp32)) { error in
            XCTAssertTrue("\(error)".contains("--wire-precision fp16 (checkpoint) vs fp32"), "\(error)")
        }
        // Version 2 had no such field (a decoder ignores a field it does not know).
        let old = try crafted(fp16, version: 2, replace: [("\"wirePrecision\"", "\"formerlyWirePrecision\"")])
        let oldDecoded = try Checkpoint.decode(old, path: "c")
        XCTAssertNil(oldDecoded.wirePrecision)
        XCTAssertNoThrow(try trainer(oldDecoded, precision: .fp16))
        assertRefused(try crafted(fp16, set: [("wirePrecision", "\"fp8\"")]), "unknown wire precision 'fp8'")
        assertRefused(try crafted(fp16, version: 9), "format version 9 is not supported")
    }

    func testATestSetOfAnotherImageSizeIsRefusedByTheTrainer() throws {
        let (train, _) = try XCTUnwrap(Self.data)
        let small = Dataset(featureCount: 4, pixels: [UInt8](repeating: 0, count: 8), labels: [1, 2])
        XCTAssertThrowsError(try Trainer(config: config, train: train, test: small, source: LocalShardSource())) { error in
            XCTAssertTrue("\(error)".contains("the test set has 2x2x1 images (4 pixels) and 10 classes, the training set 28x28x1 (784)"), "\(error)")
        }
    }
}
