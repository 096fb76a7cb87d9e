import Foundation
import MNISTData
import NeuralNet
import Training
import XCTest

/// A small convnet (`--model conv3x4,pool2,dense10`) through everything an MLP goes through:
/// real workers learning it from the handshake, checkpoints, saved models, evaluate, predict.
final class ConvnetRunTests: XCTestCase {
    private static var dataFolder: String?
    private var data: String { Self.dataFolder! }
    private let model = "conv3x4,pool2,dense10"

    override class func setUp() {
        dataFolder = try? makeSyntheticData(trainCount: 480, testCount: 100)
    }

    override class func tearDown() {
        if let dataFolder { try? FileManager.default.removeItem(atPath: dataFolder) }
    }

    private var common: [String] {
        ["--data", data, "--model", model, "--batch-size", "40", "--max-steps", "12", "--epochs", "5",
         "--learning-rate", "0.05", "--quiet", "--seed", "3"]
    }

    /// Two spawned workers, told the model only by the welcome, end bit for bit where
    /// `--local --shards 2` ends.
    func testSpawnedWorkersReproduceTheLocalConvnetRun() throws {
        let local = try runCoordinator(common + ["--local", "--shards", "2"])
        XCTAssertEqual(local.status, 0, local.errors)
        XCTAssertEqual(local.summary["model"] as? String, "28x28x1-conv3x4(relu)-pool2-flatten-10(softmax)")
        XCTAssertEqual(local.summary["steps"] as? Int, 12)
        let run = try runCoordinator(common + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*"])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.summary["workers"] as? Int, 2)
        XCTAssertEqual(run.sha.count, 64)
        XCTAssertEqual(run.sha, local.sha, run.errors)
    }

    /// The same with a second convolution that unfolds kernel rows (3×3 over 12 channels) and
    /// works through each 20-sample shard in blocks of 18 and 2.
    func testSpawnedWorkersReproduceTheLocalRunOfAKernelRowConvolution() throws {
        let model = "conv3x12,pool2,conv3x8,pool2,dense10"
        let spec = try ModelSpec.parse(model, input: ImageShape(height: 28, width: 28, channels: 1), classes: 10)
        guard case let .conv(second) = spec.layers[2] else { return XCTFail("\(spec)") }
        XCTAssertTrue(second.unfoldsKernelRows)
        XCTAssertEqual(second.blockSamples, 18)
        let arguments = ["--data", data, "--model", model, "--batch-size", "40", "--max-steps", "6",
                         "--learning-rate", "0.05", "--quiet", "--seed", "3"]
        let local = try runCoordinator(arguments + ["--local", "--shards", "2"])
        XCTAssertEqual(local.status, 0, local.errors)
        let run = try runCoordinator(arguments + ["--spawn-workers", "2", "--bind", "tcp://127.0.0.1:*"])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(run.sha.count, 64)
        XCTAssertEqual(run.sha, local.sha, run.errors)
    }

    /// A convnet run stopped at a checkpoint and resumed ends with the weights of one that
    /// never stopped; a resume that names another network is refused.
    func testAConvnetResumesExactlyFromItsCheckpoint() throws {
        let (train, test) = (try DataDirectory.load(.train, from: data), try DataDirectory.load(.test, from: data))
        func trainer(steps: Int, resume: Checkpoint? = nil) throws -> Trainer {
            var config = TrainingConfig()
            config.model = model
            config.hidden = []
            config.batchSize = 40
            config.learningRate = 0.05
            config.shardCount = 2
            config.maximumSteps = steps
            return try Trainer(config: config, train: train, test: test, source: LocalShardSource(), resume: resume)
        }
        let full = try trainer(steps: 10)
        try full.run()
        let half = try trainer(steps: 4)
        try half.run()
        let saved = try Checkpoint.decode(half.checkpoint().encode(), path: "memory")
        XCTAssertEqual(saved.spec, full.model.spec)
        let resumed = try trainer(steps: 10, resume: saved)
        try resumed.run()
        XCTAssertEqual(resumed.model.parameters, full.model.parameters)

        var mlp = TrainingConfig()
        mlp.batchSize = 40
        mlp.learningRate = 0.05
        mlp.shardCount = 2
        XCTAssertThrowsError(try Trainer(config: mlp, train: train, test: nil, source: LocalShardSource(), resume: saved)) {
            XCTAssertTrue("\($0)".contains("--model \(self.model) (checkpoint) vs none"), "\($0)")
        }
    }

    /// A saved convnet: evaluate gives the run's own test accuracy, predict classifies rows.
    func testEvaluateAndPredictWithASavedConvnet() throws {
        let saved = scratchFolder + "convnet-\(UUID().uuidString.prefix(6)).bin"
        let run = try runCoordinator(common + ["--local", "--save-model", saved])
        XCTAssertEqual(run.status, 0, run.errors)
        XCTAssertEqual(try ModelFile.load(from: saved).spec.input, ImageShape(height: 28, width: 28, channels: 1))

        let json = scratchFolder + "convnet-evaluation-\(getpid()).json"
        let evaluate = try Child("coordinator", ["evaluate", "--model", saved, "--data", data, "--json", json])
        XCTAssertEqual(evaluate.wait(), 0, evaluate.errors)
        XCTAssertTrue(evaluate.output.contains("conv3x4(relu)-pool2"), evaluate.output)
        let figures = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: json))) as? [String: Any])
        XCTAssertEqual(figures["accuracy"] as? Double ?? 0, run.summary["test_accuracy"] as? Double ?? 1, accuracy: 1e-12)

        let rows = try String(contentsOfFile: data + "/mnist_test.csv", encoding: .utf8)
            .split(whereSeparator: \.isNewline).filter { $0.first?.isNumber == true }.prefix(3)
        let csv = scratchFolder + "convnet-rows-\(getpid()).csv"
        try rows.joined(separator: "\n").write(toFile: csv, atomically: true, encoding: .utf8)
        let predict = try Child("coordinator", ["predict", "--model", saved, csv])
        XCTAssertEqual(predict.wait(), 0, predict.errors)
        XCTAssertTrue(predict.output.contains("of 3 labelled images right"), predict.output)

        // An image of the right pixel count but another shape is refused; the right one is read.
        let pixels = rows[rows.startIndex].split(separator: ",").dropFirst().map { UInt8($0)! }
        let square = scratchFolder + "convnet-\(getpid()).pgm", wide = scratchFolder + "convnet-wide-\(getpid()).pgm"
        _ = FileManager.default.createFile(atPath: square, contents: Data(Array("P5\n28 28\n255\n".utf8) + pixels))
        _ = FileManager.default.createFile(atPath: wide, contents: Data(Array("P5\n56 14\n255\n".utf8) + pixels))
        let one = try Child("coordinator", ["predict", "--model", saved, square])
        XCTAssertEqual(one.wait(), 0, one.errors)
        let refused = try Child("coordinator", ["predict", "--model", saved, wide])
        XCTAssertNotEqual(refused.wait(), 0)
        XCTAssertTrue(refused.errors.contains("the image is 56×14 grey; the model takes 28×28×1 images"), refused.errors)
    }

    /// A worker started for another network is refused naming the coordinator's; one
    /// started for this one joins and the run completes.
    func testAWorkerPinnedToAnotherConvnetIsRefused() throws {
        let port = freePort()
        let coordinator = try Child("coordinator", common + ["--workers", "1", "--bind", "tcp://127.0.0.1:\(port)"])
        let wrong = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--model", "conv3x8,pool2,dense10"])
        XCTAssertEqual(wrong.wait(seconds: 30), 2)
        XCTAssertTrue(wrong.errors.contains("model mismatch"), wrong.errors)
        XCTAssertTrue(wrong.errors.contains("28x28x1-conv3x4(relu)-pool2-flatten-10(softmax)"), wrong.errors)
        let right = try Child("worker", ["--connect", "tcp://127.0.0.1:\(port)", "--model", model, "--input-shape", "28x28x1"])
        XCTAssertEqual(coordinator.wait(seconds: 60), 0, coordinator.errors)
        XCTAssertEqual(right.wait(seconds: 30), 0, right.errors)
    }

    /// A typed network that cannot be built stops the run before training, naming the layer.
    func testAnUnbuildableModelIsRefusedNamingTheLayer() throws {
        let run = try runCoordinator(["--data", data, "--model", "conv3x4,pool64,dense10", "--local", "--quiet"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.errors.contains("--model layer 'pool64': a 64x64 pooling does not fit a 28x28x4 input"), run.errors)
        let both = try runCoordinator(["--data", data, "--model", model, "--hidden", "32", "--local"])
        XCTAssertNotEqual(both.status, 0)
        XCTAssertTrue(both.errors.contains("--hidden and --model"), both.errors)
    }
}
