// OpenBLAS's cblas.h declares cblas_sgemm and openblas_set_num_threads.
#include <cblas.h>
