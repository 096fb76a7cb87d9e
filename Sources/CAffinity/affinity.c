#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include "affinity.h"

int zmqt_pin_to_cpu(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) {
        errno = EINVAL;
        return -1;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}

int zmqt_current_cpu(void) {
    return sched_getcpu();
}

int zmqt_allowed_cpu(int index) {
    cpu_set_t set;
    if (index < 0 || sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set) && index-- == 0) return cpu;
    }
    return -1;
}

int zmqt_allowed_cpu_count(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    return CPU_COUNT(&set);
}

int zmqt_set_idle_policy(int idle) {
    struct sched_param parameters = {0};
    return sched_setscheduler(0, idle ? SCHED_IDLE : SCHED_OTHER, &parameters);
}

size_t zmqt_affinity_mask_bytes(void) {
    return sizeof(cpu_set_t);
}

int zmqt_get_affinity(void *mask) {
    return sched_getaffinity(0, sizeof(cpu_set_t), (cpu_set_t *)mask);
}

int zmqt_set_affinity(const void *mask) {
    return sched_setaffinity(0, sizeof(cpu_set_t), (const cpu_set_t *)mask);
}
