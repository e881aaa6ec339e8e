/* Weight-only int8/int4 linear with float32 activations on AVX2 + FMA: y = x @ W^T + bias, W the weight of
   fxc/ir/qformat.py, W[n][k] = (q[n][k] - zero[n][g]) * scale[n][g] with g = k / (K / groups).

Read by codegen/torch/native/build.py (compiled with -mavx2 -mfma -mf16c, never -march=native, so the library
runs on any AVX2 CPU) and called through codegen/torch/native/avx2.py. Reads its arguments, writes y only.

fxc_wo_linear copies x once (K rounded up to 16 columns, zero padded; for int4 each block of 16 columns
reordered as its 8 even columns then its 8 odd ones, the order of the low and high nibbles of 8 packed bytes),
then OpenMP threads split the output channels, by one of three loops chosen by the number of rows M:
  M <= gemv_rows (decode)    every weight is read once where it is stored and converted in registers (int8:
      sign-extend, convert; int4: both nibbles of a byte sign-extended by shifts), the zero point subtracted
      in int32 (exact), 4 channels at a time with the channel block two ahead prefetched (a row of a small
      weight is too short for the hardware prefetcher to find); each group's float32 sum is scaled once.
  M < outer_rows             a panel of up to PANEL channels (fewer when threads would idle) is dequantized into a float32 buffer of this thread
      (exactly the reference's (q - z) * s), then 4 rows x 3 channels of FMA accumulators sweep it.
  otherwise (prefill)        the same panels, and x copied as blocks of 16 rows stored column by column: an
      outer-product kernel (16 rows x 6 channels of accumulators, each panel value broadcast once) over
      blocks of KC columns, so the block of x and the panel rows it meets stay in the first-level cache.
The sums are float32 FMAs: the result differs from the reference's float32 GEMM by float32 rounding only.
A row of x whose max |x| is 2^64 or more is scaled by a power of two 2^-e first (exact, tiny elements aside)
and its outputs by 2^e after, so no product overflows where the reference's do not; a row holding inf or nan
is used as it is (inf * 0 = nan, as in the reference).
*/
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PANEL 48         /* output channels of a dequantized float32 panel */
#define KC 256           /* columns of one block of the outer-product loop */
#define AHEAD 2          /* channel blocks prefetched ahead by the decode loop */
#define HUGE_ROW 0x1p64f /* rows with max |x| at or above this are scaled down by a power of two */
#define INLINE static inline __attribute__((always_inline))

static inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Channels per panel: at most `most`, a multiple of `step`, and few enough that every thread gets one. */
static inline int64_t panel_size(int64_t N, int64_t most, int64_t step, int threads) {
    int64_t even = round_up((N + threads - 1) / threads, step);
    return even < most ? even : most;
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The stored integer of weight row `row` at column k (int4: the nibble of byte k / 2, low first). */
static inline int32_t weight_at(const uint8_t *row, int bits, int64_t k) {
    if (bits == 8) return (int8_t)row[k];
    int8_t byte = (int8_t)row[k / 2];
    return k % 2 ? byte >> 4 : (int8_t)(byte << 4) >> 4;
}

/* The column of x that position k of a packed row holds (int4: blocks of 16 reordered, the tail as is). */
static inline int64_t source_column(int64_t k, int64_t K, int bits) {
    if (bits == 8 || k >= K / 16 * 16) return k;
    int64_t i = k % 16;
    return k - i + (i < 8 ? 2 * i : 2 * (i - 8) + 1);
}

/* The power-of-two factor a row of x is multiplied by (1 unless its max |x| is finite and >= 2^64); sets *after to
   the inverse, which its outputs take. */
static float row_factor(const float *row, int64_t K, float *after) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 top = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) top = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(row + k)), top); /* nan: top */
    float lanes[8], amax = 0.0f;
    _mm256_storeu_ps(lanes, top);
    for (int i = 0; i < 8; i++) amax = fmaxf(amax, lanes[i]);
    for (; k < K; k++) amax = fmaxf(amax, fabsf(row[k])); /* fmaxf skips nan */
    *after = 1.0f;
    if (!(amax >= HUGE_ROW && amax <= 0x1.fffffep127f)) return 1.0f; /* not huge, or inf */
    int e = 0;
    frexpf(amax, &e); /* amax = f 2^e, f in [0.5, 1): amax 2^(64-e) < 2^64 */
    *after = ldexpf(1.0f, e - 64);
    return ldexpf(1.0f, 64 - e);
}

