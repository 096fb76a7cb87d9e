import ArgumentParser

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Data-parallel training of a neural network over ZeroMQ: the coordinator.",
        discussion: """
        The coordinator owns the model and the optimizer. For every global batch it hands \
        shards to the workers, adds their gradient sums in shard order, and applies the SGD \
        step. With --local it computes everything in this process.

        Examples:
          coordinator --local                          train in one process
          coordinator --spawn-workers 2                train with 2 local worker processes
          coordinator --workers 4 --bind tcp://0.0.0.0:5555 --insecure
                                                       wait for 4 workers started elsewhere
          coordinator evaluate --model model.bin       test accuracy and confusion matrix
        """,
        subcommands: [TrainCommand.self],
        defaultSubcommand: TrainCommand.self
    )
}
