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
        /// Calls of this product in one step (a convolution's blocks of samples).
        var calls = 1
        var gflops: Double
        var callFlops: Double { 2 * Double(m * n * k) }
        var flops: Double { callFlops * Double(calls) }
    }

    /// The products of one training step at `batchSize`, as the layers call them: forward,
    /// weight gradient, and the input gradient of every layer after the first that learns
    /// (nothing uses the first one's). A convolution makes them per block of
    /// `blockSamples` samples, on its unfolded input (`Conv2D.products`).
    static func shapes(spec: ModelSpec, batchSize b: Int) -> [Shape] {
        var shapes: [Shape] = []
        for (index, layer) in spec.layers.enumerated() {
            let inputGradient = index > spec.firstTrainableLayer
            switch layer {
            case let .dense(dense):
                let (i, o) = (dense.inputSize, dense.outputSize)
                shapes.append(Shape(name: "L\(index + 1) forward \(b)x\(i)·\(i)x\(o)", m: b, n: o, k: i, transposeA: false, transposeB: false, gflops: 0))
                shapes.append(Shape(name: "L\(index + 1) dW \(i)x\(b)·\(b)x\(o)", m: i, n: o, k: b, transposeA: true, transposeB: false, gflops: 0))
                if inputGradient {
                    shapes.append(Shape(name: "L\(index + 1) dX \(b)x\(o)·\(o)x\(i)", m: b, n: i, k: o, transposeA: false, transposeB: true, gflops: 0))
                }
            case let .conv(conv):
                let block = min(conv.blockSamples, b)
                var blocks = [(block, b / block)]
                if b % block > 0 { blocks.append((b % block, 1)) }
                for (samples, count) in blocks {
                    for product in conv.products(samples: samples) where product.pass != .inputGradient || inputGradient {
                        let calls = product.calls * count
                        let (m, n, k) = (product.m, product.n, product.k)
                        shapes.append(Shape(name: "L\(index + 1) \(product.pass.rawValue) \(m)x\(k)·\(k)x\(n) ×\(calls)",
                                            m: m, n: n, k: k, transposeA: product.transposeA,
                                            transposeB: product.transposeB, calls: calls, gflops: 0))
                    }
                }
            case .maxPool, .flatten:
                continue
            }
        }
        return shapes
    }

    /// Each product's rate (best of 5 trials) and the step's: its FLOPs over the summed times.
    static func measure(spec: ModelSpec, batchSize: Int) -> (shapes: [Shape], gflops: Double) {
        let operands = RooflineOperands(shapes: shapes(spec: spec, batchSize: batchSize))
        var shapes = operands.shapes
        var flops = 0.0, seconds = 0.0
        for index in shapes.indices {
            let perCall = operands.seconds(index, trials: 5)
            shapes[index].gflops = shapes[index].callFlops / perCall / 1e9
            flops += shapes[index].flops
            seconds += perCall * Double(shapes[index].calls)
        }
        return (shapes, flops / seconds / 1e9)
    }
}

/// The operands of a step's products, allocated once: timing them again allocates nothing,
/// so the roofline can be re-measured between training steps while allocations are counted.
final class RooflineOperands {
    let shapes: [Roofline.Shape]
    private var a: [[Float]]
    private var b: [[Float]]
    private var c: [[Float]]

    init(shapes: [Roofline.Shape]) {
        self.shapes = shapes
        a = shapes.map { [Float](repeating: 0.5, count: $0.m * $0.k) }
        b = shapes.map { [Float](repeating: 0.25, count: $0.k * $0.n) }
        c = shapes.map { [Float](repeating: 0, count: $0.m * $0.n) }
    }

    /// The step's rate: its products' FLOPs over the sum of their times per call.
    func stepGflops(trials: Int, flopsPerTrial: Double = 2e8, minimumCalls: Int = 10) -> Double {
        var flops = 0.0, seconds = 0.0
        for index in shapes.indices {
            flops += shapes[index].flops
            seconds += Double(shapes[index].calls)
                * self.seconds(index, trials: trials, flopsPerTrial: flopsPerTrial, minimumCalls: minimumCalls)
        }
        return flops / seconds / 1e9
    }

    /// Seconds per call of product `index`, the best of `trials` trials of about
    /// `flopsPerTrial` FLOPs (at least `minimumCalls` calls).
    func seconds(_ index: Int, trials: Int, flopsPerTrial: Double = 2e8, minimumCalls: Int = 10) -> Double {
        let shape = shapes[index]
        let repetitions = max(minimumCalls, Int(flopsPerTrial / shape.callFlops))
        var best = Double.infinity
        a[index].withUnsafeBufferPointer { a in
            b[index].withUnsafeBufferPointer { bm in
                c[index].withUnsafeMutableBufferPointer { c in
                    for trial in -1..<trials {
                        let start = MonotonicClock.now
                        for _ in 0..<(trial < 0 ? 1 : repetitions) {
                            BLAS.sgemm(transposeA: shape.transposeA, transposeB: shape.transposeB,
                                       m: shape.m, n: shape.n, k: shape.k,
                                       a: a.baseAddress!, lda: shape.transposeA ? shape.m : shape.k,
                                       b: bm.baseAddress!, ldb: shape.transposeB ? shape.k : shape.n,
                                       c: c.baseAddress!, ldc: shape.n)
                        }
                        // Trial -1, one call, only brings the operands into the caches (after
                        // training steps or the previous product they are not): the roofline
                        // is warm sgemm.
                        if trial >= 0 { best = min(best, (MonotonicClock.now - start) / Double(repetitions)) }
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