/* x [M][K] -> xp [M][Kp] in packed column order (row major), factor[m] = the 2^e its outputs take. */
static void pack_rows(const float *x, int64_t M, int64_t K, int64_t Kp, int bits, float *xp, float *factor,
                      int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t m = 0; m < M; m++) {
        const float *row = x + m * K;
        float *out = xp + m * Kp;
        __m256 down = _mm256_set1_ps(row_factor(row, K, &factor[m]));
        int64_t k = 0;
        if (bits == 4)
            for (; k + 16 <= K; k += 16) { /* even columns, then odd ones */
                __m256 a = _mm256_loadu_ps(row + k), b = _mm256_loadu_ps(row + k + 8);
                __m256 even = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)); /* a0 a2 b0 b2 | a4 a6 b4 b6 */
                __m256 odd = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
                even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0)));
                odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), _MM_SHUFFLE(3, 1, 2, 0)));
                _mm256_storeu_ps(out + k, _mm256_mul_ps(even, down));
                _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(odd, down));
            }
        for (; k + 8 <= K; k += 8) _mm256_storeu_ps(out + k, _mm256_mul_ps(_mm256_loadu_ps(row + k), down));
        for (; k < Kp; k++) out[k] = k < K ? row[k] * _mm256_cvtss_f32(down) : 0.0f;
    }
}

/* 8 x 8 floats transposed in registers: r[i] holds column i of the 8 rows after. */
static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* The packed position of column k (the inverse of source_column). */
static inline int64_t packed_column(int64_t k, int64_t K, int bits) {
    if (bits == 8 || k >= K / 16 * 16) return k;
    int64_t i = k % 16;
    return k - i + (i % 2 ? 8 + i / 2 : i / 2);
}

/* x [M][K] -> xt [Mp / 16][Kp][16]: blocks of 16 rows, column by column in packed order (rows past M and
   columns past K are zero); factor as pack_rows. */
static void pack_columns(const float *x, int64_t M, int64_t K, int64_t Mp, int64_t Kp, int bits, float *xt,
                         float *factor, int threads) {
    memset(xt, 0, (size_t)Mp * Kp * sizeof(float));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t h = 0; h < Mp / 8; h++) { /* half blocks of 8 rows */
        float down[8];
        for (int i = 0; i < 8; i++) down[i] = h * 8 + i < M ? row_factor(x + (h * 8 + i) * K, K, &factor[h * 8 + i]) : 0.0f;
        float *block = xt + (h / 2) * Kp * 16 + (h % 2) * 8;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = h * 8 + i < M ? _mm256_mul_ps(_mm256_loadu_ps(x + (h * 8 + i) * K + k), _mm256_set1_ps(down[i]))
                                     : _mm256_setzero_ps();
            transpose8(r);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(block + packed_column(k + j, K, bits) * 16, r[j]);
        }
        for (; k < K; k++)
            for (int i = 0; i < 8 && h * 8 + i < M; i++)
                block[packed_column(k, K, bits) * 16 + i] = x[(h * 8 + i) * K + k] * down[i];
    }
}

/* 8 int8 weights -> float32 (q - z). */
INLINE __m256 int8_weights(const uint8_t *p, __m256i z, int has_zero) {
    __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtepi32_ps(has_zero ? _mm256_sub_epi32(q, z) : q);
}

/* 8 packed int4 bytes -> (q - z) of their 8 low nibbles (even columns) and 8 high nibbles (odd columns).
   Without a zero point the nibbles are sign-extended by shifts of the sign-extended bytes (low: up 28, down 28;
   high: down 4). With one the bytes are zero-extended and xor-ed with 0x88, so each nibble holds q + 8 in
   0 .. 15 (a two's complement nibble flipped at bit 3): one mask and one shift split them, and z8 = z + 8 is
   subtracted in int32 (exact). */
