/// How a convolution unfolds its input for its matrix products, and folds gradients back.
///
/// Channels-last, the part of a kernel row that lies inside the image is one contiguous run
/// of values, so each is one copy (or one add), and the rest zeros (the padding).
extension Conv2D {
    /// Unfolds every kernel window of `samples` images into one row of `patchSize` values
    /// (zeros where the window hangs over the padding). Channels-last, the part of a kernel
    /// row that lies inside the image is one contiguous run of values: one copy each.
    func im2col(_ images: UnsafePointer<Float>, samples: Int, into columns: UnsafeMutablePointer<Float>) {
        let channels = input.channels
        let rowValues = kernelRowValues
        var row = columns
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for outY in 0..<output.height {
                let top = outY * stride - padding
                for outX in 0..<output.width {
                    // The same columns of every kernel row lie inside the image.
                    let left = outX * stride - padding
                    let first = max(0, -left)
                    let end = max(first, min(kernelSize, input.width - left))
                    let (before, inside) = (first * channels, (end - first) * channels)
                    for kernelY in 0..<kernelSize {
                        let y = top + kernelY
                        let destination = row + kernelY * rowValues
                        guard y >= 0 && y < input.height && inside > 0 else {
                            Self.zero(destination, count: rowValues)
                            continue
                        }
                        Self.zero(destination, count: before)
                        Self.copy(image + (y * input.width + left + first) * channels, to: destination + before, count: inside)
                        Self.zero(destination + before + inside, count: rowValues - before - inside)
                    }
                    row += patchSize
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds every window's values back onto the pixels they came from.
    func col2im(_ columns: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>) {
        images.update(repeating: 0, count: samples * inputSize)
        let channels = input.channels
        var row = columns
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for outY in 0..<output.height {
                for outX in 0..<output.width {
                    forEachKernelRow(outY: outY, outX: outX) { sourceOffset, span in
                        guard let span else { return }
                        Self.add(row + sourceOffset + span.first * channels, onto: image + span.pixel * channels,
                                 count: (span.end - span.first) * channels)
                    }
                    row += patchSize
                }
            }
        }
    }

    /// The part of one kernel row that lies inside the image: kernel columns `first..<end`,
    /// over the run of pixels that starts at `pixel` (an index within the sample, in pixels).
    typealias KernelRowSpan = (first: Int, end: Int, pixel: Int)

    /// For each kernel row of the window at (outY, outX): its offset within the patch row, and
    /// its span inside the image (nil: the whole kernel row lies in the padding).
    @inline(__always)
    private func forEachKernelRow(outY: Int, outX: Int, _ body: (Int, KernelRowSpan?) -> Void) {
        let top = outY * stride - padding
        let left = outX * stride - padding
        let first = max(0, -left)
        let end = min(kernelSize, input.width - left)
        let rowValues = kernelSize * input.channels
        for kernelY in 0..<kernelSize {
            let y = top + kernelY
            if y >= 0 && y < input.height && first < end {
                body(kernelY * rowValues, (first, end, y * input.width + left + first))
            } else {
                body(kernelY * rowValues, nil)
            }
        }
    }

    /// Unfolds every kernel row of `samples` images (stride 1): row `(y · output.width + x)`
    /// of a sample's `input.height × output.width` rows holds the `kernelRowValues` values
    /// under the kernel's row when its window's left edge is at column `x - padding` of input
    /// row `y` (zeros over the padding). Kernel row `kernelY` of the window at output
    /// `(outY, x)` is row `(outY - padding + kernelY, x)`: for each kernel row, the rows of
    /// consecutive outputs are consecutive rows here, one matrix for one product.
    func unfoldKernelRows(_ images: UnsafePointer<Float>, samples: Int, into rows: UnsafeMutablePointer<Float>) {
        let channels = input.channels
        var row = rows
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for y in 0..<input.height {
                for x in 0..<output.width {
                    let (first, end, pixel) = kernelRowSpan(y: y, x: x)
                    guard first < end else {
                        row.update(repeating: 0, count: kernelRowValues)
                        row += kernelRowValues
                        continue
                    }
                    row.update(repeating: 0, count: first * channels)
                    Self.copy(image + pixel * channels, to: row + first * channels, count: (end - first) * channels)
                    (row + end * channels).update(repeating: 0, count: (kernelSize - end) * channels)
                    row += kernelRowValues
                }
            }
        }
    }

    /// The adjoint of `unfoldKernelRows`.
    func foldKernelRows(_ rows: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>) {
        images.update(repeating: 0, count: samples * inputSize)
        let channels = input.channels
        var row = rows
        for sample in 0..<samples {
            let image = images + sample * inputSize
            for y in 0..<input.height {
                for x in 0..<output.width {
                    let (first, end, pixel) = kernelRowSpan(y: y, x: x)
                    if first < end {
                        Self.add(row + first * channels, onto: image + pixel * channels, count: (end - first) * channels)
                    }
                    row += kernelRowValues
                }
            }
        }
    }

    /// Kernel columns `first..<end` of the kernel row on input row `y` whose window starts at
    /// output column `x` lie inside the image, from pixel `pixel` on (stride 1).
    @inline(__always)
    private func kernelRowSpan(y: Int, x: Int) -> (first: Int, end: Int, pixel: Int) {
        let left = x - padding
        let first = max(0, -left)
        let end = min(kernelSize, input.width - left)
        return (first, end, y * input.width + left + first)
    }

    /// Plain loops rather than `memcpy`: most runs are a few values (5 for one input channel),
    /// where a call costs more than the copy; the compiler vectorises the long ones.
    @inline(__always)
    private static func copy(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] = source[i] }
    }

    @inline(__always)
    private static func zero(_ destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] = 0 }
    }

    @inline(__always)
    private static func add(_ source: UnsafePointer<Float>, onto destination: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { destination[i] += source[i] }
    }
}
