// Counts malloc/calloc/realloc calls for scripts/bench.sh (LD_PRELOAD); the bench reads
// the count through zmq_trainer_malloc_count to check that a training step allocates nothing.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

static _Atomic uint64_t calls;
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t size) { atomic_fetch_add(&calls, 1); return __libc_malloc(size); }
void *calloc(size_t n, size_t size) { atomic_fetch_add(&calls, 1); return __libc_calloc(n, size); }
void *realloc(void *p, size_t size) { atomic_fetch_add(&calls, 1); return __libc_realloc(p, size); }
uint64_t zmq_trainer_malloc_count(void) { return atomic_load(&calls); }
