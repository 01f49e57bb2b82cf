#include "CCompression.h"

int iw_inflate_init_gzip(z_stream *stream) {
    return inflateInit2(stream, 15 + 32);
}

uint32_t iw_lzma_concatenated(void) {
    return LZMA_CONCATENATED;
}
