/* Top-k of each row of a float32 matrix, reading each score about once; and the exact top-k
 * of rows of cheap bfloat16 scores (screened_topk_bf16, at the end).
 *
 * A row of width W is viewed as L rows of S columns (S = ceil(W / L), rounded up to whole
 * 16-wide vectors when larger than 16; the last row may be short); block c is the strided set
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
#include <string.h>

/* Insert (v, i) into the k best kept in vals/idx (sorted: larger value, then lower index).
 * Written without data-dependent branches after the first test: rare as insertions are, a
 * mispredicted loop exit per element moved made them the main cost. One version for float
 * scores (insert) and one for exact double scores (insert_exact). */
#define DEFINE_INSERT(name, T)                                                                \
    static inline void name(T *vals, int64_t *idx, int64_t *count, int k, T v, int64_t i) {   \
        int n = (int)*count;                                                                  \
        if (n == k) {                                                                         \
            T w = vals[k - 1];                                                                \
            if (!(v > w || (v == w && i < idx[k - 1]))) return;                               \
        } else {                                                                              \
            vals[n] = -INFINITY;                                                              \
            idx[n] = INT64_MAX;                                                               \
            *count = ++n;                                                                     \
        }                                                                                     \
        int pos = 0;                                                                          \
        for (int p = 0; p < n; ++p) pos += (vals[p] > v) | ((vals[p] == v) & (idx[p] < i));   \
        for (int p = n - 1; p > 0; --p) {                                                     \
            int move = p > pos;                                                               \
            vals[p] = move ? vals[p - 1] : vals[p];                                           \
            idx[p] = move ? idx[p - 1] : idx[p];                                              \
        }                                                                                     \
        vals[pos] = v;                                                                        \
        idx[pos] = i;                                                                         \
    }
DEFINE_INSERT(insert, float)
DEFINE_INSERT(insert_exact, double)

#if defined(__GNUC__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

/* The float value of bfloat16 bits (its upper half). */
static inline float bf16_value(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static int64_t block_rows(int64_t width) {
    int64_t l = width / 256;
    return l < 16 ? 16 : (l > 256 ? 256 : l);
}

/* A row of width W is viewed as L rows of S columns: S and L for this width. */
typedef struct {
    int64_t rows, cols; /* L, S */
} Blocks;

static Blocks blocks_of(int64_t width) {
    Blocks b;
    b.rows = block_rows(width);
    b.cols = (width + b.rows - 1) / b.rows;
    if (b.cols > 16) { /* whole 16-wide vectors: no scalar tail in every one of the L parts */
        b.cols = (b.cols + 15) / 16 * 16;
        b.rows = (width + b.cols - 1) / b.cols;
    }
    return b;
}

/* Whether rows of this width and k are selected through block maxima (else by a plain scan). */
static int by_blocks(Blocks b, int k) { return b.cols >= 16 && k <= 16; }

/* block_max[c] = the largest of row[c], row[c + S], ... */
static void block_maxima(const float *restrict row, int64_t width, Blocks b,
                         float *restrict block_max) {
    const int64_t S = b.cols;
    for (int64_t c = 0; c < S; ++c) block_max[c] = -INFINITY; /* a NaN never hides its block */
    for (int64_t i = 0; i < b.rows; ++i) {
        const float *restrict part = row + i * S;
        int64_t n = width - i * S;
        if (n <= 0) break;
        if (n > S) n = S;
        for (int64_t c = 0; c < n; ++c)
            block_max[c] = part[c] > block_max[c] ? part[c] : block_max[c];
    }
}

/* The maxima of 16 groups of blocks (c, c + 16, ...): 16 distinct scores of the row. */
static void group_maxima(const float *restrict block_max, int64_t S, float *restrict group_max) {
    for (int c = 0; c < 16; ++c) group_max[c] = block_max[c];
    for (int64_t i = 16; i + 16 <= S; i += 16)
        for (int c = 0; c < 16; ++c)
            group_max[c] = block_max[i + c] > group_max[c] ? block_max[i + c] : group_max[c];
}

/* The k largest of one row, sorted, into vals/idx; when by_blocks(), the row's block maxima
 * are left in block_max. Returns how many were found (fewer than k only when the row holds
 * NaN). */
static int64_t row_topk(const float *restrict row, int64_t width, int k, Blocks b,
                        float *restrict block_max, float *restrict vals, int64_t *restrict idx) {
    const int64_t S = b.cols;
    int64_t count = 0;
    if (!by_blocks(b, k)) { /* narrow rows or large k: plain scan */
        for (int64_t j = 0; j < width; ++j) insert(vals, idx, &count, k, row[j], j);
        return count;
    }
    block_maxima(row, width, b, block_max);
    float group_max[16];
    group_maxima(block_max, S, group_max);
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
    return count;
}

static int64_t block_room(int64_t width) {
    int64_t s = blocks_of(width).cols;
    return s > 16 ? s : 16;
}

/* Rows [row_begin, row_end) of `scores` (row stride `row_stride`) -> out[r * k + j]. Returns
 * how many threads could not allocate their buffers (0: every row was done). */
int topk_rows_f32(const float *restrict scores, int64_t row_begin, int64_t row_end,
                   int64_t width, int64_t row_stride, int k, int64_t *restrict out,
                   int threads) {
    int failed = 0;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        float *restrict block_max = malloc(sizeof(float) * block_room(width));
        float *restrict vals = malloc(sizeof(float) * k);
        int64_t *restrict idx = malloc(sizeof(int64_t) * k);
        const int ready = block_max && vals && idx;
        if (!ready) {
#pragma omp atomic
            ++failed;
        }
        const Blocks b = blocks_of(width);
#pragma omp for schedule(static)
        for (int64_t r = row_begin; r < row_end; ++r) {
            if (!ready) continue;
            const float *restrict row = scores + r * row_stride;
            row_topk(row, width, k, b, block_max, vals, idx);
            int64_t *restrict dst = out + r * k;
            for (int t = 0; t < k; ++t) dst[t] = idx[t];
        }
        free(block_max);
        free(vals);
        free(idx);
    }
    return failed;
}