INLINE void int4_weights(const uint8_t *p, __m256i z8, int has_zero, __m256 *even, __m256 *odd) {
    __m128i bytes = _mm_loadl_epi64((const __m128i *)p);
    if (!has_zero) {
        __m256i b = _mm256_cvtepi8_epi32(bytes);
        *even = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(b, 28), 28));
        *odd = _mm256_cvtepi32_ps(_mm256_srai_epi32(b, 4));
        return;
    }
    __m256i b = _mm256_xor_si256(_mm256_cvtepu8_epi32(bytes), _mm256_set1_epi32(0x88));
    __m256i lo = _mm256_and_si256(b, _mm256_set1_epi32(15)), hi = _mm256_srli_epi32(b, 4);
    *even = _mm256_cvtepi32_ps(_mm256_sub_epi32(lo, z8));
    *odd = _mm256_cvtepi32_ps(_mm256_sub_epi32(hi, z8));
}

/* ---- decode: one row, weights converted in registers ---------------------------------------------------- */

/* out[c] = x . W[n0 + c] for C channels: per group sum_k x (q - z) in float32, times the group's scale (with one
   group the caller scales); vector part over whole blocks of 16 columns, scalar tail. Two accumulators per
   channel (int8: alternate blocks of 8; int4: even and odd columns), so 8 FMA chains hide the FMA latency. */
INLINE void gemv_block(const float *x, const uint8_t *w, int bits, int64_t K, int64_t n0, int C, int64_t groups,
                       int grouped, int has_zero, const float *scale, const float *zero, float out[4]) {
    int64_t stride = bits == 8 ? K : K / 2, group = K / groups;
    int64_t whole = group / 16 * 16;
    __m256 total[4];
    float tail[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int c = 0; c < C; c++) total[c] = _mm256_setzero_ps();
    for (int64_t g = 0; g < groups; g++) {
        __m256 acc0[4], acc1[4];
        __m256i zv[4];
        const uint8_t *row[4];
        int64_t k0 = g * group;
        for (int c = 0; c < C; c++) {
            acc0[c] = _mm256_setzero_ps();
            acc1[c] = _mm256_setzero_ps();
            zv[c] = _mm256_set1_epi32(has_zero ? (int32_t)zero[(n0 + c) * groups + g] + (bits == 4 ? 8 : 0) : 0);
            row[c] = w + (n0 + c) * stride + (bits == 8 ? k0 : k0 / 2);
        }
        const float *xk = x + k0;
        int64_t bytes_per_step = bits == 8 ? 16 : 8;
        for (int64_t k = 0, j = 0; k < whole; k += 16, j += bytes_per_step) {
            __m256 x0 = _mm256_loadu_ps(xk + k), x1 = _mm256_loadu_ps(xk + k + 8);
            for (int c = 0; c < C; c++) {
                __m256 w0, w1;
                if (bits == 8) {
                    w0 = int8_weights(row[c] + j, zv[c], has_zero);
                    w1 = int8_weights(row[c] + j + 8, zv[c], has_zero);
                } else {
                    int4_weights(row[c] + j, zv[c], has_zero, &w0, &w1);
                }
                acc0[c] = _mm256_fmadd_ps(x0, w0, acc0[c]);
                acc1[c] = _mm256_fmadd_ps(x1, w1, acc1[c]);
            }
        }
        for (int c = 0; c < C; c++) {
            float s = scale[(n0 + c) * groups + g], z = has_zero ? zero[(n0 + c) * groups + g] : 0.0f, t = 0.0f;
            for (int64_t k = k0 + whole; k < k0 + group; k++) /* the group's columns past its whole blocks */
                t += x[k] * ((float)weight_at(w + (n0 + c) * stride, bits, k) - z);
            __m256 sum = _mm256_add_ps(acc0[c], acc1[c]);
            if (grouped) {
                total[c] = _mm256_fmadd_ps(sum, _mm256_set1_ps(s), total[c]);
                tail[c] += t * s;
            } else {
                total[c] = sum;
                tail[c] = t;
            }
        }
    }
    for (int c = 0; c < C; c++) out[c] = hsum(total[c]) + tail[c];
}

