#ifndef ZMQT_AFFINITY_H
#define ZMQT_AFFINITY_H

/// Pins the calling thread, and the threads it starts afterwards, to one CPU.
/// Returns 0, or -1 with errno set. (sched_setaffinity needs _GNU_SOURCE, which Swift's
/// Glibc module is not built with; hence this one-function shim.)
int zmqt_pin_to_cpu(int cpu);

#endif