/* Cheap score j of a row plus its code's offset (none: no offsets). */
static inline float cheap_at(const uint16_t *restrict src, const float *restrict off, int64_t j) {
    return off ? bf16_value(src[j]) + off[j] : bf16_value(src[j]);
}

/* A row of cheap scores plus offsets into `row` (-inf marks a code left out of the search; no
 * score is +inf or NaN where the row's bound is finite: see row_bound). */
static void cheap_row(const uint16_t *restrict src, const float *restrict off, int64_t width,
                      float *restrict row) {
    for (int64_t j = 0; j < width; ++j) row[j] = cheap_at(src, off, j);
}

/* The block maxima (as block_maxima) of a row of cheap scores plus offsets, read in place
 * (no score is +inf or NaN where the row's bound is finite: see row_bound). The loops with and
 * without offsets are written apart so that each vectorises. */
static void cheap_block_maxima(const uint16_t *restrict src, const float *restrict off,
                               int64_t width, Blocks b, float *restrict block_max) {
    const int64_t S = b.cols;
    for (int64_t c = 0; c < S; ++c) block_max[c] = -INFINITY;
    for (int64_t i = 0; i < b.rows; ++i) {
        const uint16_t *restrict part = src + i * S;
        int64_t n = width - i * S;
        if (n <= 0) break;
        if (n > S) n = S;
        if (off) {
            const float *restrict part_off = off + i * S;
            for (int64_t c = 0; c < n; ++c) {
                const float v = bf16_value(part[c]) + part_off[c];
                block_max[c] = v > block_max[c] ? v : block_max[c];
            }
        } else {
            for (int64_t c = 0; c < n; ++c) {
                const float v = bf16_value(part[c]);
                block_max[c] = v > block_max[c] ? v : block_max[c];
            }
        }
    }
}

/* The k-th largest (k <= 16) of the maxima of 16 groups of blocks (c, c + 16, ...): at least k
 * scores of the row reach it, since the groups' maxima are distinct scores. */
static float kth_group_maximum(const float *restrict block_max, int64_t S, int k) {
    float group_max[16];
    group_maxima(block_max, S, group_max);
    /* k steps of moving the largest of the rest forward (maxima are never NaN) */
    for (int t = 0; t < k; ++t) {
        int best = t;
        for (int q = t + 1; q < 16; ++q) best = group_max[q] > group_max[best] ? q : best;
        const float swap = group_max[t];
        group_max[t] = group_max[best];
        group_max[best] = swap;
    }
    return group_max[k - 1];
}

