#if canImport(Glibc)
import Glibc
#endif
@testable import Training
import XCTest

final class CPUAffinityTests: XCTestCase {
    /// The busy wait runs in the idle scheduling class and returns to the usual one, also
    /// when its body throws.
    func testIdlePriorityHoldsForTheBodyOnly() throws {
        let idleClass: Int32 = 5  // SCHED_IDLE (behind _GNU_SOURCE, which Swift's Glibc lacks)
        XCTAssertEqual(sched_getscheduler(0), SCHED_OTHER)
        let inside = CPUAffinity.atIdlePriority { sched_getscheduler(0) }
        XCTAssertEqual(inside, idleClass)
        XCTAssertEqual(sched_getscheduler(0), SCHED_OTHER)
        struct Stop: Error {}
        XCTAssertThrowsError(try CPUAffinity.atIdlePriority { throw Stop() })
        XCTAssertEqual(sched_getscheduler(0), SCHED_OTHER)
    }
}
