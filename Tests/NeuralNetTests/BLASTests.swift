import NeuralNet
import XCTest

final class BLASTests: XCTestCase {
    func testSgemmMatchesNaiveForEveryTransposeCombination() {
        let (m, n, k) = (7, 5, 9)
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let a = randomValues(m * k, seed: 1)
                let b = randomValues(k * n, seed: 2)
                var fast = randomValues(m * n, seed: 3)
                var naive = fast
                let lda = transposeA ? m : k, ldb = transposeB ? k : n
                BLAS.sgemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                           a: a, lda: lda, b: b, ldb: ldb, beta: 0.25, c: &fast, ldc: n)
                BLAS.sgemmNaive(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: 0.5,
                                a: a, lda: lda, b: b, ldb: ldb, beta: 0.25, c: &naive, ldc: n)
                for (x, y) in zip(fast, naive) {
                    XCTAssertEqual(x, y, accuracy: 1e-5, "transposeA \(transposeA) transposeB \(transposeB)")
                }
            }
        }
    }

    func testMatrixMultiply() {
        let a = Matrix(rows: 2, columns: 3, values: [1, 2, 3, 4, 5, 6])
        let b = Matrix(rows: 3, columns: 2, values: [7, 8, 9, 10, 11, 12])
        XCTAssertEqual(a.multiplied(by: b), Matrix(rows: 2, columns: 2, values: [58, 64, 139, 154]))
    }
}
