/* W8A8 linear (fxc.int8_linear) on AVX2: int8 activations times int8 weights with exact int32 accumulators,
   on CPUs without AVX-512 VNNI or AMX, where torch._int_mm has no fast kernel.

Read by codegen/torch/native/build.py (compiled with -mavx2 -mfma -mf16c into the same library as
avx2_weight_only.c) and called through codegen/torch/native/avx2.py. Reads its arguments, writes its outputs only.

fxc_quantize_rows quantizes float32 rows as fxc/ir/qformat.py does, bit for bit: per token (scale =
max|x| / 127.5 in float32, 1 for an all-zero row) or with a given per-tensor scale, q = round-half-even(x / scale)
clamped to [-128, 127] (IEEE float32 division, as torch's). The integers are stored as int16, zero padded to a
multiple of 16 columns, ready for _mm256_madd_epi16. A row holding inf or nan is counted and left as zeros (the
caller sends it through the op's float path).

fxc_int8_gemm: acc[m][n] = sum_k q[m][k] w[n][k] exactly in int32 (_mm256_madd_epi16 multiplies int16 pairs
and adds each pair into int32: |q w| <= 128 * 128, so K < 131072 columns never overflow; no saturating
_mm256_maddubs_epi16, so a weight of -128 is exact too), then y = (acc * ws[n]) * sx[m] in float32, the
reference's order and rounding. OpenMP threads split the output channels in panels of up to PANEL; 3 rows x 3
channels of accumulators share each load. Decode (at most 3 rows) reads the weights where they are stored
(int8 [N][K], sign-extended to int16 in registers, the channels two blocks ahead prefetched); more rows convert
each panel to int16 once into a buffer of the thread. Compiled with -fno-tree-pre: with it gcc 12 copies and
spills the integer accumulators in the inner loop.
*/
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PANEL 96 /* output channels a thread takes at a time */
#define AHEAD 2  /* channel blocks prefetched ahead when the weights are read once */
#define ROWS 3   /* rows x channels of int32 accumulators: 9, plus 3 weights, 1 row and 1 product: 14 registers */
#define COLS 3
/* CASE(r, c) with the constants r, c equal to R <= 3, C <= 3: each combination compiles to its own loop. */
#define ONE_ROW(r, C, CASE) switch (C) { case 1: CASE(r, 1); break; case 2: CASE(r, 2); break; default: CASE(r, 3); }
#define DISPATCH(R, C, CASE) \
    switch (R) { case 1: ONE_ROW(1, C, CASE); break; case 2: ONE_ROW(2, C, CASE); break; default: ONE_ROW(3, C, CASE); }

static inline int32_t hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* x [M][K] float32 -> q [M][Kp] int16 and sx [M]: per token when static_scale is NULL, else *static_scale for
   every row. Returns how many rows hold inf or nan (their q is zero and their sx 1). */
int64_t fxc_quantize_rows(const float *x, int64_t M, int64_t K, int64_t Kp, const float *static_scale, int16_t *q,
                          float *sx, int threads) {
    int64_t nonfinite = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : nonfinite) if (threads > 1)
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        int16_t *out = q + m * Kp;
        __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        const __m256 sign = _mm256_set1_ps(-0.0f), inf = _mm256_set1_ps(INFINITY);
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(row + k));
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, inf, _CMP_NLT_UQ)); /* inf, or nan (unordered) */
            amax = _mm256_max_ps(amax, a);
        }
        float lanes[8], top = 0.0f;
        int finite = _mm256_movemask_ps(bad) == 0;
        _mm256_storeu_ps(lanes, amax);
        for (int i = 0; i < 8; i++) top = lanes[i] > top ? lanes[i] : top;
        for (; k < K; k++) {
            float a = fabsf(row[k]);
            finite &= a < INFINITY; /* false for inf and nan */
            top = a > top ? a : top;
        }
        if (!finite) {
            nonfinite += 1;
            memset(out, 0, (size_t)Kp * sizeof(int16_t));
            sx[m] = 1.0f;
            continue;
        }
        float scale = static_scale ? *static_scale : (top > 0.0f ? top / 127.5f : 1.0f);
        sx[m] = scale;
        const __m256 s = _mm256_set1_ps(scale), low = _mm256_set1_ps(-128.0f), high = _mm256_set1_ps(127.0f);
        for (k = 0; k + 16 <= K; k += 16) {
            __m256 a = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(row + k), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256 b = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(row + k + 8), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256i ia = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(a, low), high));
            __m256i ib = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(b, low), high));
            __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(ia, ib), _MM_SHUFFLE(3, 1, 2, 0));
            _mm256_storeu_si256((__m256i *)(out + k), packed);
        }
        for (; k < K; k++) {
            float v = nearbyintf(row[k] / scale);
            out[k] = (int16_t)(v < -128.0f ? -128.0f : (v > 127.0f ? 127.0f : v));
        }
        for (; k < Kp; k++) out[k] = 0;
    }
    return nonfinite;
}