/* gemv_block with constant bits, grouped, has_zero and C: each combination compiles to its own unrolled loop. */
static void gemv_variant(const float *x, const uint8_t *w, int bits, int64_t K, int64_t n0, int C, int64_t groups,
                         const float *scale, const float *zero, float out[4]) {
#define BLOCK(b, g, z, c) gemv_block(x, w, b, K, n0, c, groups, g, z, scale, zero, out)
#define CHANNELS(b, g, z) switch (C) { case 4: BLOCK(b, g, z, 4); break; case 3: BLOCK(b, g, z, 3); break; \
                                       case 2: BLOCK(b, g, z, 2); break; default: BLOCK(b, g, z, 1); }
#define ZERO(b, g) if (zero) CHANNELS(b, g, 1) else CHANNELS(b, g, 0)
#define GROUPS(b) if (groups > 1) ZERO(b, 1) else ZERO(b, 0)
    if (bits == 8) GROUPS(8) else GROUPS(4)
#undef GROUPS
#undef ZERO
#undef CHANNELS
#undef BLOCK
}

static void gemv(const float *xp, const float *factor, int64_t M, int64_t Kp, const uint8_t *w, int bits, int64_t K,
                 int64_t N, int64_t groups, const float *scale, const float *zero, const float *bias, float *y,
                 int threads) {
    int64_t blocks = (N + 3) / 4, stride = bits == 8 ? K : K / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < blocks; b++) {
        int64_t n0 = b * 4;
        int C = N - n0 < 4 ? (int)(N - n0) : 4;
        const char *ahead = (const char *)(w + (n0 + 4 * AHEAD) * stride); /* prefetch past the end is harmless */
        for (int64_t byte = 0; byte < 4 * stride; byte += 64) _mm_prefetch(ahead + byte, _MM_HINT_T0);
        for (int64_t m = 0; m < M; m++) {
            float out[4];
            gemv_variant(xp + m * Kp, w, bits, K, n0, C, groups, scale, zero, out);
            for (int c = 0; c < C; c++) {
                float v = groups > 1 ? out[c] : out[c] * scale[n0 + c];
                v *= factor[m];
                y[m * N + n0 + c] = bias ? v + bias[n0 + c] : v;
            }
        }
    }
}

/* ---- dequantized float32 panels -------------------------------------------------------------------------- */

/* Channels n0 .. n0+count-1 as float32 (q - z) * s in packed column order, [count][Kp], zero padded. */
static void dequantize_panel(const uint8_t *w, int bits, int64_t K, int64_t Kp, int64_t groups, const float *scale,
                             const float *zero, int64_t n0, int count, float *panel) {
    int64_t stride = bits == 8 ? K : K / 2, group = K / groups, blocks = K / 16 * 16;
    for (int c = 0; c < count; c++) {
        const uint8_t *row = w + (n0 + c) * stride;
        float *out = panel + c * Kp;
        int64_t k = 0;
        for (int64_t g = 0; g < groups; g++) {
            float s = scale[(n0 + c) * groups + g], z = zero ? zero[(n0 + c) * groups + g] : 0.0f;
            __m256 sv = _mm256_set1_ps(s);
            __m256i zv = _mm256_set1_epi32((int32_t)z + (bits == 4 ? 8 : 0)); /* int4_weights takes z + 8 */
            int64_t end = (g + 1) * group;
            if (bits == 8) {
                for (; k + 8 <= end; k += 8) _mm256_storeu_ps(out + k, _mm256_mul_ps(int8_weights(row + k, zv, 1), sv));
            } else {
                for (; k % 16 == 0 && k + 16 <= end && k + 16 <= blocks; k += 16) {
                    __m256 even, odd;
                    int4_weights(row + k / 2, zv, 1, &even, &odd);
                    _mm256_storeu_ps(out + k, _mm256_mul_ps(even, sv));
                    _mm256_storeu_ps(out + k + 8, _mm256_mul_ps(odd, sv));
                }
            }
            for (; k < end; k++) out[k] = ((float)weight_at(row, bits, source_column(k, K, bits)) - z) * s;
        }
        for (k = K; k < Kp; k++) out[k] = 0.0f;
    }
}

