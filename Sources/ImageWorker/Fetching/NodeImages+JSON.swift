import ImageFormats
import Primitives
import OsloJSON
import ImageServices
import OsloMessaging

extension NodeImages {
    /// The result of contract §3.1: the reply of a call and the data of the `.end` event.
    public func resultJSON(requestID: String, taskID: String) -> JSONObject {
        var imagesObject = JSONObject()
        for image in images { imagesObject[image.role.rawValue] = .object(image.json(diskFormat: image.role == .image ? instanceInfo.diskFormat : nil)) }
        return [
            "node_uuid": .string(nodeUUID),
            "request_id": .string(requestID),
            "task_id": .string(taskID),
            "image_type": .string(imageType.rawValue),
            "images": .object(imagesObject),
            "instance_info": .object(mergedInstanceInfo),
        ]
    }

    /// What a conductor would merge into the node's `instance_info`, with Ironic's names.
    var mergedInstanceInfo: JSONObject {
        var info = JSONObject()
        guard let image = images.first(where: { $0.role == .image }) else { return info }
        info["image_source"] = .string(image.reference.redacted)
        info["image_type"] = .string(imageType.rawValue)
        if imageType == .partition {
            if let kernel = images.first(where: { $0.role == .kernel }) { info["kernel"] = .string(kernel.reference.redacted) }
            if let ramdisk = images.first(where: { $0.role == .ramdisk }) { info["ramdisk"] = .string(ramdisk.reference.redacted) }
        }
        if let checksum = image.checksum {
            info["image_os_hash_algo"] = .string(checksum.algorithm.rawValue)
            info["image_os_hash_value"] = .string(checksum.value)
        }
        if image.source != nil {
            // The bytes changed (converted): what Ironic's conductor writes after a conversion.
            info["image_disk_format"] = .string("raw")
            info["image_checksum"] = .null
        } else if let detected = image.inspection?.format {
            // Ironic writes raw for a raw disk that carries a GPT too.
            info["image_disk_format"] = .string(detected.isRaw ? "raw" : detected.rawValue)
        } else if let format = instanceInfo.diskFormat ?? image.metadata.diskFormat {
            info["image_disk_format"] = .string(format)
        }
        if let size = image.fetched?.size ?? image.metadata.size { info["image_size"] = .integer(size) }
        return info
    }
}

extension ResolvedImage {
    /// The image's part of the result (contract §3.1: `href`, `service`, `path`, `size`, …).
    public func json(diskFormat: String?) -> JSONObject {
        var object: JSONObject = [
            "href": .string(reference.redacted),
            "service": .string(serviceName),
            "path": .string(orNull: path),
            "size": .integer(orNull: fetched?.size ?? metadata.size),
            "disk_format": .string(orNull: diskFormat ?? metadata.diskFormat),
            "updated_at": .string(orNull: metadata.updatedAtMicroseconds.map(OsloTimestamp.isoFormat)),
            "checksum": checksum.map { .object(["algo": .string($0.algorithm.rawValue), "value": .string($0.value)]) } ?? .null,
            "verified": .bool(verified),
            "cache": .string(orNull: cache?.rawValue),
            "transfer": .string(orNull: fetched?.transfer.rawValue),
            "bytes_transferred": fetched.map { .integer($0.bytesTransferred) } ?? .null,
            "duration_ms": .integer(duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000),
        ]
        let sourceJSON = source.map { source in
            JSONValue.object([
                "disk_format": .string(orNull: source.diskFormat?.rawValue), "compression": .string(orNull: source.compression),
                "size": .integer(source.size),
                "checksum": .object(["algo": .string(source.checksum.algorithm.rawValue), "value": .string(source.checksum.value)]),
            ])
        }
        if let inspection, let detected = inspection.format {
            // §3.3: the detected format of the file at `path`, its virtual size, and where it came
            // from (the same as the top level when nothing changed the bytes).
            object["disk_format"] = .string(detected.rawValue)
            object["virtual_size"] = .integer(orNull: inspection.virtualSize)
            object["source"] = sourceJSON ?? .object([
                "disk_format": .string(detected.rawValue), "compression": .null,
                "size": .integer(orNull: fetched?.size ?? metadata.size), "checksum": object["checksum"] ?? .null,
            ])
        } else if let sourceJSON {
            // Not inspected, but decompressed: what was served, with its compression.
            object["source"] = sourceJSON
        }
        return object
    }
}

extension ImageMetadata {
    /// What `show_image` returns (contract §3.2).
    public var json: JSONObject {
        var propertyObject = JSONObject()
        for key in properties.keys.sorted() { propertyObject[key] = .string(properties[key]!) }
        return [
            "size": .integer(orNull: size),
            "updated_at": .string(orNull: updatedAtMicroseconds.map(OsloTimestamp.isoFormat)),
            "disk_format": .string(orNull: diskFormat),
            "checksum": checksum.map { .object(["algo": .string($0.algorithm.rawValue), "value": .string($0.value)]) } ?? .null,
            "properties": .object(propertyObject),
            "no_cache": .bool(noCache),
        ]
    }
}
