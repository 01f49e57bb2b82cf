#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <unistd.h>
#include "CFileSystem.h"

int iw_start_write_back(int fd, int64_t offset, int64_t length) {
    return sync_file_range(fd, (off64_t)offset, (off64_t)length, SYNC_FILE_RANGE_WRITE);
}

ssize_t iw_copy_file_range(int in, int64_t *in_offset, int out, size_t length) {
    loff_t offset = (loff_t)*in_offset;
    ssize_t copied = copy_file_range(in, &offset, out, NULL, length, 0);
    if (copied > 0) *in_offset = (int64_t)offset;
    return copied;
}

ssize_t iw_sendfile(int out, int in, int64_t *in_offset, size_t length) {
    off_t offset = (off_t)*in_offset;
    ssize_t copied = sendfile(out, in, &offset, length);
    if (copied > 0) *in_offset = (int64_t)offset;
    return copied;
}

void iw_set_thread_name(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

int iw_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}