/* A row's absolute error bound: b0 |x~| + b1 |x~ - x| + b2 (norms summed in double, where the
 * squares of floats are exact), widened a little; the row copied to double into xd.
 *
 * +inf (the row is searched in full) unless |x~| b1 (1 + 2^-7) <= 2^126. b1 is the group's
 * largest |m|; where the bound is finite, so is every code's bfloat16 copy m~ (b0 grows
 * with the largest |m~|), and then |m~| <= (1 + 2^-8) |m| up to values below float32's normal range.
 * So every product and partial sum of a cheap score stays below 2^126 (1 + gamma_d), far from
 * float32's and bfloat16's largest value (about 2^128), and a finite offset (euclidean:
 * -|m|^2 / 2 <= 0) cannot make it +inf: no cheap score of the row is +inf or NaN, and the
 * scans need not test each score. This needs the caller's test that the bound is finite, and
 * finite codes: codes holding NaN never reach the kernel (GroupTile.narrows). */
static double row_bound(const float *restrict xr, const uint16_t *restrict xc, int64_t dim,
                        const double *restrict coef, double *restrict xd) {
    double size[8] = {0}, rounding[8] = {0}; /* independent sums: no stalls */
    for (int64_t i = 0; i < dim; ++i) {
        xd[i] = (double)xr[i];
        const double cheap_value = (double)bf16_value(xc[i]), error = cheap_value - xd[i];
        size[i % 8] += cheap_value * cheap_value;
        rounding[i % 8] += error * error;
    }
    for (int p = 1; p < 8; ++p) {
        size[0] += size[p];
        rounding[0] += rounding[p];
    }
    const double cheap_size = sqrt(size[0]);
    if (!(cheap_size * coef[1] * (1.0 + 0x1p-7) <= 0x1p126)) return INFINITY;
    return (coef[0] * cheap_size + coef[1] * sqrt(rounding[0]) + coef[2]) * (1.0 + 0x1p-30);
}

/* The lowest cheap score a candidate may have when the k-th largest cheap score is kth:
 * v + a + rel |v| >= kth - a - rel |kth|, solved for v (the left side grows with v), widened by
 * far more than double rounding, then rounded down to float. It grows with kth. */
static float candidate_threshold(double kth, double absolute, double relative) {
    const double reach = kth - 2.0 * absolute - relative * fabs(kth);
    double lowest = reach >= 0 ? reach / (1.0 + relative) : reach / (1.0 - relative);
    lowest -= 0x1p-40 * (fabs(lowest) + fabs(kth));
    float threshold = (float)lowest;
    if ((double)threshold > lowest) threshold = nextafterf(threshold, -INFINITY);
    return threshold;
}

/* The candidates of a row in one pass over its cheap scores, read in place: every score that
 * reaches the threshold of a lower bound on the k-th largest (the k-th of the groups' maxima) is
 * kept, then those below the threshold of the k-th largest kept are dropped. Returns how many
 * candidates are left in candidates[] (at most `room` kept; more, or a case the bound does not
 * settle here, returns -1: the caller takes the two-pass way). The row's bound is finite. */
static int one_pass_candidates(const uint16_t *restrict src, const float *restrict off,
                               int64_t width, int k, Blocks b, double absolute,
                               double relative, float *restrict block_max,
                               float *restrict kept, int64_t *restrict candidates, int room) {
    const int64_t S = b.cols;
    cheap_block_maxima(src, off, width, b, block_max);
    const float lower = kth_group_maximum(block_max, S, k);
    if (!isfinite(lower)) return -1;
    const float first = candidate_threshold((double)lower, absolute, relative);
    if (!(first > -INFINITY)) return -1;
    int n = 0;
    for (int64_t c = 0; c < S; ++c) {
        if (!(block_max[c] >= first)) continue;
        for (int64_t j = c; j < width; j += S) {
            const float v = cheap_at(src, off, j);
            if (v >= first) {
                if (n == room) return -1;
                kept[n] = v;
                candidates[n++] = j;
            }
        }
    }
    if (n < k) return -1; /* cannot happen with a sound bound; never read what is not there */
    /* the k-th largest kept score: k passes of selecting the largest of the rest */
    float *restrict order = kept + room;
    memcpy(order, kept, sizeof(float) * (size_t)n);
    for (int t = 0; t < k; ++t) {
        int best = t;
        for (int q = t + 1; q < n; ++q) best = order[q] > order[best] ? q : best;
        const float swap = order[t];
        order[t] = order[best];
        order[best] = swap;
    }
    const double kth = (double)order[k - 1];
    if (!isfinite(kth)) return -1;
    const float threshold = candidate_threshold(kth, absolute, relative);
    if (!(threshold >= first)) return -1; /* the bound's arithmetic did not keep its order */
    int left = 0;
    for (int q = 0; q < n; ++q)
        if (kept[q] >= threshold) candidates[left++] = candidates[q];
    return left;
}

