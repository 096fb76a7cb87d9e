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
    /// An integer field whose value lies outside what the format allows.
    case outOfRange(field: String, value: String, allowed: ClosedRange<Int>, offset: Int)

    public var description: String {
        switch self {
        case let .outOfRange(field, value, allowed, offset):
            "\(field) \(value) at offset \(offset) is outside \(allowed.lowerBound)…\(allowed.upperBound)"
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

    /// Reads a `T` and returns it as an `Int` only if it lies in `allowed`: the value is
    /// checked before it is converted, so no field from outside (a count of 2⁶³, a negative
    /// size) can trap or reach an index or an allocation unchecked. `field` names it in the error.
    public mutating func read<T: FixedWidthInteger>(_: T.Type, in allowed: ClosedRange<Int>, field: String,
                                                    bigEndian: Bool = false) throws -> Int {
        let start = offset
        let raw = try read(T.self)
        let value = bigEndian ? raw.byteSwapped : raw
        guard let converted = Int(exactly: value), allowed.contains(converted) else {
            throw ByteReaderError.outOfRange(field: field, value: "\(value)", allowed: allowed, offset: start)
        }
        return converted
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

/// Sizes computed from numbers that came from outside: `nil` instead of a trap when a factor
/// is negative, the arithmetic overflows, or the result passes `limit` (which callers derive
/// from the bytes actually there, so a header cannot ask for more memory than its file fills).
public enum CheckedSize {
    public static func product(_ factors: [Int], atMost limit: Int = .max) -> Int? {
        var result = 1
        for factor in factors {
            guard factor >= 0 else { return nil }
            let (next, overflow) = result.multipliedReportingOverflow(by: factor)
            guard !overflow, next <= limit else { return nil }
            result = next
        }
        return result
    }

    public static func sum(_ terms: [Int], atMost limit: Int = .max) -> Int? {
        var result = 0
        for term in terms {
            guard term >= 0 else { return nil }
            let (next, overflow) = result.addingReportingOverflow(term)
            guard !overflow, next <= limit else { return nil }
            result = next
        }
        return result
    }
}
