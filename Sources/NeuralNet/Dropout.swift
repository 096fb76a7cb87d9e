/// Inverted dropout on the hidden layers' outputs during training: each unit is zeroed with
/// probability `rate` and the kept ones are scaled by `1 / (1 − rate)`, so evaluation needs
/// no change.
///
/// The mask is a pure function of (seed, step, shard, layer, row, unit), drawn from a
/// counter-based hash rather than a stateful generator. A worker anywhere computes the same
/// mask for a shard as `--local` does, so runs stay bit-for-bit reproducible however many
/// workers share the shards, and the backward pass regenerates the mask instead of storing it.
public struct Dropout: Sendable, Equatable, Codable {
    public let rate: Float
    public let seed: UInt64

    public init(rate: Float, seed: UInt64) {
        precondition(rate >= 0 && rate < 1, "A dropout rate must be in [0, 1).")
        self.rate = rate
        self.seed = seed
    }

    /// The key of one shard's masks at one step.
    public static func key(step: UInt64, shard: UInt32) -> UInt64 {
        mix(step &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(shard) &* 0xC2B2_AE3D_27D4_EB4F)
    }

    /// Multiplies `values` (`rows × columns`, layer `layer`'s outputs or their gradients) by
    /// the mask: 0 for a dropped unit, `1 / (1 − rate)` for a kept one.
    public func apply(to values: UnsafeMutablePointer<Float>, rows: Int, columns: Int, layer: Int, key: UInt64) {
        guard rate > 0 else { return }
        let scale = 1 / (1 - rate)
        // Keep a unit when its 24-bit uniform draw is at least rate · 2²⁴.
        let threshold = UInt64((Double(rate) * Double(1 << 24)).rounded())
        let base = Self.mix(seed ^ key ^ (UInt64(layer) &* 0xD6E8_FEB8_6659_FD93))
        for index in 0..<(rows * columns) {
            let draw = Self.mix(base &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15) >> 40
            values[index] = draw >= threshold ? values[index] * scale : 0
        }
    }

    /// SplitMix64's finaliser: a bijective mix whose outputs pass as independent uniforms.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
