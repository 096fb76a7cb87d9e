import ArgumentParser

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Data-parallel training of a neural network over ZeroMQ: the coordinator.",
        discussion: """
        The coordinator owns the model and the optimizer. For every global batch it \
        hands shards to the workers, adds their gradient sums in shard order, and \
        applies the optimizer step (SGD or Adam). With --local it computes everything \
        in this process.
        `train` is the default subcommand: `coordinator train --help` lists its options.

        Examples:
          coordinator --local                  train in one process
          coordinator --spawn-workers 2        train with 2 local worker processes
          coordinator --workers 4 --bind tcp://127.0.0.1:5555
                                               wait for 4 workers started elsewhere
          coordinator --spawn-workers 3 --parameter-servers 2
                                               2 workers own the parameters, by range
          coordinator evaluate --model model.bin
                                               accuracy and confusion matrix
          coordinator predict --model model.bin digit.png
                                               classify images
          coordinator keygen --name coordinator
                                               CURVE keys for runs across hosts
        """,
        subcommands: [TrainCommand.self, EvaluateCommand.self, PredictCommand.self, KeygenCommand.self],
        defaultSubcommand: TrainCommand.self
    )
}
