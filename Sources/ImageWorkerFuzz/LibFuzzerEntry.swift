#if FUZZING
#if canImport(Glibc)
import Glibc
#endif

extension FuzzHarness {
    /// The harness FUZZ_HARNESS names, chosen once for the process.
    static let selected: FuzzHarness = {
        guard let name = getenv("FUZZ_HARNESS").map({ String(cString: $0) }), let harness = FuzzHarness.named(name) else {
            fatalError("set FUZZ_HARNESS to one of: \(FuzzHarness.all.map(\.name).joined(separator: ", "))")
        }
        return harness
    }()
}

/// libFuzzer's entry point: one input through the selected harness. Whichever `main` the link
/// keeps (libFuzzer's, or main.swift's call of its driver), every input comes through here.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzHarness.selected.run(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
#endif
