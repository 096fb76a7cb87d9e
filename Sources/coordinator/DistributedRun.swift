import Logging
import MNISTData
import Training

struct DistributedRun {
    let command: TrainCommand
    let config: TrainingConfig
    let logger: Logger

    func run(train: Dataset, test: Dataset, reporter: ConsoleReporter) throws {
        fatalError("not yet")
    }
}
