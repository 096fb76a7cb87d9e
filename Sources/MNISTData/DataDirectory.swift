import Foundation

/// Finds and loads the train and test sets in a folder: `mnist_train.csv` / `mnist_test.csv`,
/// or the IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-images-idx3-ubyte[.gz]`, …).
public enum DataDirectory {
    public enum Split: String, Sendable { case train, test }

    public static func load(_ split: Split, from directory: String) throws -> Dataset {
        let csv = (directory as NSString).appendingPathComponent("mnist_\(split.rawValue).csv")
        if FileManager.default.fileExists(atPath: csv) { return try CSVLoader.load(path: csv) }
        let prefix = split == .train ? "train" : "t10k"
        for suffix in ["", ".gz"] {
            let images = (directory as NSString).appendingPathComponent("\(prefix)-images-idx3-ubyte\(suffix)")
            let labels = (directory as NSString).appendingPathComponent("\(prefix)-labels-idx1-ubyte\(suffix)")
            if FileManager.default.fileExists(atPath: images) {
                return try IDXLoader.load(images: images, labels: labels)
            }
        }
        throw DataError.noDataset(directory: directory)
    }
}