/* The candidates of a row in two passes over it (any width, k, and the cases the one pass
 * leaves): the row's cheap scores, its top k, then every score reaching the threshold. Returns
 * how many candidates there are (at most `capacity` written), or -1 when the row is left for a
 * full search. */
static int two_pass_candidates(const uint16_t *restrict src, const float *restrict off,
                               int64_t width, int k, Blocks b, double absolute,
                               double relative, float *restrict block_max, float *restrict row,
                               float *restrict vals, int64_t *restrict idx,
                               int64_t *restrict candidates, int capacity) {
    cheap_row(src, off, width, row);
    if (row_topk(row, width, k, b, block_max, vals, idx) < k || !isfinite(vals[k - 1])) return -1;
    const float threshold = candidate_threshold((double)vals[k - 1], absolute, relative);
    if (!(threshold > -INFINITY)) return -1; /* -inf would admit the codes left out */
    int n = 0;
    for (int64_t c = 0; c < (by_blocks(b, k) ? b.cols : 1); ++c) {
        if (by_blocks(b, k) && !(block_max[c] >= threshold)) continue;
        const int64_t step = by_blocks(b, k) ? b.cols : 1;
        for (int64_t j = c; j < width; j += step) {
            if (row[j] >= threshold) {
                if (n < capacity) candidates[n] = j;
                ++n;
            }
        }
    }
    return n;
}

/* Exact top-k of the rows of a (groups x tokens) tile from cheap bfloat16 scores.
 *
 * cheap[r * width + j] plus the code's offset approximates the score of row r (group
 * r / tokens, token r % tokens) and code j within a + relative * |itself|, where for the row's
 * input x, its bfloat16 copy x~ and its group's coefficients c = bound[3 g .. 3 g + 2],
 * a = c[0] |x~| + c[1] |x~ - x| + c[2]. The k-th largest approximation, less its bound, is a
 * lower bound on the k-th largest score, so every code whose approximation plus its bound
 * reaches it is a candidate, and the k best codes are always among the candidates. The
 * candidates are scored again exactly (float products summed in double, plus the offset) and
 * the k best kept, ties to the lower index. A row with more than `capacity` candidates, an
 * input so large against its codes that a cheap score could overflow (see row_bound), fewer
 * than k codes not left out (cheap score -inf; a score that overflows to -inf in float32
 * counts as left out, as in the float32 search), a bound that is not finite, or exact scores
 * of NaN gets fallback[r] = 1 and no ids: the caller searches it in full. Returns how many
 * threads could not allocate their buffers (0: every row was done). */
