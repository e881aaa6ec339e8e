/* Weight-only int8/int4 linear on AMX-int8: y = x @ (scale * (w - zero))^T + bias with float32 x.

Read by codegen/torch/native/build.py (compiled once per machine into the user's cache, loaded by ctypes).

fxc_split_planes splits x exactly into int8 planes: per row a power-of-two step a with |x| <= 127 a,
    x = a * (q0 + q1 / 128 + q2 / 128^2 + q3 / 128^3) + r,   |r| <= a / 2 / 128^3 < max|x_row| * 3.7e-9
(each step is an exact float32 operation: division by a power of two, rounding, an exact difference
times 128), written in the tile unit's 4-byte-interleaved layout, zero padded to 16 rows and 64 columns.
fxc_plane_gemm multiplies every plane with the int8 weights on the AMX tile unit (int32 accumulators:
exact), combines the four accumulators as one integer in double (exact below 2^53) and scales it once
per group of columns (per-channel scales: one group; group-wise: groups of a multiple of 64 columns),
so the result is as close to the exact product of x and the dequantized weight as float32 rounding of
the output (plus the r term). The weights are read where they are stored (int8 [N, K] with K a multiple
of 64); int4 (two per byte [N, K/2], low nibble first) and other K are unpacked one panel of 16 output
channels at a time into a per-thread buffer.
*/
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PLANES 4
#define TILE 16     /* rows and int32 columns of a tile */
#define TILE_K 64   /* int8 columns of a tile */
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* 1 when this process may use the AMX tile registers (asks the kernel for the permission). */
int fxc_amx_enable(void) { return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0; }

/* Byte offset of plane p, row m, column k in the interleaved plane buffer [PLANES][Mpad/16][Kpad/64][16][64]:
   within a tile, row r holds columns 4r .. 4r+3 of the 16 rows m, 4 bytes each. */
static inline int64_t plane_offset(int p, int64_t m, int64_t k, int64_t Mpad, int64_t Kpad) {
    int64_t blocks = (p * (Mpad / TILE) + m / TILE) * (Kpad / TILE_K) + k / TILE_K;
    return blocks * (TILE * TILE_K) + ((k % TILE_K) / 4) * TILE_K + (m % TILE) * 4 + k % 4;
}

/* max|row| (vectorized); -1 when the row holds inf or nan. */
static float row_amax(const float *row, int64_t K) {
    __m512 amax = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
        __m512 v = _mm512_abs_ps(_mm512_maskz_loadu_ps(mask, row + k));
        bad |= _mm512_mask_fpclass_ps_mask(mask, v, 0x01 | 0x08 | 0x80); /* qnan, +inf, snan */
        amax = _mm512_max_ps(amax, v);
    }
    return bad ? -1.0f : _mm512_reduce_max_ps(amax);
}

/* Adds up the lanes of one 64-column tile: tile_sums[m][t] = sum over p of 128^(3-p) times the sum of plane p
   over the tile's columns of row m (an integer below 2^40: exact in double); the lanes restart at zero. */
static void flush_tile_sums(__m512i lane_sums[PLANES][4], int64_t m0, int64_t M, int64_t Kpad, int64_t t,
                            double *tile_sums) {
    int64_t sums[PLANES][TILE];
    for (int p = 0; p < PLANES; p++)
        for (int j = 0; j < 4; j++) {
            int32_t lanes[16];
            _mm512_storeu_si512(lanes, lane_sums[p][j]);
            lane_sums[p][j] = _mm512_setzero_si512();
            for (int i = 0; i < 4; i++)
                sums[p][4 * j + i] = lanes[4 * i] + lanes[4 * i + 1] + lanes[4 * i + 2] + lanes[4 * i + 3];
        }
    for (int i = 0; i < TILE && m0 + i < M; i++)
        tile_sums[(m0 + i) * (Kpad / TILE_K) + t] =
            (double)(((sums[0][i] * 128 + sums[1][i]) * 128 + sums[2][i]) * 128 + sums[3][i]);
}

/* Planes of 16 rows m0 .. m0+15 (rows past M are zero) whose steps have float32 inverses: for each group of
   4 columns, the 16 rows x 4 columns are one 64-byte tile row of every plane. z = x / a, q_p = round(z)
   (|q_0| <= 127, |q_p| <= 64), z = (z - q_p) 128: each exact in float32. */
