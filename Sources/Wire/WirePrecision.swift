/// Precision of weights and gradients on the wire. Arithmetic is always fp32; a 16-bit
/// precision halves the bytes, rounding each value to nearest-even on the way out.
public enum WirePrecision: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case fp32 = 0
    case fp16 = 1
    case bf16 = 2

    public var bytesPerValue: Int { self == .fp32 ? 4 : 2 }

    public var description: String {
        switch self {
        case .fp32: "fp32"
        case .fp16: "fp16"
        case .bf16: "bf16"
        }
    }

    public init?(name: String) {
        guard let match = Self.allCases.first(where: { $0.description == name.lowercased() }) else { return nil }
        self = match
    }

    /// Writes `count` values in this precision (`count · bytesPerValue` bytes).
    public func encode(_ source: UnsafePointer<Float>, count: Int, into destination: UnsafeMutableRawPointer) {
        switch self {
        case .fp32:
            BulkCopy.copy(to: destination, from: source, byteCount: count * 4)
        case .fp16:
            let out = destination.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { out[i] = HalfFloat.encode(source[i]) }
        case .bf16:
            let out = destination.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { out[i] = BFloat16.encode(source[i]) }
        }
    }

    /// Reads `count` values back to fp32; false if any is NaN or infinite.
    public func decode(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) -> Bool {
        switch self {
        case .fp32:
            BulkCopy.copy(to: UnsafeMutableRawPointer(destination), from: source, byteCount: count * 4)
        case .fp16:
            let input = source.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { destination[i] = HalfFloat.decode(input[i]) }
        case .bf16:
            let input = source.bindMemory(to: UInt16.self, capacity: count)
            for i in 0..<count { destination[i] = Float(bitPattern: UInt32(input[i]) << 16) }
        }
        return Self.allFinite(destination, count: count)
    }

    /// True if no value is NaN or infinite. Finite floats have an exponent below all ones;
    /// checking the bits vectorises.
    public static func allFinite(_ values: UnsafePointer<Float>, count: Int) -> Bool {
        let bits = UnsafeRawPointer(values).assumingMemoryBound(to: UInt32.self)
        var bad: UInt32 = 0
        for i in 0..<count { bad |= (bits[i] & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0 }
        return bad == 0
    }

    /// Rounds values in place as a trip over the wire would: what the local trainer does
    /// so that it computes exactly what workers compute.
    public func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .fp32: break
        case .fp16: for i in 0..<count { values[i] = HalfFloat.decode(HalfFloat.encode(values[i])) }
        case .bf16: for i in 0..<count { values[i] = Float(bitPattern: UInt32(BFloat16.encode(values[i])) << 16) }
        }
    }
}

/// IEEE 754 binary16 conversions written with integer selects (after F. Giesen's
/// `float_to_half_fast3_rtne` and `half_to_float`), so the loops vectorise; the standard
/// library's `Float16` init calls a runtime function per value on x86-64 without F16C,
/// four to six times slower. Round to nearest even; overflow gives infinity.
public enum HalfFloat {
    @inline(__always)
    public static func encode(_ value: Float) -> UInt16 {
        var f = value.bitPattern
        let sign = f & 0x8000_0000
        f ^= sign
        let halfMaximum: UInt32 = (127 + 16) << 23
        let denormalMagic: UInt32 = ((127 - 15) + (23 - 10) + 1) << 23
        let special: UInt32 = f > 0x7F80_0000 ? 0x7E00 : 0x7C00
        let denormal = (Float(bitPattern: f) + Float(bitPattern: denormalMagic)).bitPattern &- denormalMagic
        let mantissaOdd = (f >> 13) & 1
        let normal = (f &+ UInt32(bitPattern: (15 - 127) << 23) &+ 0xFFF &+ mantissaOdd) >> 13
        let result = f >= halfMaximum ? special : (f < (113 << 23) ? denormal : normal)
        return UInt16(truncatingIfNeeded: result | (sign >> 16))
    }

    @inline(__always)
    public static func decode(_ half: UInt16) -> Float {
        let magic = Float(bitPattern: 113 << 23)
        let shiftedExponent: UInt32 = 0x7C00 << 13
        var bits = (UInt32(half) & 0x7FFF) << 13
        let exponent = shiftedExponent & bits
        bits &+= (127 - 15) << 23
        let infinityOrNaN = bits &+ ((128 - 16) << 23)
        let denormal = (Float(bitPattern: bits &+ (1 << 23)) - magic).bitPattern
        bits = exponent == shiftedExponent ? infinityOrNaN : (exponent == 0 ? denormal : bits)
        return Float(bitPattern: bits | ((UInt32(half) & 0x8000) << 16))
    }
}

/// bfloat16: the top half of an fp32, rounded to nearest even (NaN stays NaN).
public enum BFloat16 {
    @inline(__always)
    public static func encode(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        let isNaN = (bits & 0x7FFF_FFFF) > 0x7F80_0000
        return isNaN ? UInt16(truncatingIfNeeded: bits >> 16) | 0x40 : UInt16(truncatingIfNeeded: rounded >> 16)
    }
}
