import ArgumentParser

CoordinatorCommand.main()
