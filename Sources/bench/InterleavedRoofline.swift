import NeuralNet
import Training

/// The single process's fraction of the roofline with both timed side by side: blocks of
/// training steps alternate with one pass over the step's products, and each block's rate
/// is set against the mean of the passes just before and just after it.
///
/// Timed apart (the roofline first, best of 5, then whole epochs) the fraction moved by
/// 30 points between runs on a shared virtual machine (63–96% in one day): the machine's
/// speed changes between the two, and a best-of figure is taken at its fastest moment while
/// an epoch averages over the slow ones. Here both see the same moments and neither is a
/// best-of (87–89% in four runs that day).
final class InterleavedRoofline {
    struct Figures: Codable {
        /// Median over the blocks of block rate / adjacent roofline.
        var medianFraction: Double
        var lowestFraction: Double
        var highestFraction: Double
        var blocks: Int
        var stepsPerBlock: Int
        /// Median of the passes' step rates, GFLOP/s.
        var medianRooflineGflops: Double
    }

    private let operands: RooflineOperands
    private let flopsPerSample: Double
    private let stepsPerBlock: Int
    private let firstEpoch: Int
    private var rooflineBefore: Double?
    private var blockStart: Double?
    private var blockEpoch = 0
    private var blockSteps = 0
    private var blockSamples = 0
    private var fractions: [Double] = []
    private var passes: [Double] = []
    /// Time spent in the passes, which the epochs' times include: the trainer's throughput
    /// leaves it out.
    private(set) var passSeconds = 0.0

    /// Blocks start in `firstEpoch` (the first one warms up workspaces and pools).
    init(spec: ModelSpec, batchSize: Int, stepsPerBlock: Int = 50, firstEpoch: Int = 2) {
        operands = RooflineOperands(shapes: Roofline.shapes(spec: spec, batchSize: batchSize))
        flopsPerSample = Double(spec.trainingFlopsPerSample)
        self.stepsPerBlock = stepsPerBlock
        self.firstEpoch = firstEpoch
        // Room for every block of a long run, so that recording one never allocates while
        // the bench counts allocations.
        fractions.reserveCapacity(4096)
        passes.reserveCapacity(4096)
    }

    /// Call after every training step.
    func stepFinished(_ report: StepReport) {
        guard report.epoch >= firstEpoch, fractions.count < fractions.capacity, passes.count < passes.capacity else { return }
        guard let before = rooflineBefore, blockEpoch == report.epoch else {
            // At the start, and after an epoch's end (shuffle, evaluation): a fresh pass, then
            // a block once one step has run after it.
            rooflineBefore = pass()
            blockEpoch = report.epoch
            blockStart = nil
            return
        }
        guard let start = blockStart else {
            // The step after a pass refills the caches the pass took; the block starts after it.
            blockStart = MonotonicClock.now
            blockSteps = 0
            blockSamples = 0
            return
        }
        blockSteps += 1
        blockSamples += report.batchStatistics.sampleCount
        guard blockSteps == stepsPerBlock else { return }
        let gflops = Double(blockSamples) * flopsPerSample / (MonotonicClock.now - start) / 1e9
        let after = pass()
        fractions.append(gflops / ((before + after) / 2))
        rooflineBefore = after
        blockStart = nil
    }

    /// One trial of each product, short (about 4 ms in all for 784-128-10 at batch 128)
    /// next to a block of 50 steps.
    private func pass() -> Double {
        let start = MonotonicClock.now
        let gflops = operands.stepGflops(trials: 1, flopsPerTrial: 2e7, minimumCalls: 3)
        passes.append(gflops)
        passSeconds += MonotonicClock.now - start
        return gflops
    }

    var figures: Figures? {
        guard !fractions.isEmpty else { return nil }
        let sortedFractions = fractions.sorted()
        return Figures(medianFraction: sortedFractions[sortedFractions.count / 2],
                       lowestFraction: sortedFractions.first!, highestFraction: sortedFractions.last!,
                       blocks: fractions.count, stepsPerBlock: stepsPerBlock,
                       medianRooflineGflops: passes.sorted()[passes.count / 2])
    }
}
