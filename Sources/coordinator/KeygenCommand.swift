import ArgumentParser
import Foundation
import NeuralNet
import Training
import Wire

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write a CURVE key pair: NAME.key (secret, mode 600) and NAME.pub (public).",
        discussion: """
        Examples:
          coordinator keygen --name coordinator        coordinator.key, coordinator.pub
          coordinator keygen --name worker-a --output keys/
        Give the coordinator its .key and a file or folder of the workers' .pub files \
        (--curve-secret-key, --authorized-keys); give each worker its own .key and the \
        coordinator's .pub (--curve-secret-key, --curve-server-key).
        """
    )

    @Option(help: "Base name of the two files.")
    var name: String

    @Option(help: "Folder to write them in.")
    var output = "."

    @Flag(help: "Replace existing files.")
    var force = false

    func run() throws {
        let keys = try CurveKeys.generate()
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        let secretPath = (output as NSString).appendingPathComponent("\(name).key")
        let publicPath = (output as NSString).appendingPathComponent("\(name).pub")
        for path in [secretPath, publicPath] where FileManager.default.fileExists(atPath: path) && !force {
            throw ValidationError("\(path) exists; pass --force to replace it")
        }
        // Mode 600 from the first byte: the key is never readable by others, not even while
        // it is written.
        try AtomicFile.write(Array("# CURVE secret key of \(name): keep it private\n\(keys.secretKey)\n".utf8),
                             to: secretPath, mode: 0o600)
        try AtomicFile.write(Array("# CURVE public key of \(name)\n\(keys.publicKey)\n".utf8), to: publicPath, mode: 0o644)
        try OutputFile.standardOutput.write("wrote \(secretPath) and \(publicPath)\npublic key: \(keys.publicKey)\n")
    }
}
