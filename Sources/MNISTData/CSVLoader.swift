import Foundation
import NeuralNet

/// MNIST as CSV: one sample per line, the label then `featureCount` pixels, comma-separated.
///
/// Accepts both distributions in use: with a header line (`label,1x1,…`) and CRLF endings,
/// or without a header and with LF endings. A hand-written byte scanner, because a generic
/// CSV parser spends most of its time on quoting rules these files never use: the 110 MB
/// training file loads in a fraction of a second.
public enum CSVLoader {
    public static func load(path: String, featureCount: Int = 784, classCount: Int = 10) throws -> Dataset {
        guard FileManager.default.fileExists(atPath: path) else { throw DataError.missingFile(path: path) }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw DataError.unreadable(path: path, reason: error.localizedDescription)
        }
        return try data.withUnsafeBytes { raw in
            try parse(raw.bindMemory(to: UInt8.self), path: path, featureCount: featureCount, classCount: classCount)
        }
    }

    /// Parses CSV text already in memory; `path` only names it in errors.
    public static func parse(_ text: UnsafeBufferPointer<UInt8>, path: String,
                             featureCount: Int = 784, classCount: Int = 10) throws -> Dataset {
        let newline = UInt8(ascii: "\n"), carriageReturn = UInt8(ascii: "\r")
        let zero = UInt8(ascii: "0"), nine = UInt8(ascii: "9")
        let fieldCount = featureCount + 1
        let end = text.count

        var lineCount = 0
        for byte in text where byte == newline { lineCount += 1 }
        // A sample takes at least a digit and a comma per field, so the file's length caps the
        // rows it can hold, whatever its line count (a file of blank lines holds none).
        let rowCapacity = min(lineCount + 1, end / (2 * fieldCount - 1) + 1)
        guard let pixelCapacity = CheckedSize.product([rowCapacity, featureCount]) else {
            throw DataError.unreadable(path: path, reason: "\(featureCount) pixels per sample is too many")
        }
        var pixels = [UInt8]()
        var labels = [UInt8]()
        pixels.reserveCapacity(pixelCapacity)
        pixels.withUnsafeBufferPointer { adviseHugePages($0.baseAddress, byteCount: pixels.capacity) }
        labels.reserveCapacity(rowCapacity)
        var row = [UInt8](repeating: 0, count: fieldCount)

        // A byte-order mark (as some editors write UTF-8) is not part of the first line.
        var position = text.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        var lineNumber = 0
        while position < end {
            lineNumber += 1
            let lineStart = position
            var lineEnd = position
            while lineEnd < end && text[lineEnd] != newline { lineEnd += 1 }
            position = lineEnd + 1
            var contentEnd = lineEnd
            if contentEnd > lineStart && text[contentEnd - 1] == carriageReturn { contentEnd -= 1 }
            if contentEnd == lineStart { continue }  // blank line, e.g. at the end of the file
            // A header is a first line that does not start with a digit.
            if lineNumber == 1 && !(zero...nine).contains(text[lineStart]) { continue }

            let field = try parseFields(text, lineStart..<contentEnd, line: lineNumber, path: path,
                                        classCount: classCount, into: &row)
            guard field == fieldCount else {
                throw DataError.wrongFieldCount(path: path, line: lineNumber, expected: fieldCount, got: field)
            }
            labels.append(row[0])
            pixels.append(contentsOf: row[1...])
        }
        guard !labels.isEmpty else { throw DataError.emptyFile(path: path) }
        return Dataset(featureCount: featureCount, classCount: classCount, pixels: pixels, labels: labels)
    }

    /// Reads one line's comma-separated fields into `row` (label, then pixels; fields past
    /// the row are only checked) and returns how many there were.
    @inline(__always)
    private static func parseFields(_ text: UnsafeBufferPointer<UInt8>, _ content: Range<Int>, line lineNumber: Int,
                                    path: String, classCount: Int, into row: inout [UInt8]) throws -> Int {
        let comma = UInt8(ascii: ","), zero = UInt8(ascii: "0"), nine = UInt8(ascii: "9")
        let contentEnd = content.upperBound
        var field = 0
        var cursor = content.lowerBound
        while true {
            let fieldStart = cursor
            var value = 0
            while cursor < contentEnd, text[cursor] != comma {
                let byte = text[cursor]
                guard byte >= zero && byte <= nine && value < 100_000 else {
                    while cursor < contentEnd && text[cursor] != comma { cursor += 1 }
                    throw DataError.notAnInteger(path: path, line: lineNumber, field: field + 1,
                                                 text: fieldText(text, fieldStart, cursor))
                }
                value = value * 10 + Int(byte - zero)
                cursor += 1
            }
            guard cursor > fieldStart else {
                throw DataError.notAnInteger(path: path, line: lineNumber, field: field + 1, text: "")
            }
            if field < row.count {
                if field == 0 {
                    guard value < classCount else {
                        throw DataError.labelOutOfRange(path: path, line: lineNumber, value: value)
                    }
                } else if value > 255 {
                    throw DataError.pixelOutOfRange(path: path, line: lineNumber, field: field + 1, value: value)
                }
                row[field] = UInt8(value)
            }
            field += 1
            if cursor >= contentEnd { return field }
            cursor += 1  // past the comma
            if cursor == contentEnd {  // a trailing comma leaves an empty last field
                throw DataError.notAnInteger(path: path, line: lineNumber, field: field + 1, text: "")
            }
        }
    }

    private static func fieldText(_ text: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: text[start..<min(end, start + 20)]), as: UTF8.self)
    }

    /// Writes a data set in the header-less LF variant (tests and tools use it).
    public static func format(_ dataset: Dataset) -> String {
        var lines: [String] = []
        for sample in 0..<dataset.count {
            let start = sample * dataset.featureCount
            let fields = [String(dataset.labels[sample])]
                + dataset.pixels[start..<(start + dataset.featureCount)].map { String($0) }
            lines.append(fields.joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
