/* The codebook's running statistics of one call, in one pass over its inputs and outputs.
 *
 * Inputs x and outputs y are (N, G, d) float rows; for each group g the sums over tokens of
 * |y - x|^2, |x|^2, |x|, |y| and x (d values) are added to out[g * (4 + d) ...], in that order,
 * accumulated in double (the squares of floats are exact there). Each thread sums a share of
 * the tokens on its own, and the shares are added at the end in the threads' order, so the
 * sums do not depend on which thread finishes first. Built with topk_rows.c into one library
 * (native.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Returns 0, or the number of threads when their sums could not be allocated. */
int stats_sums(const float *restrict x, const float *restrict y, int64_t tokens, int64_t groups,
               int64_t dim, double *restrict out, int threads) {
    const int64_t width = groups * (4 + dim);
    const int team = threads > 0 ? threads : 1;
    double *restrict shares = calloc((size_t)(width * team), sizeof(double));
    if (!shares) return team;
#pragma omp parallel num_threads(team)
    {
        int part = 0;
#ifdef _OPENMP
        part = omp_get_thread_num();
#endif
        double *restrict sums = shares + part * width;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < tokens; ++n) {
            for (int64_t g = 0; g < groups; ++g) {
                const float *restrict xr = x + (n * groups + g) * dim;
                const float *restrict yr = y + (n * groups + g) * dim;
                double *restrict acc = sums + g * (4 + dim);
                double error = 0.0, in = 0.0, outn = 0.0;
                for (int64_t i = 0; i < dim; ++i) {
                    const double a = (double)xr[i], b = (double)yr[i];
                    error += (b - a) * (b - a);
                    in += a * a;
                    outn += b * b;
                    acc[4 + i] += a;
                }
                acc[0] += error;
                acc[1] += in;
                acc[2] += sqrt(in);
                acc[3] += sqrt(outn);
            }
        }
    }
    for (int p = 0; p < team; ++p)
        for (int64_t i = 0; i < width; ++i) out[i] += shares[p * width + i];
    free(shares);
    return 0;
}
