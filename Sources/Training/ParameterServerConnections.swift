import NeuralNet
import Wire

/// What a serving worker's socket takes from its connections: messages up to a cap from the
/// model, and at most `UnprovenConnections.limit` connections without the run secret's
/// proof; both counted.
extension ParameterServer {
    /// The largest message a server takes for `spec`: a gradient range of every parameter
    /// in fp32 (the widest values on the wire) with its header; nil when it does not fit.
    public static func maximumMessageBytes(for spec: ModelSpec) -> Int? {
        let (values, overflow) = spec.parameterCount.multipliedReportingOverflow(by: 4)
        let (total, overflowAgain) = values.addingReportingOverflow(4096)
        return overflow || overflowAgain || total > WireProtocol.maximumMessageBytes ? nil : total
    }

    /// Connections closed before their peer proved the run secret: those libzmq cut off for
    /// a message over `maximumMessageBytes`, strangers that left, and those refused because
    /// `UnprovenConnections.limit` were open (`refusedConnections`).
    public func unprovenConnectionsClosed() -> Int {
        noteConnections()
        return unproven.closed
    }

    public var refusedConnections: Int { unproven.refused }

    /// Takes in the connection events; logs the first unproven connection closed and the
    /// first refused.
    func noteConnections() {
        // (The gate's thread may have taken in a close: the counts say, not `update`.)
        unproven.update()
        if !loggedUnprovenClose && unproven.closed > 0 {
            loggedUnprovenClose = true
            logger.warning("parameter server: a connection closed before its peer proved the run secret (libzmq cuts off one that sends more than \(maximumMessageBytes) bytes; further ones are counted, not logged)")
        }
        if !loggedRefusal && unproven.refused > 0 {
            loggedRefusal = true
            logger.warning("parameter server: refusing new connections while \(UnprovenConnections.limit) have not proven the run secret (further ones are counted, not logged)")
        }
    }
}
