#ifndef ZMQT_GATHER_H
#define ZMQT_GATHER_H

#include <stddef.h>
#include <stdint.h>

/// Copies rows `indices[0..<count]` of `source` (rows of `row_bytes`) into consecutive rows
/// of `destination`, and the matching bytes of `labels` into `label_destination`.
///
/// Why C: a batch's rows lie at random places in a 47 MB dataset, so each row's copy waits
/// on memory. Prefetching the rows a few ahead overlaps those waits (512 MNIST rows: about
/// 45 µs without, 12 µs with, on the development machine); Swift has no prefetch.
void zmqt_gather_rows(const uint8_t *source, size_t row_bytes, const uint8_t *labels,
                      const intptr_t *indices, size_t count,
                      uint8_t *destination, uint8_t *label_destination);

/// Asks the kernel to back the whole 2 MiB pages inside `[start, start + byte_count)` with
/// huge pages when they are first touched (MADV_HUGEPAGE), so call it before writing them.
/// A batch's rows lie on random 4 KiB pages of the data set, each a TLB miss (a two-level
/// walk in a virtual machine); on huge pages the gather is about 10% faster. Best effort:
/// returns 0, or -1 with errno set when the kernel declines (THP "never", old kernels).
int zmqt_advise_huge_pages(const void *start, size_t byte_count);

#endif
