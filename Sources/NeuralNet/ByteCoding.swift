/// Little-endian writing and bounds-checked reading of fixed-width fields: the one place
/// that turns numbers into bytes, for model files, checkpoints and wire messages alike.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func write<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    public mutating func write(_ value: Float) { write(value.bitPattern) }
    public mutating func write(_ value: Double) { write(value.bitPattern) }

    public mutating func write(floats: [Float]) {
        // Every supported platform is little-endian; the format is defined as little-endian.
        floats.withUnsafeBytes { bytes.append(contentsOf: $0) }
    }

    public mutating func write(raw: some Collection<UInt8>) { bytes.append(contentsOf: raw) }

    /// A UTF-8 string with a UInt32 length prefix.
    public mutating func write(string: String) {
        let utf8 = Array(string.utf8)
        write(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

/// Why a byte sequence could not be read.
public enum ByteReaderError: Error, Equatable, CustomStringConvertible {
    case truncated(needed: Int, offset: Int, available: Int)
    case badString(offset: Int)

    public var description: String {
        switch self {
        case let .truncated(needed, offset, available):
            "truncated: needed \(needed) bytes at offset \(offset), only \(available) left"
        case let .badString(offset):
            "invalid UTF-8 string at offset \(offset)"
        }
    }
}

public struct ByteReader {
    private let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    /// Reads from memory that must outlive the reader.
    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    private mutating func take(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= remaining else {
            throw ByteReaderError.truncated(needed: count, offset: offset, available: remaining)
        }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }

    public mutating func read<T: FixedWidthInteger>(_: T.Type = T.self) throws -> T {
        let slice = try take(MemoryLayout<T>.size)
        return T(littleEndian: slice.loadUnaligned(as: T.self))
    }

    public mutating func readFloat() throws -> Float { Float(bitPattern: try read(UInt32.self)) }
    public mutating func readDouble() throws -> Double { Double(bitPattern: try read(UInt64.self)) }

    public mutating func readFloats(count: Int) throws -> [Float] {
        let slice = try take(count.multipliedReportingOverflow(by: 4).overflow ? -1 : count * 4)
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: slice)
            initialized = count
        }
    }

    public mutating func readBytes(count: Int) throws -> UnsafeRawBufferPointer { try take(count) }

    public mutating func readString(maximumLength: Int = 1 << 16) throws -> String {
        let start = offset
        let length = Int(try read(UInt32.self))
        guard length <= maximumLength else { throw ByteReaderError.badString(offset: start) }
        let raw = try take(length)
        guard let string = String(validating: raw, as: UTF8.self) else {
            throw ByteReaderError.badString(offset: start)
        }
        return string
    }
}
