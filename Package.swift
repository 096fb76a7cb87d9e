// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "ZMQTrainer",
    products: [
        .executable(name: "coordinator", targets: ["coordinator"]),
        .executable(name: "worker", targets: ["worker"]),
        .executable(name: "bench", targets: ["bench"]),
        .library(name: "NeuralNet", targets: ["NeuralNet"]),
        .library(name: "MNISTData", targets: ["MNISTData"]),
        .library(name: "Wire", targets: ["Wire"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        // C shims: each is only a module map over a system library found with pkg-config.
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq",
                       providers: [.apt(["libzmq3-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // sched_setaffinity and SCHED_IDLE, which Swift's Glibc module does not expose.
        .target(name: "CAffinity"),
        // Gathering a batch's rows with prefetch, which Swift cannot express.
        .target(name: "CGather"),
        // memfd_create and file seals, which Swift's Glibc module does not expose.
        .target(name: "CSealedMemory"),

        // The network math: matrices, layers, activations, loss, optimizer, model files.
        .target(name: "NeuralNet",
                dependencies: ["COpenBLAS", .product(name: "Crypto", package: "swift-crypto")]),
        // The data: MNIST CSV and IDX loading, batching.
        .target(name: "MNISTData", dependencies: ["CZlib", "CGather", "NeuralNet"]),
        // The wire: a thin ZeroMQ wrapper and the message protocol.
        .target(name: "Wire", dependencies: ["CZeroMQ", "CSealedMemory", "NeuralNet"]),
        // The processes: training loop, coordinator and worker.
        .target(name: "Training",
                dependencies: ["NeuralNet", "MNISTData", "Wire", "CAffinity",
                               .product(name: "Logging", package: "swift-log"),
                               .product(name: "Crypto", package: "swift-crypto")]),

        .executableTarget(name: "coordinator",
                          dependencies: ["Training", "NeuralNet", "MNISTData", "Wire",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "worker",
                          dependencies: ["Training", "MNISTData", "Wire",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")]),

        // Measurements behind scripts/bench.sh: sgemm roofline, training throughput, loading.
        .executableTarget(name: "bench",
                          dependencies: ["Training", "NeuralNet", "MNISTData", "Wire",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        .testTarget(name: "NeuralNetTests", dependencies: ["NeuralNet"]),
        .testTarget(name: "MNISTDataTests", dependencies: ["MNISTData", "NeuralNet", "CZlib"]),
        .testTarget(name: "WireTests", dependencies: ["Wire", "NeuralNet"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "NeuralNet", "MNISTData", "Wire",
                                                         .product(name: "Logging", package: "swift-log")]),
    ],
    swiftLanguageModes: [.v5]
)
