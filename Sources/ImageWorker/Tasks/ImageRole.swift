/// Which of a node's images a file is.
public enum ImageRole: String, Sendable, Hashable, CaseIterable {
    case image, kernel, ramdisk

    /// The file name under the node's folder.
    public var fileName: String {
        switch self {
        case .image: "disk"
        case .kernel: "kernel"
        case .ramdisk: "ramdisk"
        }
    }
}

/// Whole-disk or partition image, in Ironic's words.
public enum ImageType: String, Sendable, Hashable {
    case wholeDisk = "whole-disk"
    case partition
}
