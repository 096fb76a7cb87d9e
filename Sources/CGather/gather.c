#include <string.h>
#include <sys/mman.h>
#include "gather.h"

/// Rows ahead to prefetch: enough to cover memory latency, few enough to stay in L1.
enum { AHEAD = 8 };

static void prefetch_row(const uint8_t *row, size_t row_bytes) {
    for (size_t offset = 0; offset < row_bytes; offset += 64) __builtin_prefetch(row + offset);
}

void zmqt_gather_rows(const uint8_t *source, size_t row_bytes, const uint8_t *labels,
                      const intptr_t *indices, size_t count,
                      uint8_t *destination, uint8_t *label_destination) {
    for (size_t row = 0; row < count && row < AHEAD; row++) prefetch_row(source + (size_t)indices[row] * row_bytes, row_bytes);
    for (size_t row = 0; row < count; row++) {
        if (row + AHEAD < count) prefetch_row(source + (size_t)indices[row + AHEAD] * row_bytes, row_bytes);
        memcpy(destination + row * row_bytes, source + (size_t)indices[row] * row_bytes, row_bytes);
        label_destination[row] = labels[indices[row]];
    }
}

int zmqt_advise_huge_pages(const void *start, size_t byte_count) {
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t first = ((uintptr_t)start + huge - 1) & ~(huge - 1);
    uintptr_t end = ((uintptr_t)start + byte_count) & ~(huge - 1);
    if (end <= first) return 0;  // no whole huge page inside
    return madvise((void *)first, end - first, MADV_HUGEPAGE);
}
