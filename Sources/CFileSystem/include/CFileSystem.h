// Linux calls that Swift's Glibc module does not import (glibc declares them only under
// _GNU_SOURCE, in headers the module leaves out, or as variadic functions): thin wrappers,
// nothing else. Used for copies and write-back, thread names and the AMQP thread's wakeups.
#ifndef IMAGE_WORKER_CFILESYSTEM_H
#define IMAGE_WORKER_CFILESYSTEM_H

#include <stdint.h>
#include <sys/types.h>

/// sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE): starts write-back of a range
/// without waiting for it. Returns 0, or -1 with errno set.
int iw_start_write_back(int fd, int64_t offset, int64_t length);

/// copy_file_range(2) from `in` at `*in_offset` to `out` at its file offset: the kernel copies
/// (or reflinks, or splices) without the bytes passing through user space. Returns the bytes
/// copied (0 at end of file), or -1 with errno set.
ssize_t iw_copy_file_range(int in, int64_t *in_offset, int out, size_t length);

/// sendfile(2) from `in` at `*in_offset` to `out` (any file, since Linux 2.6.33): a copy inside
/// the kernel where copy_file_range refuses (across file systems). Returns the bytes copied, or -1
/// with errno set.
ssize_t iw_sendfile(int out, int in, int64_t *in_offset, size_t length);

/// Names the calling thread (at most 15 bytes are kept), for `top -H` and crash reports.
void iw_set_thread_name(const char *name);

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK): a descriptor another thread can wake a poll(2) with.
int iw_eventfd(void);

#endif
