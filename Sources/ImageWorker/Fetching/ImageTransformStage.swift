import ImageServices

/// A stage that works on a verified image in its staging file before it is placed: decompress,
/// inspect, convert. Each gets the image the previous one made and returns what it made of it;
/// it may replace the staging file (and must remove the one it replaced). The fetcher runs them
/// in order on the disk image only: kernels and ramdisks are neither inspected nor converted
/// (Ironic's rule). Today: ``DecompressionStage``, ``FormatInspectionStage``, then
/// ``ImageConversionStage``.
public protocol ImageTransformStage: Sendable {
    /// The stage's work on `image`; `progress` gets the stage's phase (`decompress`, `inspect`,
    /// `convert`) as it goes.
    func transform(_ image: StagedImage, context: ImageRequestContext, progress: @escaping TransferProgressHandler) async throws -> StagedImage

    /// The settings that decide what this stage makes of an image's bytes, as text (nil when it
    /// never changes them): part of the master cache's key, so that a master made under other
    /// settings is never served.
    var cacheSettings: String? { get }
}
