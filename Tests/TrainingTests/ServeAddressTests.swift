import Training
import XCTest

/// `worker --serve auto[:PORT]`: the address comes from the route to the coordinator.
final class ServeAddressTests: XCTestCase {
    func testAutoTakesTheAddressTowardsTheCoordinator() throws {
        XCTAssertEqual(try ServeAddress.endpoint(for: "auto", coordinator: "tcp://127.0.0.1:5555"), "tcp://127.0.0.1:0")
        // A name resolves first (localhost may be IPv6 here, in brackets then).
        XCTAssertTrue(["tcp://127.0.0.1:7000", "tcp://[::1]:7000"]
            .contains(try ServeAddress.endpoint(for: "auto:7000", coordinator: "tcp://localhost:5555")))
        XCTAssertEqual(try ServeAddress.endpoint(for: "tcp://10.1.2.3:0", coordinator: "tcp://127.0.0.1:5555"), "tcp://10.1.2.3:0")
    }

    func testBadFormsAndUnreachableCoordinatorsAreOneLineErrors() {
        for bad in ["auto:", "auto:70000", "auto:x", "udp://a:1", "tcp://nohost", ""] {
            XCTAssertFalse(ServeAddress.isValid(bad), bad)
        }
        for good in ["auto", "auto:0", "auto:65535", "tcp://h:1"] { XCTAssertTrue(ServeAddress.isValid(good), good) }
        XCTAssertThrowsError(try ServeAddress.endpoint(for: "auto", coordinator: "tcp://no-such-host.invalid:5555")) { error in
            XCTAssertTrue("\(error)".contains("cannot tell which address of this host reaches the coordinator"), "\(error)")
            XCTAssertFalse("\(error)".contains("\n"))
        }
        XCTAssertThrowsError(try ServeAddress.endpoint(for: "auto", coordinator: "ipc:///tmp/x"))
        XCTAssertThrowsError(try ServeAddress.endpoint(for: "auto:99999", coordinator: "tcp://127.0.0.1:5555"))
    }
}
