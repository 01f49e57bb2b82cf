#ifndef IMAGE_WORKER_CLIBFUZZER_H
#define IMAGE_WORKER_CLIBFUZZER_H

#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver (compiler-rt, linked by `-sanitize=fuzzer`): runs the fuzzing loop with
/// libFuzzer's own command-line flags, calling `callback` with each input. Only referenced by a
/// build with `-DFUZZING`; declared here because Swift cannot declare a C function itself.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));

#endif
