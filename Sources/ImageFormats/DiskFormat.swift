/// The disk image formats the inspector tells apart: oslo.utils' format inspector's set, named as
/// `qemu-img` names them.
public enum DiskFormat: String, Sendable, CaseIterable, Codable {
    case raw, qcow2, vhd, vhdx, vmdk, vdi, qed, iso, gpt, luks

    /// Formats `qemu-img convert` turns into raw when `force_raw_images` is set (§3.3 step 5).
    public var isConvertibleToRaw: Bool { [.qcow2, .vmdk, .vhd, .vhdx, .vdi].contains(self) }

    /// The name `qemu-img -f` takes: qemu calls VHD `vpc`.
    public var qemuName: String { self == .vhd ? "vpc" : rawValue }

    /// Raw bytes as a deploy agent writes them: raw, or raw carrying a GPT (Ironic's
    /// `RAW_IMAGE_FORMATS`).
    public var isRaw: Bool { self == .raw || self == .gpt }
}
