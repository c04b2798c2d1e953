/* Top-k of each row of a float32 matrix, reading each score about once.
 *
 * A row of width W is viewed as L rows of S = ceil(W / L) columns; block c is the strided set
 * {c, c + S, c + 2S, ...}. Pass 1 takes every block's maximum with vertical maxima over
 * contiguous runs, which the compiler vectorises. The maxima of 16 groups of blocks are 16
 * distinct scores, so the k-th largest of them is a lower bound on the k-th largest score of
 * the row. Pass 2 visits only the blocks whose maximum reaches that bound (the k largest scores
 * lie in them) and keeps the k best of their scores; almost every score is rejected by one
 * comparison. Results are sorted by descending score, ties broken by the lower index. NaN
 * scores are never preferred: rows holding them still get k valid, distinct indices, but not
 * necessarily the ones torch.topk (which ranks NaN highest) would give.
 *
 * Rows are split over OpenMP threads when built with -fopenmp, as many as torch uses. Where
 * torch ships the same OpenMP runtime (libgomp.so.1), that runtime is shared and the kernel
 * runs on torch's own worker threads.
 *
 * Built on first use by native.py; plain C99, no Python headers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* Insert (v, i) into the k best kept in vals/idx (sorted: larger value, then lower index).
 * Written without data-dependent branches after the first test: rare as insertions are, a
 * mispredicted loop exit per element moved made them the main cost. */
static inline void insert(float *vals, int64_t *idx, int64_t *count, int k, float v, int64_t i) {
    int n = (int)*count;
    if (n == k) {
        float w = vals[k - 1];
        if (!(v > w || (v == w && i < idx[k - 1]))) return;
    } else {
        vals[n] = -INFINITY;
        idx[n] = INT64_MAX;
        *count = ++n;
    }
    int pos = 0;
    for (int p = 0; p < n; ++p) pos += (vals[p] > v) | ((vals[p] == v) & (idx[p] < i));
    for (int p = n - 1; p > 0; --p) {
        int move = p > pos;
        vals[p] = move ? vals[p - 1] : vals[p];
        idx[p] = move ? idx[p - 1] : idx[p];
    }
    vals[pos] = v;
    idx[pos] = i;
}

static int64_t block_rows(int64_t width) {
    int64_t l = width / 256;
    return l < 16 ? 16 : (l > 256 ? 256 : l);
}

/* Rows [row_begin, row_end) of `scores` (row stride `row_stride`) -> out[r * k + j]. */
void topk_rows_f32(const float *restrict scores, int64_t row_begin, int64_t row_end,
                   int64_t width, int64_t row_stride, int k, int64_t *restrict out,
                   int threads) {
    const int64_t L = block_rows(width);
    const int64_t S = (width + L - 1) / L;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        float *restrict block_max = malloc(sizeof(float) * (S > 16 ? S : 16));
        float *restrict vals = malloc(sizeof(float) * k);
        int64_t *restrict idx = malloc(sizeof(int64_t) * k);
#pragma omp for schedule(static)
        for (int64_t r = row_begin; r < row_end; ++r) {
            const float *restrict row = scores + r * row_stride;
            int64_t count = 0;
            if (S < 16 || k > 16) { /* narrow rows or large k: plain scan */
                for (int64_t j = 0; j < width; ++j) insert(vals, idx, &count, k, row[j], j);
            } else {
                for (int64_t c = 0; c < S; ++c) block_max[c] = row[c];
                for (int64_t i = 1; i < L; ++i) {
                    const float *restrict part = row + i * S;
                    int64_t n = width - i * S;
                    if (n <= 0) break;
                    if (n > S) n = S;
                    for (int64_t c = 0; c < n; ++c)
                        block_max[c] = part[c] > block_max[c] ? part[c] : block_max[c];
                }
                float group_max[16];
                for (int c = 0; c < 16; ++c) group_max[c] = block_max[c];
                for (int64_t i = 16; i + 16 <= S; i += 16)
                    for (int c = 0; c < 16; ++c)
                        group_max[c] = block_max[i + c] > group_max[c] ? block_max[i + c] : group_max[c];
                for (int c = 0; c < 16; ++c) insert(vals, idx, &count, k, group_max[c], c);
                float threshold = vals[k - 1];
                count = 0;
                for (int64_t c = 0; c < S; ++c) {
                    if (!(block_max[c] >= threshold)) continue;
                    for (int64_t j = c; j < width; j += S) {
                        if (row[j] >= threshold) {
                            insert(vals, idx, &count, k, row[j], j);
                            if (count == k && vals[k - 1] > threshold) threshold = vals[k - 1];
                        }
                    }
                }
                if (count < k) { /* only with NaN scores: fall back to a plain scan */
                    count = 0;
                    for (int64_t j = 0; j < width; ++j) insert(vals, idx, &count, k, row[j], j);
                }
            }
            int64_t *restrict dst = out + r * k;
            for (int t = 0; t < k; ++t) dst[t] = idx[t];
        }
        free(block_max);
        free(vals);
        free(idx);
    }
}