/* Few rows: out[r][c] = xp[r] . panel[c] over Kp columns, R rows x C channels of accumulators. */
INLINE void dot_block(const float *xp, int64_t Kp, int R, const float *panel, int C, float out[4][3]) {
    __m256 acc[4][3];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t k = 0; k < Kp; k += 8) {
        __m256 wv[3];
        for (int c = 0; c < C; c++) wv[c] = _mm256_loadu_ps(panel + c * Kp + k);
        for (int r = 0; r < R; r++) {
            __m256 xv = _mm256_loadu_ps(xp + r * Kp + k);
            for (int c = 0; c < C; c++) acc[r][c] = _mm256_fmadd_ps(xv, wv[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) out[r][c] = hsum(acc[r][c]);
}

static void dot_panel(const float *xp, const float *factor, int64_t M, int64_t Kp, const float *panel, int count,
                      int64_t p0, int64_t N, const float *bias, float *y) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        int R = M - m0 < 4 ? (int)(M - m0) : 4;
        for (int c0 = 0; c0 < count; c0 += 3) {
            int C = count - c0 < 3 ? count - c0 : 3;
            float out[4][3];
#define DOT(r, c) dot_block(xp + m0 * Kp, Kp, r, panel + c0 * Kp, c, out)
#define DOT_ROWS(r) switch (C) { case 3: DOT(r, 3); break; case 2: DOT(r, 2); break; default: DOT(r, 1); }
            switch (R) {
            case 1: DOT_ROWS(1); break;
            case 2: DOT_ROWS(2); break;
            case 3: DOT_ROWS(3); break;
            default: DOT_ROWS(4);
            }
#undef DOT_ROWS
#undef DOT
            for (int r = 0; r < R; r++)
                for (int c = 0; c < C; c++) {
                    int64_t n = p0 + c0 + c;
                    float v = out[r][c] * factor[m0 + r];
                    y[(m0 + r) * N + n] = bias ? v + bias[n] : v;
                }
        }
    }
}

/* Prefill: the 16 x C tile at ot (channel c at ot + c * Mp) += xt block [kc][16] times panel rows [C][k0 .. k0+kc). */
INLINE void outer_block(const float *xt, int64_t kc, const float *panel, int64_t Kp, int C, float *ot, int64_t Mp,
                        int first) {
    __m256 acc[6][2];
    for (int c = 0; c < C; c++) {
        acc[c][0] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(ot + c * Mp);
        acc[c][1] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(ot + c * Mp + 8);
    }
    for (int64_t k = 0; k < kc; k++) {
        __m256 x0 = _mm256_loadu_ps(xt + k * 16), x1 = _mm256_loadu_ps(xt + k * 16 + 8);
        for (int c = 0; c < C; c++) {
            __m256 b = _mm256_broadcast_ss(panel + c * Kp + k);
            acc[c][0] = _mm256_fmadd_ps(x0, b, acc[c][0]);
            acc[c][1] = _mm256_fmadd_ps(x1, b, acc[c][1]);
        }
    }
    for (int c = 0; c < C; c++) {
        _mm256_storeu_ps(ot + c * Mp, acc[c][0]);
        _mm256_storeu_ps(ot + c * Mp + 8, acc[c][1]);
    }
}

