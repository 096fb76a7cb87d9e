import Wire

/// What the coordinator knows about one connected worker.
final class WorkerPeer {
    let identity: [UInt8]
    let name: String
    /// Its number in the run, in join order: the scheduler's `WorkerID`.
    let index: Int
    /// Compute time the worker reported for the current step.
    var stepComputeSeconds = 0.0
    var lastStepCounted = -1
    /// How it is reached: the socket, or shared memory and pipes on this host.
    var link: WorkerLink
    /// It holds the coordinator's training set (its hello's digest matched): its socket
    /// link sends sample indices instead of samples.
    var holdsTrainingSet = false
    /// Where it serves a parameter range, if it offered to (`worker --serve`).
    var serveOffer: ServeOffer?

    /// Compute processes behind its link (its hello's slots).
    var slots = 1
    /// Gradient results accepted from it: one per shard, or one per block from a host.
    var resultsDone = 0
    var shardsDone = 0
    var stepsDone = 0
    var computeSeconds = 0.0

    init(identity: [UInt8], index: Int, name: String, link: WorkerLink) {
        self.identity = identity
        self.name = name
        self.index = index
        self.link = link
    }

    /// Replaces its link (closing the old one): it attached shared memory, or starts a new
    /// session or broke its link (then `link` is the socket's).
    func relink(_ link: WorkerLink) {
        self.link.close()
        self.link = link
    }

    /// Its figures for the run summary; how often it was lost, back or late, the scheduler knows.
    func summary(_ state: WorkerState?) -> WorkerSummary {
        WorkerSummary(name: name, shardsDone: shardsDone, stepsDone: stepsDone,
                      meanComputeMilliseconds: shardsDone == 0 ? 0 : computeSeconds / Double(shardsDone) * 1000,
                      timesLost: state?.timesLost ?? 0, timesRejoined: state?.timesRejoined ?? 0,
                      timesLate: state?.timesLate ?? 0, slots: slots, results: resultsDone,
                      data: link.computesOnThisHost ? "shared memory" : holdsTrainingSet ? "indices" : "pixels")
    }
}

/// A peer's routing id as text for log lines (printable ASCII ids as they are, others in hex).
func describe(identity: [UInt8]) -> String {
    if !identity.isEmpty, identity.allSatisfy({ $0 >= 0x21 && $0 < 0x7F }) { return String(decoding: identity, as: UTF8.self) }
    return "0x" + identity.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
