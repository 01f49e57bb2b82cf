// The four decompressors of contract §3.3 step 2, from Debian's system libraries (libzstd-dev,
// zlib1g-dev, liblzma-dev, libbz2-dev): their headers, and a wrapper for the one entry point that
// is a macro Swift cannot call. Only ImageCompression imports this module.
#ifndef IMAGE_WORKER_CCOMPRESSION_H
#define IMAGE_WORKER_CCOMPRESSION_H

#include <stdint.h>
#include <zstd.h>
#include <zlib.h>
#include <lzma.h>
#include <bzlib.h>

/// inflateInit2(stream, 15 + 32): inflate with the largest window, gzip or zlib header detected.
/// Returns zlib's status (Z_OK on success).
int iw_inflate_init_gzip(z_stream *stream);

/// LZMA_CONCATENATED, for lzma_stream_decoder: .xz streams one after another decode as one.
uint32_t iw_lzma_concatenated(void);

#endif
