import OsloJSON
import ImageServices
import OsloMessaging
import Testing
@testable import ImageWorker

@Suite("instance_info rules")
struct InstanceInfoTests {
    func info(_ object: JSONObject) throws -> InstanceInfo {
        try InstanceInfo(object)
    }

    @Test("whole disk or partition, as Ironic decides it")
    func decision() throws {
        let source: JSONValue = "file:///srv/d.img"
        #expect(try info(["image_source": source]).decideImageType() == .wholeDisk)
        #expect(try info(["image_source": source, "kernel": "file:///k", "ramdisk": "file:///r"]).decideImageType() == .partition)
        #expect(try info(["image_source": source, "kernel": "file:///k"]).decideImageType() == .wholeDisk)
        #expect(try info(["image_source": source, "kernel": "file:///k", "ramdisk": "file:///r", "is_whole_disk": true]).decideImageType() == .wholeDisk)
        #expect(try info(["image_source": source, "is_whole_disk": "false"]).decideImageType() == .partition)
        #expect(try info(["image_source": source, "is_whole_disk": true, "image_type": "partition"]).decideImageType() == .partition)
        #expect(try info(["image_source": source]).decideImageType(glanceProperties: ["kernel_id": "k", "ramdisk_id": "r"]) == .partition)
        #expect(try info(["image_source": source]).decideImageType(glanceProperties: ["kernel_id": "k"]) == .wholeDisk)
    }

    @Test("fields of the wrong type are refused, naming the field", arguments: [
        (["image_source": 5] as JSONObject, "instance_info.image_source must be a string"),
        (["image_source": "file:///x", "kernel": ["a"]] as JSONObject, "instance_info.kernel must be a string"),
        (["image_source": "file:///x", "is_whole_disk": 1] as JSONObject, "instance_info.is_whole_disk must be a boolean"),
        (["image_source": "file:///x", "image_type": "banana"] as JSONObject, "instance_info.image_type must be"),
        (["kernel": "file:///x"] as JSONObject, "instance_info is missing image_source."),
    ])
    func wrongTypes(object: JSONObject, expected: String) {
        #expect { _ = try InstanceInfo(object) } throws: { ($0 as? IronicError)?.message.hasPrefix(expected) == true }
    }

    @Test("node_uuid must be a UUID and is made canonical")
    func nodeUUID() throws {
        #expect(try FetchImageArguments.nodeUUID(["node_uuid": "1BE26C0B-03F2-4D2E-AE87-C02D7F33C123"]) == "1be26c0b-03f2-4d2e-ae87-c02d7f33c123")
        for bad: JSONValue in ["../../etc", "", 42, .null, "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/../x"] {
            #expect { _ = try FetchImageArguments.nodeUUID(["node_uuid": bad]) } throws: {
                [IronicError.Code.invalidParameterValue, .missingParameterValue].contains(($0 as? IronicError)?.code)
            }
        }
        #expect(throws: IronicError.self) { _ = try FetchImageArguments.nodeUUID([:]) }
    }
}
