import ArgumentParser
import Training

/// The global batch, from `--batch-size` (strong scaling) or `--batch-size-per-worker`
/// (weak scaling).
extension TrainCommand {
    /// The workers this run is started for: `--spawn-workers` or `--workers`, one with
    /// `--local`; the default shard count and the per-worker batch's multiplier. Fixed at
    /// start: a batch that followed the live workers would make a run's weights depend on
    /// when workers joined or were lost.
    var startingWorkerCount: Int { local ? 1 : (spawnWorkers ?? workers ?? 1) }

    /// Samples per optimizer step. `validateBatchSize()` has refused a product that overflows.
    var globalBatchSize: Int {
        guard let batchSizePerWorker else { return batchSize ?? TrainingConfig().batchSize }
        let (product, overflow) = batchSizePerWorker.multipliedReportingOverflow(by: startingWorkerCount)
        return overflow ? Int.max : product
    }

    func validateBatchSize() throws {
        if batchSize != nil && batchSizePerWorker != nil {
            throw ValidationError("--batch-size and --batch-size-per-worker both set the batch: give one")
        }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be positive") }
        guard let batchSizePerWorker else { return }
        guard batchSizePerWorker > 0 else { throw ValidationError("--batch-size-per-worker must be positive") }
        // A worker count below one is refused by validate() with its own message.
        guard startingWorkerCount < 1 || !batchSizePerWorker.multipliedReportingOverflow(by: startingWorkerCount).overflow else {
            throw ValidationError("--batch-size-per-worker \(batchSizePerWorker) times \(startingWorkerCount) workers is too large")
        }
    }
}
