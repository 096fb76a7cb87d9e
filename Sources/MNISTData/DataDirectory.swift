import Foundation

/// Finds and loads the train and test sets in a folder: `mnist_train.csv` / `mnist_test.csv`,
/// or the IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`, …).
public enum DataDirectory {
    public enum Split: String, Sendable { case train, test }

    /// The files a split is read from.
    public enum Files: Sendable, Equatable {
        case csv(String)
        case idx(images: String, labels: String)

        /// The file that decides the image size, for errors.
        public var imagePath: String {
            switch self {
            case let .csv(path): path
            case let .idx(images, _): images
            }
        }
    }

    public static func files(_ split: Split, in directory: String) throws -> Files {
        let csv = (directory as NSString).appendingPathComponent("mnist_\(split.rawValue).csv")
        if FileManager.default.fileExists(atPath: csv) { return .csv(csv) }
        let prefix = split == .train ? "train" : "t10k"
        for suffix in ["", ".gz"] {
            let images = (directory as NSString).appendingPathComponent("\(prefix)-images-idx3-ubyte\(suffix)")
            let labels = (directory as NSString).appendingPathComponent("\(prefix)-labels-idx1-ubyte\(suffix)")
            if FileManager.default.fileExists(atPath: images) { return .idx(images: images, labels: labels) }
        }
        throw DataError.noDataset(directory: directory)
    }

    public static func load(_ files: Files) throws -> Dataset {
        switch files {
        case let .csv(path): try CSVLoader.load(path: path)
        case let .idx(images, labels): try IDXLoader.load(images: images, labels: labels)
        }
    }

    public static func load(_ split: Split, from directory: String) throws -> Dataset {
        try load(files(split, in: directory))
    }

    /// Both sets of a folder, which must hold images of one size and the same classes: a
    /// test set of another shape would be read with the wrong stride.
    public static func loadTrainAndTest(from directory: String, trainLimit: Int? = nil) throws -> (train: Dataset, test: Dataset) {
        let trainFiles = try files(.train, in: directory)
        var train = try load(trainFiles)
        if let trainLimit { train = train.prefix(trainLimit) }
        let testFiles = try files(.test, in: directory)
        let test = try load(testFiles)
        guard test.featureCount == train.featureCount, test.classCount == train.classCount else {
            throw DataError.mismatchedShape(path: testFiles.imagePath, featureCount: test.featureCount,
                                            expected: train.featureCount, reference: trainFiles.imagePath)
        }
        return (train, test)
    }
}
