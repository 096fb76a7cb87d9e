import ArgumentParser
import Glibc

// A reader that went away (`coordinator … | head`) is then a write error, reported and
// exited on cleanly (see `OutputFile`), rather than a death by signal.
signal(SIGPIPE, SIG_IGN)
CoordinatorCommand.main()
