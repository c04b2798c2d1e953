/* The codes' gradient: rows of a source added into rows of a table named by an index.
 *
 * For each slot s, then each row r in order, table[index[s][r]] += source[r] (times 0 or 1 when
 * a validity mask is given): the same additions in the same order as torch's index_add_ per
 * slot, so the sums are bit for bit the same, but each table row is added in one vectorised
 * pass instead of index_add_'s column-by-column scatter. Threads own disjoint ranges of table
 * rows, so no two threads write the same row and the order per row does not depend on the
 * number of threads. Built with topk_rows.c into one library (native.py). */
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Returns how many index entries lie outside [0, table_rows) (nothing is added for those). */
int64_t add_rows(float *restrict table, int64_t table_rows, int64_t dim,
                 const int64_t *restrict index, const float *restrict source,
                 const uint8_t *restrict valid, int64_t rows, int64_t slots, int threads) {
    int64_t outside = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1) reduction(+ : outside)
    {
        int64_t begin = 0, end = table_rows, count = 0, part = 0;
#ifdef _OPENMP
        const int64_t parts = omp_get_num_threads();
        part = omp_get_thread_num();
        begin = table_rows * part / parts;
        end = table_rows * (part + 1) / parts;
#endif
        for (int64_t s = 0; s < slots; ++s) {
            const int64_t *restrict column = index + s * rows;
            for (int64_t r = 0; r < rows; ++r) {
                const int64_t j = column[r];
                if (j < 0 || j >= table_rows) {
                    count += part == 0; /* counted once, by the first thread */
                    continue;
                }
                if (j < begin || j >= end) continue;
                float *restrict dst = table + j * dim;
                const float *restrict src = source + r * dim;
                if (valid) {
                    const float weight = valid[r * slots + s] ? 1.0f : 0.0f;
                    for (int64_t i = 0; i < dim; ++i) dst[i] += src[i] * weight;
                } else {
                    for (int64_t i = 0; i < dim; ++i) dst[i] += src[i];
                }
            }
        }
        outside += count;
    }
    return outside;
}
