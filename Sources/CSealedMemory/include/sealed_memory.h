#ifndef ZMQT_SEALED_MEMORY_H
#define ZMQT_SEALED_MEMORY_H

#include <stddef.h>

/// An anonymous shared-memory file (memfd) of `byte_count` bytes whose size is then sealed:
/// nobody, its creator included, can shrink or grow it any more, so another process may
/// map it without risking SIGBUS. Returns the descriptor, or -1 with errno set.
/// (memfd_create and the F_SEAL_* flags need _GNU_SOURCE, which Swift's Glibc module is
/// not built with; hence this shim.)
int zmqt_sealed_memory_create(const char *name, size_t byte_count);

/// 1 if the file behind `descriptor` can no longer shrink (F_SEAL_SHRINK), 0 if it can or
/// is no memfd, -1 on error.
int zmqt_sealed_memory_cannot_shrink(int descriptor);

#endif