static void split_block_avx512(const float *x, int64_t M, int64_t K, int64_t m0, const float inverse_step[TILE],
                               int8_t *planes, int64_t Mpad, int64_t Kpad, double *tile_sums) {
    const __m512 base = _mm512_set1_ps(128.0f), high = _mm512_set1_ps(127.0f), low = _mm512_set1_ps(-127.0f);
    __m512 inverse[4];
    __m512i lane_sums[PLANES][4];
    for (int j = 0; j < 4; j++) { /* lanes 4i .. 4i+3 of vector j: row 4j + i */
        float lanes[16];
        for (int l = 0; l < 16; l++) lanes[l] = inverse_step[4 * j + l / 4];
        inverse[j] = _mm512_loadu_ps(lanes);
        for (int p = 0; p < PLANES; p++) lane_sums[p][j] = _mm512_setzero_si512();
    }
    int64_t m_block = m0 / TILE, plane_stride = (Mpad / TILE) * (Kpad / TILE_K) * (TILE * TILE_K);
    for (int64_t k = 0; k < Kpad; k += 4) {
        __mmask8 mask = K - k >= 4 ? (__mmask8)0xF : (K > k ? (__mmask8)((1u << (K - k)) - 1) : 0);
        int8_t *tile_row = planes + (m_block * (Kpad / TILE_K) + k / TILE_K) * (TILE * TILE_K) + (k % TILE_K) / 4 * 64;
        __m512 z[4];
        for (int j = 0; j < 4; j++) {
            __m512 v = _mm512_setzero_ps();
            for (int i = 0; i < 4; i++) {
                int64_t m = m0 + 4 * j + i;
                __m128 part = m < M ? _mm_maskz_loadu_ps(mask, x + m * K + k) : _mm_setzero_ps();
                v = _mm512_insertf32x4(v, part, i);
            }
            z[j] = _mm512_mul_ps(v, inverse[j]);
        }
        for (int p = 0; p < PLANES; p++) {
            for (int j = 0; j < 4; j++) {
                __m512 q = _mm512_roundscale_ps(z[j], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q = _mm512_min_ps(_mm512_max_ps(q, low), high);
                __m512i qi = _mm512_cvtps_epi32(q);
                lane_sums[p][j] = _mm512_add_epi32(lane_sums[p][j], qi);
                _mm_storeu_si128((__m128i *)(tile_row + p * plane_stride + 16 * j), _mm512_cvtepi32_epi8(qi));
                z[j] = _mm512_mul_ps(_mm512_sub_ps(z[j], q), base);
            }
        }
        if ((k + 4) % TILE_K == 0) /* the end of a 64-column tile: its weighted sums per row */
            flush_tile_sums(lane_sums, m0, M, Kpad, k / TILE_K, tile_sums);
    }
}

/* One row in float64 (a step below 2^-120 has no float32 inverse); rows past M pass K = 0 (zero planes). */
static void split_row_scalar(const float *row, int64_t K, double a, int8_t *planes, int64_t m, int64_t Mpad,
                             int64_t Kpad, double *tile_sums /* this row's [Kpad / 64], or NULL past M */) {
    int64_t weighted = 0;
    for (int64_t k = 0; k < Kpad; k++) {
        double z = k < K ? (double)row[k] / a : 0.0; /* exact */
        for (int p = 0; p < PLANES; p++) {
            double q = nearbyint(z);
            q = q > 127.0 ? 127.0 : (q < -127.0 ? -127.0 : q);
            planes[plane_offset(p, m, k, Mpad, Kpad)] = (int8_t)q;
            weighted += (int64_t)q * ((int64_t)1 << (7 * (PLANES - 1 - p))); /* 128^(3-p) q */
            z = (z - q) * 128.0; /* exact */
        }
        if ((k + 1) % TILE_K == 0) {
            if (tile_sums) tile_sums[k / TILE_K] = (double)weighted;
            weighted = 0;
        }
    }
}

/* x [M, K] float32 -> planes (every byte written, layout above), step [M] (a), tile_sums [M][Kpad / 64] (for
   each 64-column tile, the sum over p of 128^(3-p) times the sum of plane p over the tile's columns of row
   m: what a zero point multiplies). Returns 1 + the first row holding inf or nan (the planes cannot carry
   them), 0 when every row is finite. */
int64_t fxc_split_planes(const float *x, int64_t M, int64_t K, int64_t Mpad, int64_t Kpad, int8_t *planes,
                         double *step, double *tile_sums, int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(max : bad)
    for (int64_t mb = 0; mb < Mpad / TILE; mb++) {
        int64_t m0 = mb * TILE;
        double a[TILE];
        float inverse[TILE];
        int tiny = 0;
        for (int i = 0; i < TILE; i++) {
            int64_t m = m0 + i;
            a[i] = 1.0;
            if (m < M) {
                float amax = row_amax(x + m * K, K);
                if (amax < 0.0f) {
                    bad = bad > m + 1 ? bad : m + 1;
                } else if (amax > 0.0f) { /* a = 2^ceil(log2(amax / 127)) */
                    int exponent = 0;
                    double f = frexp((double)amax / 127.0, &exponent); /* amax / 127 = f 2^e, f in [0.5, 1) */
                    a[i] = ldexp(1.0, f == 0.5 ? exponent - 1 : exponent);
                }
                step[m] = a[i];
            }
            tiny |= a[i] < 0x1p-120;
            inverse[i] = (float)(1.0 / a[i]);
        }
        if (!tiny) {
            split_block_avx512(x, M, K, m0, inverse, planes, Mpad, Kpad, tile_sums);
        } else {
            for (int i = 0; i < TILE; i++) {
                int64_t m = m0 + i;
                double *sums = m < M ? tile_sums + m * (Kpad / TILE_K) : NULL;
                split_row_scalar(x + (m < M ? m : 0) * K, m < M ? K : 0, a[i], planes, m, Mpad, Kpad, sums);
            }
        }
    }
    return bad;
}

/* Rows n0 .. n0+15 of the weight as int8 [16][Kpad] (zero beyond N and K). bits 4: nibbles, low first. */
static void unpack_panel(const int8_t *w, int bits, int64_t N, int64_t K, int64_t Kpad, int64_t n0, int8_t *panel) {
    memset(panel, 0, Kpad * TILE);
    for (int c = 0; c < TILE && n0 + c < N; c++) {
        int8_t *dst = panel + c * Kpad;
        if (bits == 8) {
            memcpy(dst, w + (n0 + c) * K, K);
            continue;
        }
        const int8_t *src = w + (n0 + c) * (K / 2);
        for (int64_t j = 0; j < K / 2; j++) {
            dst[2 * j] = (int8_t)((int8_t)(src[j] << 4) >> 4);
            dst[2 * j + 1] = (int8_t)(src[j] >> 4);
        }
    }
}

static void configure_tiles(void) {
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int t = 0; t < 6; t++) { /* 0-3: int32 accumulators [16 n][16 m]; 4: weights [16 n][64 k]; 5: plane */
        cfg.rows[t] = TILE;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
}

/* Per-channel scales: out[n][m] = scale[n] * (sum_p 128^(3-p) acc_p[n][m] - zero[n] * sums[m]) * step[m] / 128^3.
   The four accumulators make one integer in double (each step exact: a power-of-two product plus an
   integer, below 2^53), the zero point's term is subtracted exactly, and one product rounds to float32. */
static void combine_channel(int32_t acc[PLANES][TILE][TILE], const double row_unit[TILE], const double sums_d[TILE],
                            int64_t n0, int valid_n, const float *scale, const int32_t *zero, float out[TILE][TILE]) {
    const __m512d base = _mm512_set1_pd(128.0);
    __m512d units[2] = {_mm512_loadu_pd(row_unit), _mm512_loadu_pd(row_unit + 8)};
    __m512d sums[2] = {_mm512_loadu_pd(sums_d), _mm512_loadu_pd(sums_d + 8)};
    for (int n = 0; n < TILE; n++) {
        __m512d s = _mm512_set1_pd(n < valid_n ? (double)scale[n0 + n] : 0.0);
        __m512d z = _mm512_set1_pd(zero && n < valid_n ? (double)zero[n0 + n] : 0.0);
        for (int h = 0; h < 2; h++) {
            __m512d t = _mm512_cvtepi32_pd(_mm256_load_si256((const __m256i *)&acc[0][n][8 * h]));
            t = _mm512_fmadd_pd(t, base, _mm512_cvtepi32_pd(_mm256_load_si256((const __m256i *)&acc[1][n][8 * h])));
            t = _mm512_fmadd_pd(t, base, _mm512_cvtepi32_pd(_mm256_load_si256((const __m256i *)&acc[2][n][8 * h])));
            t = _mm512_fmadd_pd(t, base, _mm512_cvtepi32_pd(_mm256_load_si256((const __m256i *)&acc[3][n][8 * h])));
            t = _mm512_fnmadd_pd(z, sums[h], t);
            _mm256_store_ps(&out[n][8 * h], _mm512_cvtpd_ps(_mm512_mul_pd(t, _mm512_mul_pd(units[h], s))));
        }
    }
}

/* Group g of `groups` scales per channel: total[n][m] += scale[n][g] * (sum_p 128^(3-p) acc_p[n][m] - zero[n][g]
   * group_sums[m]) * step[m] / 128^3, in float32 (16 lanes: half the work of the float64 combine, which
   costs more than the tile unit's products when a group is one or two tiles); each step rounds as a
   float32 GEMM's additions do. */
static void combine_group(int32_t acc[PLANES][TILE][TILE], const float row_unit[TILE],
                          const float group_sums[TILE], int64_t n0, int valid_n, int64_t groups, int64_t g,
                          const float *scale, const int32_t *zero, float total[TILE][TILE]) {
    const __m512 base = _mm512_set1_ps(128.0f);
    const __m512 units = _mm512_loadu_ps(row_unit), sums = _mm512_loadu_ps(group_sums);
    for (int n = 0; n < valid_n; n++) {
        __m512 s = _mm512_mul_ps(units, _mm512_set1_ps(scale[(n0 + n) * groups + g]));
        __m512 t = _mm512_cvtepi32_ps(_mm512_load_si512(&acc[0][n][0]));
        t = _mm512_fmadd_ps(t, base, _mm512_cvtepi32_ps(_mm512_load_si512(&acc[1][n][0])));
        t = _mm512_fmadd_ps(t, base, _mm512_cvtepi32_ps(_mm512_load_si512(&acc[2][n][0])));
        t = _mm512_fmadd_ps(t, base, _mm512_cvtepi32_ps(_mm512_load_si512(&acc[3][n][0])));
        if (zero) t = _mm512_fnmadd_ps(_mm512_set1_ps((float)zero[(n0 + n) * groups + g]), sums, t);
        _mm512_store_ps(&total[n][0], _mm512_fmadd_ps(t, s, _mm512_load_ps(&total[n][0])));
    }
}

/* out[n][m] (+ bias) -> y[m0 + m][n0 + n] for valid rows and columns. */
static void store_tile(float out[TILE][TILE], int64_t m0, int valid_m, int64_t n0, int valid_n, int64_t N,
                       const float *bias, float *y) {
    const __m512i columns = _mm512_set_epi32(240, 224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64, 48, 32, 16, 0);
    __mmask16 mask = (__mmask16)((1u << valid_n) - 1);
    __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
    for (int m = 0; m < valid_m; m++) { /* row m of the output: out[0..15][m] */
        __m512 row = _mm512_i32gather_ps(_mm512_add_epi32(columns, _mm512_set1_epi32(m)), &out[0][0], 4);
        _mm512_mask_storeu_ps(y + (m0 + m) * N + n0, mask, _mm512_add_ps(row, b));
    }
}

/* y [M, N] float32 = x @ (scale * (w - zero))^T + bias from fxc_split_planes' output, with `groups` scales (and
   zero points) per output channel: scale [N][groups], zero [N][groups] int32 or NULL, bias [N] or NULL. Each
   group spans Kpad / 64 / groups whole 64-column tiles (per-channel: groups = 1). K * 127 * 255 must fit
   int32 (the caller checks). */
void fxc_plane_gemm(const int8_t *planes, const double *step, const double *tile_sums, int64_t M, int64_t Mpad,
                    int64_t K, int64_t Kpad, const int8_t *w, int bits, int64_t N, int64_t groups, const float *scale,
                    const int32_t *zero, const float *bias, float *y, int threads) {
    int64_t n_blocks = (N + TILE - 1) / TILE, k_tiles = Kpad / TILE_K, m_blocks = Mpad / TILE;
    int64_t group_tiles = k_tiles / groups;
    int direct = bits == 8 && K == Kpad; /* weight tiles loaded where the weight is stored */
    int64_t plane_stride = m_blocks * k_tiles * (TILE * TILE_K);
#pragma omp parallel num_threads(threads)
    {
        configure_tiles();
        int8_t *panel = NULL;
        int32_t acc[PLANES][TILE][TILE] __attribute__((aligned(64)));
        double row_unit[TILE], group_sums[TILE];
        float unit32[TILE], sums32[TILE];
        float out[TILE][TILE] __attribute__((aligned(64))); /* [n][m], aligned for the vector stores */
#pragma omp for schedule(static)
        for (int64_t nb = 0; nb < n_blocks; nb++) {
            int64_t n0 = nb * TILE;
            int valid_n = N - n0 < TILE ? (int)(N - n0) : TILE;
            const int8_t *weights = w + n0 * K;
            int64_t weight_stride = K;
            if (!direct || valid_n < TILE) { /* int4, a K tail or the last rows: an unpacked, padded copy */
                if (panel == NULL) panel = aligned_alloc(64, Kpad * TILE);
                unpack_panel(w, bits, N, K, Kpad, n0, panel);
                weights = panel;
                weight_stride = Kpad;
            }
            for (int64_t mb = 0; mb < m_blocks; mb++) {
                int64_t m0 = mb * TILE;
                int valid_m = M - m0 < TILE ? (int)(M - m0) : TILE;
                for (int m = 0; m < TILE; m++) {
                    row_unit[m] = m < valid_m ? step[m0 + m] / (128.0 * 128.0 * 128.0) : 0.0;
                    unit32[m] = (float)row_unit[m];
                }
                if (groups != 1) memset(out, 0, sizeof out); /* group-wise: accumulated over the groups */
                const int8_t *b = planes + mb * k_tiles * (TILE * TILE_K);
                for (int64_t g = 0; g < groups; g++) {
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
                    for (int64_t t = g * group_tiles; t < (g + 1) * group_tiles; t++) {
                        const int8_t *bt = b + t * (TILE * TILE_K);
                        if (mb == 0 && nb + 1 < n_blocks && direct) /* decode reads each weight once: fetch ahead */
                            for (int r = 0; r < TILE; r++)
                                _mm_prefetch((const char *)(weights + (TILE + r) * K + t * TILE_K), _MM_HINT_T0);
                        _tile_loadd(4, weights + t * TILE_K, weight_stride);
                        _tile_loadd(5, bt, TILE_K);
                        _tile_dpbssd(0, 4, 5);
                        _tile_loadd(5, bt + plane_stride, TILE_K);
                        _tile_dpbssd(1, 4, 5);
                        _tile_loadd(5, bt + 2 * plane_stride, TILE_K);
                        _tile_dpbssd(2, 4, 5);
                        _tile_loadd(5, bt + 3 * plane_stride, TILE_K);
                        _tile_dpbssd(3, 4, 5);
                    }
                    _tile_stored(0, acc[0], 64);
                    _tile_stored(1, acc[1], 64);
                    _tile_stored(2, acc[2], 64);
                    _tile_stored(3, acc[3], 64);
                    for (int m = 0; m < TILE; m++) { /* the group's weighted plane sums (zero points) */
                        double sum = 0.0;
                        if (zero && m < valid_m)
                            for (int64_t t = g * group_tiles; t < (g + 1) * group_tiles; t++)
                                sum += tile_sums[(m0 + m) * k_tiles + t];
                        group_sums[m] = sum;
                    }
                    if (groups == 1) {
                        combine_channel(acc, row_unit, group_sums, n0, valid_n, scale, zero, out);
                    } else {
                        for (int m = 0; m < TILE; m++) sums32[m] = (float)group_sums[m];
                        combine_group(acc, unit32, sums32, n0, valid_n, groups, g, scale, zero, out);
                    }
                }
                store_tile(out, m0, valid_m, n0, valid_n, N, bias, y);
            }
        }
        free(panel);
        _tile_release();
    }
}
