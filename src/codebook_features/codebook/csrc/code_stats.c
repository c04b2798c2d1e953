/* The codebook's running statistics of one call, in one pass over its inputs and outputs.
 *
 * Inputs x and outputs y are (N, G, d) float rows; for each group g the sums over tokens of
 * |y - x|^2, |x|^2, |x|, |y| and x (d values) are added to out[g * (4 + d) ...], in that order,
 * accumulated in double (the squares of floats are exact there). Each thread sums a share of
 * the tokens on its own, and the shares are added at the end. Built with topk_rows.c into one
 * library (native.py). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Returns how many threads could not allocate their sums (0: every token was counted). */
int stats_sums(const float *restrict x, const float *restrict y, int64_t tokens, int64_t groups,
               int64_t dim, double *restrict out, int threads) {
    const int64_t width = groups * (4 + dim);
    int failed = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        double *restrict sums = calloc((size_t)width, sizeof(double));
        if (!sums) {
#pragma omp atomic
            ++failed;
        }
#pragma omp for schedule(static)
        for (int64_t n = 0; n < tokens; ++n) {
            if (!sums) continue;
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
        if (sums) {
#pragma omp critical
            for (int64_t i = 0; i < width; ++i) out[i] += sums[i];
        }
        free(sums);
    }
    return failed;
}