/* 16 int8 weights sign-extended to int16. */
static inline __m256i weights16(const int8_t *p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)); }

/* out[r][c] = q[r] . w[c] for R rows and C channels (the blocks at the edges; full ones: the 3 x 3 below). */
static inline __attribute__((always_inline)) void int8_block(const int16_t *q, int64_t Kp, int R, const int8_t *w,
                                                              int64_t K, int C, int32_t out[3][3]) {
    __m256i acc[3][3];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_si256();
    int64_t whole = K / 16 * 16;
    for (int64_t k = 0; k < whole; k += 16) {
        __m256i wv[3];
        for (int c = 0; c < C; c++) wv[c] = weights16(w + c * K + k);
        for (int r = 0; r < R; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(q + r * Kp + k));
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_add_epi32(acc[r][c], _mm256_madd_epi16(xv, wv[c]));
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            int32_t t = hsum_epi32(acc[r][c]);
            for (int64_t k = whole; k < K; k++) t += (int32_t)q[r * Kp + k] * (int32_t)w[c * K + k];
            out[r][c] = t;
        }
}

/* The 3 x 3 block (every full block) with named accumulators: gcc keeps arrays of integer accumulators in
   registers only with copies and spills. The tail: sum_k past the whole blocks of 16, in int32. */
static inline int32_t int8_tail(const int16_t *q, const int8_t *w, int64_t whole, int64_t K) {
    int32_t t = 0;
    for (int64_t k = whole; k < K; k++) t += (int32_t)q[k] * (int32_t)w[k];
    return t;
}

#define MADD(acc, x, w) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
/* W(c, k): the 16 weights of channel c at column k as int16, from int8 rows (STEP K, converted in registers) or
   from an int16 panel (STEP Kp, converted once per call; no tail: the panel and q are zero padded). */
#define BLOCK_3X3(name, W, STEP, TAIL)                                                                          \
    static void name(const int16_t *q, int64_t Kp, const void *weights, int64_t K, int32_t out[3][3]) {         \
        __m256i a00 = _mm256_setzero_si256(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00, a20 = a00, \
                a21 = a00, a22 = a00;                                                                         \
        int64_t whole = TAIL ? K / 16 * 16 : Kp, step = STEP;                                                  \
        for (int64_t k = 0; k < whole; k += 16) {                                                              \
            __m256i w0 = W(0, k), w1 = W(1, k), w2 = W(2, k);                                                  \
            __m256i x = _mm256_loadu_si256((const __m256i *)(q + k));                                          \
            MADD(a00, x, w0);                                                                                  \
            MADD(a01, x, w1);                                                                                  \
            MADD(a02, x, w2);                                                                                  \
            x = _mm256_loadu_si256((const __m256i *)(q + Kp + k));                                             \
            MADD(a10, x, w0);                                                                                  \
            MADD(a11, x, w1);                                                                                  \
            MADD(a12, x, w2);                                                                                  \
            x = _mm256_loadu_si256((const __m256i *)(q + 2 * Kp + k));                                         \
            MADD(a20, x, w0);                                                                                  \
            MADD(a21, x, w1);                                                                                  \
            MADD(a22, x, w2);                                                                                  \
        }                                                                                                      \
        __m256i acc[3][3] = {{a00, a01, a02}, {a10, a11, a12}, {a20, a21, a22}};                               \
        for (int r = 0; r < 3; r++)                                                                            \
            for (int c = 0; c < 3; c++)                                                                        \
                out[r][c] = hsum_epi32(acc[r][c]) +                                                            \
                            (TAIL ? int8_tail(q + r * Kp, (const int8_t *)weights + c * K, whole, K) : 0);     \
    }
#define FROM_INT8(c, k) weights16((const int8_t *)weights + (c) * step + (k))
#define FROM_PANEL(c, k) _mm256_loadu_si256((const __m256i *)((const int16_t *)weights + (c) * step + (k)))
BLOCK_3X3(int8_block_3x3, FROM_INT8, K, 1)
BLOCK_3X3(panel_block_3x3, FROM_PANEL, Kp, 0)
#undef FROM_PANEL
#undef FROM_INT8
#undef BLOCK_3X3
#undef MADD

/* Channels n0 .. n0+count-1 of w as int16 [count][Kp], zero padded. */
static void widen_panel(const int8_t *w, int64_t K, int64_t Kp, int64_t n0, int64_t count, int16_t *panel) {
    for (int64_t c = 0; c < count; c++) {
        const int8_t *row = w + (n0 + c) * K;
        int16_t *out = panel + c * Kp;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) _mm256_storeu_si256((__m256i *)(out + k), weights16(row + k));
        for (; k < Kp; k++) out[k] = k < K ? row[k] : 0;
    }
}

