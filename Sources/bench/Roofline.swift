import NeuralNet
import Training

/// The single-thread sgemm rate for exactly the matrix products one training step performs,
/// with the same shapes and transposes: the ceiling the trainer's throughput is measured
/// against.
enum Roofline {
    struct Shape: Codable {
        var name: String
        var m: Int, n: Int, k: Int
        var transposeA: Bool, transposeB: Bool
        var gflops: Double
        var flops: Double { 2 * Double(m * n * k) }
    }

    static func measure(spec: ModelSpec, batchSize b: Int) -> (shapes: [Shape], gflops: Double) {
        var shapes: [Shape] = []
        for (index, layer) in spec.layers.enumerated() {
            let (i, o) = (layer.inputSize, layer.outputSize)
            shapes.append(Shape(name: "L\(index + 1) forward \(b)x\(i)·\(i)x\(o)", m: b, n: o, k: i, transposeA: false, transposeB: false, gflops: 0))
            shapes.append(Shape(name: "L\(index + 1) dW \(i)x\(b)·\(b)x\(o)", m: i, n: o, k: b, transposeA: true, transposeB: false, gflops: 0))
            if index > 0 {
                shapes.append(Shape(name: "L\(index + 1) dX \(b)x\(o)·\(o)x\(i)", m: b, n: i, k: o, transposeA: false, transposeB: true, gflops: 0))
            }
        }
        var totalFlops = 0.0, totalSeconds = 0.0
        for index in shapes.indices {
            let seconds = time(shapes[index])
            shapes[index].gflops = shapes[index].flops / seconds / 1e9
            totalFlops += shapes[index].flops
            totalSeconds += seconds
        }
        return (shapes, totalFlops / totalSeconds / 1e9)
    }

    /// Best-of-5 seconds per call, each trial long enough to time.
    private static func time(_ shape: Shape) -> Double {
        let a = [Float](repeating: 0.5, count: shape.m * shape.k)
        let bMatrix = [Float](repeating: 0.25, count: shape.k * shape.n)
        var c = [Float](repeating: 0, count: shape.m * shape.n)
        let repetitions = max(10, Int(2e8 / shape.flops))
        var best = Double.infinity
        a.withUnsafeBufferPointer { a in
            bMatrix.withUnsafeBufferPointer { bm in
                c.withUnsafeMutableBufferPointer { c in
                    for _ in 0..<5 {
                        let start = MonotonicClock.now
                        for _ in 0..<repetitions {
                            BLAS.sgemm(transposeA: shape.transposeA, transposeB: shape.transposeB,
                                       m: shape.m, n: shape.n, k: shape.k,
                                       a: a.baseAddress!, lda: shape.transposeA ? shape.m : shape.k,
                                       b: bm.baseAddress!, ldb: shape.transposeB ? shape.k : shape.n,
                                       c: c.baseAddress!, ldc: shape.n)
                        }
                        best = min(best, (MonotonicClock.now - start) / Double(repetitions))
                    }
                }
            }
        }
        return best
    }
}

/// Reads the count kept by scripts/malloc-counter.c when it is preloaded (LD_PRELOAD).
enum MallocCounter {
    static var count: Int? {
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "zmq_trainer_malloc_count") else { return nil }
        typealias Counter = @convention(c) () -> UInt64
        return Int(unsafeBitCast(symbol, to: Counter.self)())
    }
}

#if canImport(Glibc)
import Glibc
#endif
