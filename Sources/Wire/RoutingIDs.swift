#if canImport(Glibc)
import Glibc
#endif

/// libzmq gives a peer that sends no routing id of its own a 5-byte id: a zero byte, then a
/// counter that starts at the C library's `rand()` (see `router.cpp`, `generate_random`).
/// Nothing in libzmq seeds `rand()`, so the ids are the same in every process, and a peer
/// that claims the next ones with explicit `ZMQ_ROUTING_ID`s makes the ROUTER abort on the
/// duplicate when the next peer without an id joins.
public enum UnpredictableRoutingIDs {
    /// Seeds `rand()` from the system's cryptographic generator; call before making a ROUTER.
    public static func seed() {
        srand(UInt32.random(in: .min ... .max))
    }
}