int screened_topk_bf16(const uint16_t *restrict cheap, const float *restrict x,
                        const uint16_t *restrict cheap_x, int64_t x_group_stride,
                        int64_t x_token_stride, const float *restrict matrix,
                        const float *restrict offset, const double *restrict bound,
                        double relative, int64_t groups, int64_t tokens,
                        int64_t width, int64_t dim, int k, int capacity,
                        int64_t *restrict out, uint8_t *restrict fallback, int threads) {
    int failed = 0;
    const Blocks b = blocks_of(width);
    const int room = by_blocks(b, k) ? 4 * capacity : 0; /* scores the one pass may keep */
    const int listed = room > capacity ? room : capacity;
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    {
        float *restrict block_max = malloc(sizeof(float) * block_room(width));
        float *restrict row = malloc(sizeof(float) * width);
        float *restrict vals = malloc(sizeof(float) * k);
        int64_t *restrict idx = malloc(sizeof(int64_t) * k);
        double *restrict exact = malloc(sizeof(double) * k);
        int64_t *restrict best = malloc(sizeof(int64_t) * k);
        int64_t *restrict candidates = malloc(sizeof(int64_t) * listed);
        float *restrict kept = malloc(sizeof(float) * (2 * room + 1));
        double *restrict xd = malloc(sizeof(double) * dim);
        const int ready =
            block_max && row && vals && idx && exact && best && candidates && kept && xd;
        if (!ready) {
#pragma omp atomic
            ++failed;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < groups * tokens; ++r) {
            if (!ready) continue;
            const int64_t g = r / tokens, t = r % tokens;
            const uint16_t *restrict src = cheap + r * width;
            const float *restrict off = offset ? offset + g * width : NULL;
            fallback[r] = 1;
            const int64_t at = g * x_group_stride + t * x_token_stride;
            const double absolute = row_bound(x + at, cheap_x + at, dim, bound + 3 * g, xd);
            /* a bound that is not finite (codes holding inf, scores near float32's limits)
             * narrows nothing */
            if (!isfinite(absolute)) continue;
            int n = -1;
            if (by_blocks(b, k))
                n = one_pass_candidates(src, off, width, k, b, absolute, relative, block_max,
                                        kept, candidates, room);
            if (n < 0)
                n = two_pass_candidates(src, off, width, k, b, absolute, relative, block_max,
                                        row, vals, idx, candidates, capacity);
            if (n < 0 || n > capacity) continue;
            const float *restrict codes = matrix + g * width * dim;
            for (int c = 0; c < n; ++c) /* the candidates' codes are scattered: fetch them all */
                for (int64_t i = 0; i < dim; i += 16)
                    PREFETCH(codes + candidates[c] * dim + i);
            int64_t count = 0;
            int unordered = 0;
            for (int c = 0; c < n; ++c) {
                const int64_t j = candidates[c];
                const float *restrict code = codes + j * dim;
                double part[8] = {0, 0, 0, 0, 0, 0, 0, 0}; /* independent sums: no stalls */
                int64_t i = 0;
                for (; i + 8 <= dim; i += 8)
                    for (int p = 0; p < 8; ++p) part[p] += xd[i + p] * (double)code[i + p];
                double s = off ? (double)off[j] : 0.0;
                for (; i < dim; ++i) s += xd[i] * (double)code[i];
                for (int p = 0; p < 8; ++p) s += part[p];
                unordered |= isnan(s);
                insert_exact(exact, best, &count, k, s, j);
            }
            if (unordered) continue; /* exact scores of NaN: search the row in full */
            int64_t *restrict dst = out + r * k;
            for (int c = 0; c < k; ++c) dst[c] = best[c];
            fallback[r] = 0;
        }
        free(block_max);
        free(row);
        free(vals);
        free(idx);
        free(exact);
        free(best);
        free(candidates);
        free(kept);
        free(xd);
    }
    return failed;
}

/* For each group of `codes` codes of `dim` values: the largest |m|, |m~| and |m~ - m| over its
 * codes, where m~ is the bfloat16 copy of code m, and the mean |m| (norms summed in double)
 * -> out[4 g .. 4 g + 3]. */
void code_sizes(const float *restrict matrix, const uint16_t *restrict cheap, int64_t groups,
                int64_t codes, int64_t dim, double *restrict out, int threads) {
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static)
    for (int64_t g = 0; g < groups; ++g) {
        double largest[3] = {0.0, 0.0, 0.0}, total = 0.0;
        for (int64_t j = 0; j < codes; ++j) {
            const float *restrict m = matrix + (g * codes + j) * dim;
            const uint16_t *restrict mc = cheap + (g * codes + j) * dim;
            double sums[3] = {0.0, 0.0, 0.0};
            for (int64_t i = 0; i < dim; ++i) {
                const double exact = (double)m[i], rounded = (double)bf16_value(mc[i]);
                sums[0] += exact * exact;
                sums[1] += rounded * rounded;
                sums[2] += (rounded - exact) * (rounded - exact);
            }
            for (int s = 0; s < 3; ++s) largest[s] = sums[s] > largest[s] ? sums[s] : largest[s];
            total += sqrt(sums[0]);
        }
        for (int s = 0; s < 3; ++s) out[4 * g + s] = sqrt(largest[s]);
        out[4 * g + 3] = codes ? total / (double)codes : 0.0;
    }
}
