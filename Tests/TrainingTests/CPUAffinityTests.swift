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

    /// Where the coordinator waits for a step's last results: on one CPU, then wherever it
    /// could run before; a CPU it cannot have leaves it where it is and runs nothing.
    func testOnCPURunsThereAndPutsTheCPUSetBack() {
        let allowed = CPUAffinity.allowedCount
        let target = CPUAffinity.allowedCPU(allowed - 1)
        var inside: (cpu: Int?, allowed: Int)?
        XCTAssertTrue(CPUAffinity.onCPU(target) { inside = (CPUAffinity.currentCPU, CPUAffinity.allowedCount) })
        XCTAssertEqual(inside?.cpu, target)
        XCTAssertEqual(inside?.allowed, 1)
        XCTAssertEqual(CPUAffinity.allowedCount, allowed)
        XCTAssertFalse(CPUAffinity.onCPU(5000) { XCTFail("ran on a CPU it cannot have") })
        XCTAssertEqual(CPUAffinity.allowedCount, allowed)
    }
}
