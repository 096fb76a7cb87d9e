/// Why a data file was refused; every case names the file, and the line where there is one.
public enum DataError: Error, Equatable, CustomStringConvertible {
    case missingFile(path: String)
    case unreadable(path: String, reason: String)
    case emptyFile(path: String)
    case wrongFieldCount(path: String, line: Int, expected: Int, got: Int)
    case notAnInteger(path: String, line: Int, field: Int, text: String)
    case pixelOutOfRange(path: String, line: Int, field: Int, value: Int)
    case labelOutOfRange(path: String, line: Int, value: Int)
    case badIDX(path: String, reason: String)
    case mismatchedCounts(images: String, labels: String, imageCount: Int, labelCount: Int)
    case noDataset(directory: String)
    case mismatchedShape(path: String, featureCount: Int, expected: Int, reference: String)

    public var description: String {
        switch self {
        case let .missingFile(path):
            "\(path): no such file (run scripts/fetch-mnist.sh, or pass --data DIR)"
        case let .unreadable(path, reason):
            "\(path): cannot read: \(reason)"
        case let .emptyFile(path):
            "\(path): the file holds no samples"
        case let .wrongFieldCount(path, line, expected, got):
            "\(path):\(line): expected \(expected) comma-separated fields (label and pixels), found \(got)"
        case let .notAnInteger(path, line, field, text):
            "\(path):\(line): field \(field) is \"\(text)\", not an integer"
        case let .pixelOutOfRange(path, line, field, value):
            "\(path):\(line): field \(field): pixel \(value) is outside 0…255"
        case let .labelOutOfRange(path, line, value):
            "\(path):\(line): label \(value) is outside 0…9"
        case let .badIDX(path, reason):
            "\(path): not a valid IDX file: \(reason)"
        case let .mismatchedCounts(images, labels, imageCount, labelCount):
            "\(images) holds \(imageCount) images but \(labels) holds \(labelCount) labels"
        case let .mismatchedShape(path, featureCount, expected, reference):
            "\(path): images of \(featureCount) pixels, but the training set \(reference) has \(expected); both sets need one image size"
        case let .noDataset(directory):
            "\(directory): no MNIST data found (expected mnist_train.csv and mnist_test.csv, or IDX files such as train-images-idx3-ubyte.gz); run scripts/fetch-mnist.sh"
        }
    }
}
