// image-worker-fuzz: the parsers of hostile bytes under libFuzzer, or their corpus replayed.
//
// Built for fuzzing by deploy/fuzz.sh (`-sanitize=fuzzer,address -DFUZZING`), it runs libFuzzer's
// loop on the harness named by FUZZ_HARNESS, with libFuzzer's own flags:
//     FUZZ_HARNESS=json image-worker-fuzz -max_total_time=60 Tests/Fuzz/corpus/json
// Built normally (every `swift build`), it replays files through a harness, so that the corpus
// kept in the repository is a regression test without the fuzzing runtime:
//     image-worker-fuzz replay json Tests/Fuzz/corpus/json
//     image-worker-fuzz list
// Written by hand: no package here drives libFuzzer from Swift.

#if canImport(Glibc)
import Glibc
#endif
import CLibFuzzer

func fail(_ message: String) -> Never {
    let line = Array("image-worker-fuzz: \(message)\n".utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    exit(2)
}

/// The files under `path` (a file, or every regular file in a folder, sorted).
func inputFiles(_ path: String) -> [String] {
    guard let directory = opendir(path) else { return [path] }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if !name.hasPrefix(".") { names.append(path + "/" + name) }
    }
    return names.sorted()
}

func readFile(_ path: String) -> [UInt8] {
    guard let file = fopen(path, "rb") else { fail("cannot open \(path)") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = fread(&buffer, 1, buffer.count, file)
        if count == 0 { break }
        bytes += buffer[0..<count]
    }
    return bytes
}

let arguments = CommandLine.arguments
if arguments.count == 2 && arguments[1] == "list" {
    for harness in FuzzHarness.all { print(harness.name) }
    exit(0)
}
#if FUZZING
_ = FuzzHarness.selected  // fails at once, naming the harnesses, when FUZZ_HARNESS is not set
var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
#else
switch arguments.dropFirst().first {
case "replay":
    guard arguments.count >= 4, let harness = FuzzHarness.named(arguments[2]) else {
        fail("usage: image-worker-fuzz replay HARNESS FILE|FOLDER…; harnesses: \(FuzzHarness.all.map(\.name).joined(separator: ", "))")
    }
    let files = arguments.dropFirst(3).flatMap(inputFiles)
    for file in files { harness.run(readFile(file)) }
    print("\(harness.name): \(files.count) inputs replayed, every invariant held")
default:
    fail("usage: image-worker-fuzz list | replay HARNESS FILE|FOLDER… (built with -DFUZZING: libFuzzer's flags, FUZZ_HARNESS=NAME)")
}
#endif