/* y [M][N] = (acc * ws[n]) * sx[m * sx_stride] in float32, acc the exact int32 q [M][Kp] @ w [N][K]^T. Threads
   take panels of up to PANEL channels (fewer when a thread would idle); inside one, every block of 3 rows (in the first-level cache) meets the panel's
   channels 3 at a time. One block of rows (decode) reads the weights where they are stored, prefetching the
   channels two blocks ahead; more rows convert the panel to int16 once (a buffer of this thread). */
void fxc_int8_gemm(const int16_t *q, int64_t M, int64_t Kp, const int8_t *w, int64_t N, int64_t K, const float *ws,
                   const float *sx, int64_t sx_stride, float *y, int threads) {
    threads = threads < 1 ? 1 : threads;
    int64_t even = (N + threads - 1) / threads, size = (even + COLS - 1) / COLS * COLS; /* every thread gets one */
    size = size < PANEL ? size : PANEL;
    int64_t panels = (N + size - 1) / size;
    int widen = M > ROWS;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int16_t *panel = widen ? aligned_alloc(64, (size_t)size * Kp * sizeof(int16_t)) : NULL;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++) {
            int64_t p0 = p * size, count = N - p0 < size ? N - p0 : size;
            if (panel) widen_panel(w, K, Kp, p0, count, panel);
            for (int64_t m0 = 0; m0 < M; m0 += ROWS) {
                int R = M - m0 < ROWS ? (int)(M - m0) : ROWS;
                for (int64_t n0 = p0; n0 < p0 + count; n0 += COLS) {
                    int C = p0 + count - n0 < COLS ? (int)(p0 + count - n0) : COLS;
                    if (m0 == 0 && !panel) { /* the weights are read once, from memory: fetch ahead */
                        const char *ahead = (const char *)(w + (n0 + COLS * AHEAD) * K);
                        for (int64_t byte = 0; byte < COLS * K; byte += 64) _mm_prefetch(ahead + byte, _MM_HINT_T0);
                    }
                    int32_t out[3][3];
#define INT8_CASE(r, c) int8_block(q + m0 * Kp, Kp, r, w + n0 * K, K, c, out)
                    if (R == 3 && C == 3 && panel)
                        panel_block_3x3(q + m0 * Kp, Kp, panel + (n0 - p0) * Kp, K, out);
                    else if (R == 3 && C == 3)
                        int8_block_3x3(q + m0 * Kp, Kp, w + n0 * K, K, out);
                    else
                        DISPATCH(R, C, INT8_CASE);
#undef INT8_CASE
                    for (int r = 0; r < R; r++)
                        for (int c = 0; c < C; c++) {
                            float v = (float)out[r][c] * ws[n0 + c];
                            y[(m0 + r) * N + n0 + c] = v * sx[(m0 + r) * sx_stride];
                        }
                }
            }
        }
        free(panel);
    }
}
