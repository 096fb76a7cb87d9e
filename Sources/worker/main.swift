import ArgumentParser

WorkerCommand.main()
