import ArgumentParser
import Foundation
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
        try write("# CURVE secret key of \(name): keep it private\n\(keys.secretKey)\n", to: secretPath, mode: 0o600)
        try write("# CURVE public key of \(name)\n\(keys.publicKey)\n", to: publicPath, mode: 0o644)
        print("wrote \(secretPath) and \(publicPath)")
        print("public key: \(keys.publicKey)")
    }

    private func write(_ text: String, to path: String, mode: mode_t) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: Int(mode)]) else {
            throw ValidationError("cannot write \(path)")
        }
    }
}
