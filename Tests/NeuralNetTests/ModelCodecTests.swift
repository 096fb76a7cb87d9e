import NeuralNet
import XCTest

/// The one model codec: every layer kind round-trips, and truncated, mutated and crafted
/// bytes are refused with an error that says why, never a trap.
final class ModelCodecTests: XCTestCase {
    /// Every kind, with a non-default stride and padding and every activation a conv may have.
    private func convnet() throws -> ModelSpec {
        let input = ImageShape(height: 9, width: 8, channels: 2)
        let conv1 = try Conv2D(input: input, outputChannels: 3, kernelSize: 3, padding: 1, activation: .relu)
        let pool = try MaxPool2D(input: conv1.output, size: 2)
        let conv2 = try Conv2D(input: pool.output, outputChannels: 4, kernelSize: 2, stride: 2, activation: .tanh)
        return try ModelSpec(input: input, layers: [
            .conv(conv1), .maxPool(pool), .conv(conv2), .flatten(conv2.output),
            .dense(Dense(inputSize: conv2.outputSize, outputSize: 5, activation: .sigmoid)),
            .dense(Dense(inputSize: 5, outputSize: 3, activation: .softmax)),
        ])
    }

    private func assertRefused(_ bytes: [UInt8], limit: Int = 1 << 30, _ reason: String,
                               file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelCodec.decode(bytes, maximumParameterCount: limit), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(reason), "\(error)", file: file, line: line)
        }
    }

    func testEveryKindRoundTrips() throws {
        let specs = [try convnet(), try ModelSpec.mlp(inputSize: 784, hidden: [128, 64], classes: 10)]
        for spec in specs {
            let bytes = ModelCodec.encode(spec)
            XCTAssertEqual(try ModelCodec.decode(bytes, maximumParameterCount: spec.parameterCount), spec)
            assertRefused(bytes, limit: spec.parameterCount - 1, "past \(spec.parameterCount - 1) parameters")
            XCTAssertEqual(ModelCodec.hash(spec), Checksum.sha256(bytes))
        }
        XCTAssertEqual(try convnet().description,
                       "9x8x2-conv3x3(relu)-pool2-conv2x4/s2p0(tanh)-flatten-5(sigmoid)-3(softmax)")
        XCTAssertNotEqual(ModelCodec.hash(specs[0]), ModelCodec.hash(specs[1]))
    }

    /// Every prefix is refused; every single-byte change is refused or decodes to a valid
    /// spec that encodes back to exactly those bytes (the encoding is canonical).
    func testTruncatedAndMutatedBytesNeverTrap() throws {
        let bytes = ModelCodec.encode(try convnet())
        for length in 0..<bytes.count {
            XCTAssertThrowsError(try ModelCodec.decode(Array(bytes[0..<length]), maximumParameterCount: 1 << 30))
        }
        assertRefused(bytes + [0], "1 bytes follow the last layer")
        for index in bytes.indices {
            for value: UInt8 in [0, 1, 2, 3, 4, 5, 0x7F, 0x80, 0xFF] where value != bytes[index] {
                var mutated = bytes
                mutated[index] = value
                if let spec = try? ModelCodec.decode(mutated, maximumParameterCount: 1 << 30) {
                    XCTAssertEqual(ModelCodec.encode(spec), mutated)
                    XCTAssertLessThanOrEqual(spec.parameterCount, 1 << 30)
                }
            }
        }
    }

    /// Hand-written specs: every field the decoder checks, named in the error.
    func testCraftedSpecsAreRefusedWithClearErrors() {
        func spec(_ input: (UInt32, UInt32, UInt32), layerCount: UInt16? = nil, _ layers: [[any FixedWidthInteger]]) -> [UInt8] {
            var writer = ByteWriter()
            writer.write(input.0)
            writer.write(input.1)
            writer.write(input.2)
            writer.write(layerCount ?? UInt16(layers.count))
            for fields in layers {
                for field in fields { writeInteger(field, to: &writer) }
            }
            return writer.bytes
        }
        let flatten: [any FixedWidthInteger] = [UInt8(4)]
        func dense(_ size: UInt32, _ activation: UInt8 = 4) -> [any FixedWidthInteger] { [UInt8(1), size, activation] }
        func conv(_ channels: UInt32, kernel: UInt16 = 3, stride: UInt16 = 1, padding: UInt16 = 1, _ activation: UInt8 = 1) -> [any FixedWidthInteger] {
            [UInt8(2), channels, kernel, stride, padding, activation]
        }
        func pool(_ size: UInt16) -> [any FixedWidthInteger] { [UInt8(3), size] }

        XCTAssertNoThrow(try ModelCodec.decode(spec((8, 8, 1), [conv(4), pool(2), flatten, dense(10)]), maximumParameterCount: 1000))
        let cases: [([UInt8], String)] = [
            (spec((8, 8, 1), [conv(4), pool(2), dense(10)]), "a flatten must come before a dense layer"),
            (spec((8, 8, 1), [[UInt8(9)], flatten, dense(10)]), "unknown layer kind 9"),
            (spec((8, 8, 1), [flatten, dense(10, 200)]), "unknown activation 200"),
            (spec((8, 8, 1), [conv(4)]), "the last layer must be dense"),
            (spec((8, 8, 1), [conv(4, 4), flatten, dense(10)]), "element-wise"),
            (spec((8, 8, 1), [conv(4, kernel: 11, padding: 0), flatten, dense(10)]), "does not fit a 8x8x1 input"),
            (spec((8, 8, 1), [conv(4, stride: 0), flatten, dense(10)]), "stride 0"),
            (spec((8, 8, 1), [pool(9), flatten, dense(10)]), "pooling does not fit"),
            (spec((8, 8, 1), [conv(.max), flatten, dense(10)]), "channels 4294967295"),
            (spec((8, 8, 1), [conv(1 << 20), flatten, dense(10)]), "values per sample"),
            (spec((4096, 4096, 1), [conv(2), flatten, dense(10)]), "values per sample"),
            (spec((.max, 1, 1), [dense(10)]), "input height 4294967295"),
            (spec((1, 1, 0), [dense(10)]), "input channels 0"),
            (spec((1, 1, 4), layerCount: 0, []), "layer count 0"),
            (spec((1, 1, 4), layerCount: 2000, [dense(10)]), "layer count 2000"),
            (spec((1, 1, 4), layerCount: 3, [dense(10)]), "truncated"),
            (spec((1, 1, 1 << 24), [dense(1 << 24)]), "past"),
        ]
        for (bytes, reason) in cases { assertRefused(bytes, limit: 1 << 30, reason) }
        assertRefused(spec((8, 8, 1), [conv(200), flatten, dense(10)]), limit: 1000, "layer 0's size takes the model past 1000 parameters")
    }

    private func writeInteger(_ value: any FixedWidthInteger, to writer: inout ByteWriter) {
        switch value {
        case let v as UInt8: writer.write(v)
        case let v as UInt16: writer.write(v)
        case let v as UInt32: writer.write(v)
        default: XCTFail("unexpected field type")
        }
    }

    func testModelFilesCarryConvnets() throws {
        let spec = try convnet()
        let model = Sequential(spec: spec, seed: 3)
        let decoded = try ModelFile.decode(ModelFile.encode(spec: spec, parameters: model.parameters))
        XCTAssertEqual(decoded.spec, spec)
        XCTAssertEqual(decoded.parameters, model.parameters)
        // One parameter short, with a valid checksum: the file's length caps the spec.
        var truncated = ModelFile.encode(spec: spec, parameters: model.parameters)
        truncated.removeLast(32 + 4)
        truncated += Checksum.sha256(truncated)
        XCTAssertThrowsError(try ModelFile.decode(truncated, path: "short.bin")) { error in
            XCTAssertTrue("\(error)".hasPrefix("short.bin: ") && "\(error)".contains("past"), "\(error)")
        }
    }
}
