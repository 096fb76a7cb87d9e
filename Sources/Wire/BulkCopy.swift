#if canImport(Glibc)
import Glibc
#endif

/// `memcpy` for the bulk values a step moves (weights into a shared slot or a send buffer,
/// gradients out of a worker's segment), without its one slow case.
///
/// On AMD Zen CPUs, glibc's `memcpy` of a few hundred KB (it uses `rep movsb` there) runs
/// 10–20 times slower when the destination lies 1–31 bytes past the source modulo 4 KiB:
/// 407 KB took 140–230 µs instead of 11–17 µs on the development machine (Zen 3, glibc
/// 2.36), and the same CPU behaviour is reported in microsoft/STL#5658. That case was not
/// rare here, it was every other step: a large Swift array's values start 48 bytes into a
/// page (glibc's mmap chunk header, then the array's), the shared weights slot 0 starts 64
/// bytes into one, so the coordinator's copy of its parameters into that slot hit it.
///
/// In that window the copy goes backward in 256-byte pieces: a piece that small is copied
/// with vector registers (all loads, then all stores), and going backward no load reads an
/// address whose low 12 bits match a store still in flight. Anywhere else it is `memcpy`.
public enum BulkCopy {
    /// How far past the source (modulo a page) a destination must not lie for `memcpy`.
    /// Measured slow: 1–31; a little margin beyond.
    static let slowWindow = 1..<64
    static let pieceBytes = 256

    /// Copies `byteCount` bytes; the ranges must not overlap.
    public static func copy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, byteCount: Int) {
        guard byteCount > 0 else { return }
        guard copiesBackward(to: destination, from: source) else {
            memcpy(destination, source, byteCount)
            return
        }
        var end = byteCount
        let tail = byteCount % pieceBytes
        if tail > 0 {
            end -= tail
            memcpy(destination + end, source + end, tail)
        }
        while end > 0 {
            end -= pieceBytes
            memcpy(destination + end, source + end, pieceBytes)
        }
    }

    /// The same for `count` floats.
    public static func copy(to destination: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, count: Int) {
        copy(to: UnsafeMutableRawPointer(destination), from: UnsafeRawPointer(source), byteCount: count * MemoryLayout<Float>.stride)
    }

    /// Whether `copy` takes the backward path for these two addresses.
    static func copiesBackward(to destination: UnsafeRawPointer, from source: UnsafeRawPointer) -> Bool {
        let ahead = (UInt(bitPattern: destination) &- UInt(bitPattern: source)) & 4095
        return slowWindow.contains(Int(ahead))
    }
}