static void outer_panel(const float *xt, const float *factor, int64_t M, int64_t Mp, int64_t Kp, const float *panel,
                        int count, int64_t p0, int64_t N, const float *bias, float *ot, float *y) {
    for (int64_t k0 = 0; k0 < Kp; k0 += KC) {
        int64_t kc = Kp - k0 < KC ? Kp - k0 : KC;
        for (int64_t b = 0; b < Mp / 16; b++) {
            const float *xb = xt + (b * Kp + k0) * 16;
            for (int c0 = 0; c0 < count; c0 += 6) {
                int C = count - c0 < 6 ? count - c0 : 6;
                const float *pb = panel + c0 * Kp + k0;
                float *ob = ot + c0 * Mp + b * 16;
                switch (C) {
                case 6: outer_block(xb, kc, pb, Kp, 6, ob, Mp, k0 == 0); break;
                case 5: outer_block(xb, kc, pb, Kp, 5, ob, Mp, k0 == 0); break;
                case 4: outer_block(xb, kc, pb, Kp, 4, ob, Mp, k0 == 0); break;
                case 3: outer_block(xb, kc, pb, Kp, 3, ob, Mp, k0 == 0); break;
                case 2: outer_block(xb, kc, pb, Kp, 2, ob, Mp, k0 == 0); break;
                default: outer_block(xb, kc, pb, Kp, 1, ob, Mp, k0 == 0);
                }
            }
        }
    }
    for (int64_t m = 0; m < M; m++)
        for (int c = 0; c < count; c++) {
            float v = ot[c * Mp + m] * factor[m];
            y[m * N + p0 + c] = bias ? v + bias[p0 + c] : v;
        }
}

/* Both panel loops: threads take whole panels; each dequantizes its panel once, then sweeps every row. */
static int panels(const float *xpack, const float *factor, int64_t M, int64_t Kp, int outer, const uint8_t *w,
                  int bits, int64_t K, int64_t N, int64_t groups, const float *scale, const float *zero,
                  const float *bias, float *y, int threads) {
    int64_t size = panel_size(N, PANEL, 6, threads), count = (N + size - 1) / size, Mp = round_up(M, 16);
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed) if (threads > 1)
    {
        float *panel = aligned_alloc(64, (size_t)size * Kp * sizeof(float));
        float *ot = outer ? aligned_alloc(64, (size_t)size * Mp * sizeof(float)) : NULL;
        failed = panel == NULL || (outer && ot == NULL);
        if (!failed) {
#pragma omp for schedule(static)
            for (int64_t p = 0; p < count; p++) {
                int64_t p0 = p * size;
                int n = N - p0 < size ? (int)(N - p0) : (int)size;
                dequantize_panel(w, bits, K, Kp, groups, scale, zero, p0, n, panel);
                if (outer)
                    outer_panel(xpack, factor, M, Mp, Kp, panel, n, p0, N, bias, ot, y);
                else
                    dot_panel(xpack, factor, M, Kp, panel, n, p0, N, bias, y);
            }
        }
        free(panel);
        free(ot);
    }
    return failed ? -1 : 0;
}

/* y [M][N] = x [M][K] @ W^T + bias for qweight int8 [N][K] (bits 8) or packed uint8 [N][K/2] (bits 4, K even),
   scale float32 [N][groups], zero float32 [N][groups] holding integers or NULL, bias [N] or NULL. M <= gemv_rows
   takes the decode loop, M < outer_rows the few-rows panels, else the outer-product panels (module comment).
   int4 groups must span a multiple of 16 columns (whole reordered blocks). Returns 0, or -1 when a buffer could not be allocated. */
int fxc_wo_linear(const float *x, int64_t M, int64_t K, const uint8_t *qweight, int bits, int64_t N, int64_t groups,
                  const float *scale, const float *zero, const float *bias, float *y, int64_t gemv_rows,
                  int64_t outer_rows, int threads) {
    int64_t Kp = round_up(K, 16), Mp = round_up(M, 16);
    int outer = M > gemv_rows && M >= outer_rows;
    threads = threads < 1 ? 1 : threads;
    float *xpack = aligned_alloc(64, (size_t)(outer ? Mp : M) * Kp * sizeof(float));
    float *factor = malloc((size_t)M * sizeof(float));
    int status = -1;
    if (xpack != NULL && factor != NULL) {
        if (outer)
            pack_columns(x, M, K, Mp, Kp, bits, xpack, factor, threads);
        else
            pack_rows(x, M, K, Kp, bits, xpack, factor, threads);
        if (M <= gemv_rows) {
            gemv(xpack, factor, M, Kp, qweight, bits, K, N, groups, scale, zero, bias, y, threads);
            status = 0;
        } else {
            status = panels(xpack, factor, M, Kp, outer, qweight, bits, K, N, groups, scale, zero, bias, y, threads);
        }
    }
    free(xpack);
    free(factor);
    return status;
}
