import Foundation
import NeuralNet

/// Images to classify, from the files a user names: PGM/PNG images, or CSV rows of pixels
/// (with or without a leading label, with or without a header line).
public struct PredictionInput: Sendable, Equatable {
    /// Where the image came from: `file.png`, or `file.csv:LINE`.
    public let source: String
    /// The label the CSV row carries, if it has one.
    public let label: Int?
    public let pixels: [UInt8]

    public init(source: String, label: Int?, pixels: [UInt8]) {
        self.source = source
        self.label = label
        self.pixels = pixels
    }

    /// Every image in `path`. CSV rows have `featureCount` pixels, optionally after a label;
    /// an image must have `featureCount` pixels (28×28 for MNIST), and be `imageShape` (a
    /// grey image of its height and width) when one is given: a convnet sees rows and columns.
    public static func load(path: String, featureCount: Int, imageShape: ImageShape? = nil,
                            classCount: Int = 10) throws -> [PredictionInput] {
        if path.lowercased().hasSuffix(".csv") { return try loadCSV(path: path, featureCount: featureCount, classCount: classCount) }
        let image = try ImageFile.load(path: path)
        if let imageShape, imageShape != ImageShape(height: image.height, width: image.width, channels: 1) {
            throw DataError.unreadable(path: path, reason: "the image is \(image.width)×\(image.height) grey; the model takes \(imageShape.width)×\(imageShape.height)×\(imageShape.channels) images")
        }
        guard image.pixels.count == featureCount else {
            throw DataError.unreadable(path: path, reason: "the image is \(image.width)×\(image.height) (\(image.pixels.count) pixels); the model takes \(featureCount)")
        }
        return [PredictionInput(source: path, label: nil, pixels: image.pixels)]
    }

    static func loadCSV(path: String, featureCount: Int, classCount: Int) throws -> [PredictionInput] {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.missingFile(path: path) }
        let data: [UInt8]
        do {
            data = try RegularFile.read(path)
        } catch let error as ModelFileError {
            throw DataError.unreadable(path: path, reason: error.reason)
        }
        var inputs: [PredictionInput] = []
        // `\r\n` is one Character in Swift, so both line endings split here.
        // A byte-order mark (as some editors write UTF-8) is not part of the first line.
        let text = data.starts(with: [0xEF, 0xBB, 0xBF]) ? data.dropFirst(3) : data[...]
        let lines = String(decoding: text, as: UTF8.self).split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (offset, line) in lines.enumerated() {
            let number = offset + 1
            if line.allSatisfy({ $0 == " " }) { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            // A header line (`label,1x1,…`) starts with a word, not a number.
            if number == 1, let first = fields.first, Int(first.trimmingCharacters(in: .whitespaces)) == nil { continue }
            guard fields.count == featureCount || fields.count == featureCount + 1 else {
                throw DataError.wrongFieldCount(path: path, line: number, expected: featureCount + 1, got: fields.count)
            }
            var values: [Int] = []
            values.reserveCapacity(fields.count)
            for (index, field) in fields.enumerated() {
                guard let value = Int(field.trimmingCharacters(in: .whitespaces)) else {
                    throw DataError.notAnInteger(path: path, line: number, field: index + 1, text: String(field))
                }
                values.append(value)
            }
            let hasLabel = values.count == featureCount + 1
            if hasLabel, !(0..<classCount).contains(values[0]) {
                throw DataError.labelOutOfRange(path: path, line: number, value: values[0])
            }
            let pixels = hasLabel ? values.dropFirst() : values[...]
            if let bad = pixels.firstIndex(where: { !(0...255).contains($0) }) {
                throw DataError.pixelOutOfRange(path: path, line: number, field: bad + 1, value: pixels[bad])
            }
            inputs.append(PredictionInput(source: "\(path):\(number)", label: hasLabel ? values[0] : nil,
                                          pixels: pixels.map { UInt8($0) }))
        }
        guard !inputs.isEmpty else { throw DataError.emptyFile(path: path) }
        return inputs
    }
}
