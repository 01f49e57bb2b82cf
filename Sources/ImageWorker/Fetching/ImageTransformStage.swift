import ImageServices

/// A stage that works on a verified image in its staging file before it is placed: decompress,
/// inspect, convert (the format pipeline adds them). Each gets the image the previous one made
/// and returns what it made of it; it may replace the staging file (and must remove the one it
/// replaced). The fetcher runs them in order on the disk image only: kernels and ramdisks are
/// neither inspected nor converted (Ironic's rule). Today: ``FormatInspectionStage``, then
/// ``ImageConversionStage``.
public protocol ImageTransformStage: Sendable {
    /// The stage's work on `image`.
    func transform(_ image: StagedImage, context: ImageRequestContext) async throws -> StagedImage
}
