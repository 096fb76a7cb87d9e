#ifndef ZMQT_AFFINITY_H
#define ZMQT_AFFINITY_H

#include <stddef.h>

/// Pins the calling thread, and the threads it starts afterwards, to one CPU.
/// Returns 0, or -1 with errno set. (sched_setaffinity needs _GNU_SOURCE, which Swift's
/// Glibc module is not built with; hence this shim.)
int zmqt_pin_to_cpu(int cpu);

/// The CPU the calling thread runs on now, or -1.
int zmqt_current_cpu(void);

/// The index-th CPU (counting from 0) this process may run on, or -1 if there are fewer.
int zmqt_allowed_cpu(int index);

/// How many CPUs this process may run on (its affinity mask: taskset, cgroup cpusets), or -1.
int zmqt_allowed_cpu_count(void);

/// Moves the calling thread to SCHED_IDLE (idle != 0: it runs only when nothing else on its
/// CPU wants to) or back to SCHED_OTHER. Returns 0, or -1 with errno set. (SCHED_IDLE, too,
/// needs _GNU_SOURCE.)
int zmqt_set_idle_policy(int idle);

/// The calling thread's CPU set, as an opaque `zmqt_affinity_mask_bytes()`-byte mask that
/// `zmqt_set_affinity` puts back. Both return 0, or -1 with errno set.
size_t zmqt_affinity_mask_bytes(void);
int zmqt_get_affinity(void *mask);
int zmqt_set_affinity(const void *mask);

#endif
