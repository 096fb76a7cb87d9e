import Wire

/// The bytes of each frame of an outgoing message, as a peer would receive them.
func bytes(_ frames: [OutgoingFrame]) -> [[UInt8]] {
    frames.map { frame in
        switch frame {
        case let .bytes(b): b
        case let .shared(buffer, offset, count): Array(UnsafeRawBufferPointer(start: buffer.pointer + offset, count: count))
        }
    }
}

/// Writes a little-endian value into `frame` at `offset`: a field of an encoded message, changed.
func patch<T: FixedWidthInteger>(_ frame: inout [UInt8], at offset: Int, _ value: T) {
    withUnsafeBytes(of: value.littleEndian) { frame.replaceSubrange(offset..<(offset + $0.count), with: $0) }
}
