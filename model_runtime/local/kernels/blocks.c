/* Weights in blocks of 32 with 4 or 8 bits each, multiplied by a few rows of activations.
 *
 * The layouts are GGUF's: Q4_1 (w = d*q + m, q in 0..15, two per byte: byte j holds weight j
 * in its low half and weight j+16 in its high half) and Q8_0 (w = d*q, q in -127..127), with
 * d and m as half floats. Activations are quantized per block of 32 to 8 bits (d and the sum of
 * the block, as Q8_1), so a block's dot product is one integer multiply-add on AVX2 (a single
 * VNNI instruction where the CPU has one).
 *
 * Built and loaded at run time by packed.py; without AVX2 the plain C loops below run instead.
 *
 * In order: the block layouts; quantizing and widening whole matrices (`wisp_quantize`,
 * `wisp_widen`, `wisp_widen_bf16`, for prefill products torch runs); products of a few rows
 * (`wisp_matmul`); and one decoder layer for a decode step or a short chunk
 * (`wisp_decode_layer`: norms, rotation, the half-float cache, `attend`, the MLP).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define QK 32
#define MAX_ROWS 4
/* Weights are read this many bytes ahead: the hardware's own prefetching left the decode step's
 * products at half the speed (11.1 against 5.6 ms for a step's 120 on the Intel Xeon). */
#define PREFETCH 2048
/* The decode attention reads the cached keys and values as far ahead (further, or into L2
 * only, measured slower on the Intel Xeon). */
#define ATTEND_AHEAD 2048

typedef struct {
    _Float16 d, m;
    uint8_t qs[QK / 2];
} q4_1;

typedef struct {
    _Float16 d;
    int8_t qs[QK];
} q8_0;

typedef struct {
    float d, s;
    int8_t qs[QK];
} q8_1;

enum { KIND_Q4_1 = 0, KIND_Q8_0 = 1 };

int wisp_block_bytes(int kind) { return kind == KIND_Q4_1 ? (int)sizeof(q4_1) : (int)sizeof(q8_0); }

static int clamp_round(float v, int lo, int hi) {
    int q = (int)lrintf(v);
    return q < lo ? lo : q > hi ? hi : q;
}

static void quantize_q4_1(const float *x, q4_1 *b) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < QK; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    float d = (hi - lo) / 15.0f;
    b->d = (_Float16)d;
    b->m = (_Float16)lo;
    float m = (float)b->m, dh = (float)b->d;
    float inv = dh != 0.0f ? 1.0f / dh : 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        int a = clamp_round((x[j] - m) * inv, 0, 15);
        int c = clamp_round((x[j + QK / 2] - m) * inv, 0, 15);
        b->qs[j] = (uint8_t)(a | (c << 4));
    }
}

static void quantize_q8_0(const float *x, q8_0 *b) {
    float amax = 0.0f;
    for (int i = 0; i < QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    b->d = (_Float16)(amax / 127.0f);
    float dh = (float)b->d;
    float inv = dh != 0.0f ? 1.0f / dh : 0.0f;
    for (int i = 0; i < QK; i++) b->qs[i] = (int8_t)clamp_round(x[i] * inv, -127, 127);
}

static void quantize_q8_1(const float *x, q8_1 *b) {
#ifdef __AVX2__
    /* The same bytes as the loop below (the products quantize every row's activations on one
     * thread, before the others start): lanes rounded to nearest even, as lrintf does. */
    __m256 v[4], most = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        most = _mm256_max_ps(most, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(most), _mm256_extractf128_ps(most, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float d = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))) / 127.0f;
    __m256 inv = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i q[4], lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    __m256i total = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
        q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
        q[i] = _mm256_min_epi32(_mm256_max_epi32(q[i], lo), hi);
        total = _mm256_add_epi32(total, q[i]);
    }
    /* packing interleaves the 128-bit lanes; the permutation puts the 32 bytes back in order */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)b->qs, bytes);
    __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
    t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1));
    b->d = d;
    b->s = d * (float)_mm_cvtsi128_si32(t4);
#else
    float amax = 0.0f;
    for (int i = 0; i < QK; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    float d = amax / 127.0f;
    float inv = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;
    for (int i = 0; i < QK; i++) {
        int q = clamp_round(x[i] * inv, -127, 127);
        b->qs[i] = (int8_t)q;
        sum += q;
    }
    b->d = d;
    b->s = d * (float)sum;
#endif
}

/* Rows of `w` ([n, k] floats, k a multiple of 32) into blocks of `kind`. */
void wisp_quantize(int kind, const float *w, int64_t n, int64_t k, void *out) {
    int64_t nb = k / QK;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        for (int64_t b = 0; b < nb; b++) {
            const float *x = w + r * k + b * QK;
            if (kind == KIND_Q4_1)
                quantize_q4_1(x, (q4_1 *)out + r * nb + b);
            else
                quantize_q8_0(x, (q8_0 *)out + r * nb + b);
        }
    }
}

/* The 32 weights of one block as floats. */
static void widen_block(int kind, const void *block, float *y) {
#ifdef __AVX2__
    __m128i bytes[2];
    __m256 scale, offset = _mm256_setzero_ps();
    if (kind == KIND_Q4_1) {
        const q4_1 *q = (const q4_1 *)block;
        __m128i raw = _mm_loadu_si128((const __m128i *)q->qs), low = _mm_set1_epi8(15);
        bytes[0] = _mm_and_si128(raw, low);
        bytes[1] = _mm_and_si128(_mm_srli_epi16(raw, 4), low);
        scale = _mm256_set1_ps((float)q->d);
        offset = _mm256_set1_ps((float)q->m);
    } else {
        const q8_0 *q = (const q8_0 *)block;
        bytes[0] = _mm_loadu_si128((const __m128i *)q->qs);
        bytes[1] = _mm_loadu_si128((const __m128i *)q->qs + 1);
        scale = _mm256_set1_ps((float)q->d);
    }
    for (int h = 0; h < 2; h++) {
        __m128i upper = _mm_unpackhi_epi64(bytes[h], bytes[h]);
        __m256i lo = kind == KIND_Q4_1 ? _mm256_cvtepu8_epi32(bytes[h]) : _mm256_cvtepi8_epi32(bytes[h]);
        __m256i hi = kind == KIND_Q4_1 ? _mm256_cvtepu8_epi32(upper) : _mm256_cvtepi8_epi32(upper);
        _mm256_storeu_ps(y + 16 * h, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), scale, offset));
        _mm256_storeu_ps(y + 16 * h + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), scale, offset));
    }
#else
    if (kind == KIND_Q4_1) {
        const q4_1 *q = (const q4_1 *)block;
        float d = (float)q->d, m = (float)q->m;
        for (int j = 0; j < QK / 2; j++) {
            y[j] = d * (float)(q->qs[j] & 15) + m;
            y[j + QK / 2] = d * (float)(q->qs[j] >> 4) + m;
        }
    } else {
        const q8_0 *q = (const q8_0 *)block;
        float d = (float)q->d;
        for (int j = 0; j < QK; j++) y[j] = d * (float)q->qs[j];
    }
#endif
}

/* Rows `rows[0..count)` of the [*, k] matrix in `w` as floats (all rows in order when NULL). */
void wisp_widen(int kind, const void *w, const int64_t *rows, int64_t count, int64_t k,
                float *out) {
    int64_t nb = k / QK;
    size_t block_bytes = (size_t)wisp_block_bytes(kind), row_bytes = (size_t)nb * block_bytes;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++) {
        const char *row = (const char *)w + (size_t)(rows ? rows[i] : i) * row_bytes;
        for (int64_t b = 0; b < nb; b++) widen_block(kind, row + b * block_bytes, out + i * k + b * QK);
    }
}

/* Eight floats rounded to bf16 (nearest, ties to even; weights are finite). */
static inline void store_bf16(const float *y, uint16_t *out) {
#ifdef __AVX2__
    __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(y));
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
    _mm_storeu_si128((__m128i *)out, _mm256_castsi256_si128(packed));
#else
    for (int j = 0; j < 8; j++) {
        uint32_t bits;
        memcpy(&bits, &y[j], sizeof bits);
        out[j] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
#endif
}

/* The whole [n, k] matrix as bf16, for CPUs that multiply bf16 fast. */
void wisp_widen_bf16(int kind, const void *w, int64_t n, int64_t k, uint16_t *out) {
    int64_t nb = k / QK;
    size_t block_bytes = (size_t)wisp_block_bytes(kind);
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n * nb; b++) {
        float y[QK];
        widen_block(kind, (const char *)w + (size_t)b * block_bytes, y);
        for (int j = 0; j < QK; j += 8) store_bf16(y + j, out + b * QK + j);
    }
}

#ifdef __AVX2__
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 32 weights of a block as bytes (unsigned for Q4_1, signed for Q8_0). */
static inline __m256i load_q4(const q4_1 *b) {
    __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* Sums of four byte products per 32-bit lane. No pair sum overflows 16 bits (|w| <= 127 or
 * w <= 15, |x| <= 127), so the VNNI instruction and the AVX2 pair agree exactly. */
static inline __m256 dot_bytes(__m256i unsigned_w, __m256i signed_x) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), unsigned_w, signed_x));
#elif defined(__AVXVNNI__)
    return _mm256_cvtepi32_ps(
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), unsigned_w, signed_x));
#else
    __m256i pairs = _mm256_maddubs_epi16(unsigned_w, signed_x);
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
#endif
}

/* One row of activations: two blocks a turn into two accumulators, the minimums as vectors. */
static float dot_one(int kind, const void *w, const q8_1 *a, int64_t nb) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    float mins = 0.0f;
    int64_t b = 0;
    if (kind == KIND_Q4_1) {
        const q4_1 *q = (const q4_1 *)w;
        for (; b + 1 < nb; b += 2) {
            _mm_prefetch((const char *)(q + b) + PREFETCH, _MM_HINT_T0);
            __m256i x0 = _mm256_loadu_si256((const __m256i *)a[b].qs);
            __m256i x1 = _mm256_loadu_si256((const __m256i *)a[b + 1].qs);
            __m256 p0 = dot_bytes(load_q4(q + b), x0);
            __m256 p1 = dot_bytes(load_q4(q + b + 1), x1);
            acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps((float)q[b].d * a[b].d), acc0);
            acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps((float)q[b + 1].d * a[b + 1].d), acc1);
            mins += (float)q[b].m * a[b].s + (float)q[b + 1].m * a[b + 1].s;
        }
        for (; b < nb; b++) {
            __m256i x0 = _mm256_loadu_si256((const __m256i *)a[b].qs);
            __m256 p0 = dot_bytes(load_q4(q + b), x0);
            acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps((float)q[b].d * a[b].d), acc0);
            mins += (float)q[b].m * a[b].s;
        }
    } else {
        const q8_0 *q = (const q8_0 *)w;
        for (; b + 1 < nb; b += 2) {
            _mm_prefetch((const char *)(q + b) + PREFETCH, _MM_HINT_T0);
            __m256i w0 = _mm256_loadu_si256((const __m256i *)q[b].qs);
            __m256i w1 = _mm256_loadu_si256((const __m256i *)q[b + 1].qs);
            __m256i x0 = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a[b].qs), w0);
            __m256i x1 = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a[b + 1].qs), w1);
            __m256 p0 = dot_bytes(_mm256_sign_epi8(w0, w0), x0);
            __m256 p1 = dot_bytes(_mm256_sign_epi8(w1, w1), x1);
            acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps((float)q[b].d * a[b].d), acc0);
            acc1 = _mm256_fmadd_ps(p1, _mm256_set1_ps((float)q[b + 1].d * a[b + 1].d), acc1);
        }
        for (; b < nb; b++) {
            __m256i w0 = _mm256_loadu_si256((const __m256i *)q[b].qs);
            __m256i x0 = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)a[b].qs), w0);
            __m256 p0 = dot_bytes(_mm256_sign_epi8(w0, w0), x0);
            acc0 = _mm256_fmadd_ps(p0, _mm256_set1_ps((float)q[b].d * a[b].d), acc0);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1)) + mins;
}

static void dot_row(int kind, const void *w, const q8_1 *a, int64_t nb, int rows, float *out) {
    if (rows == 1) {
        out[0] = dot_one(kind, w, a, nb);
        return;
    }
    __m256 acc[MAX_ROWS];
    float mins[MAX_ROWS];
    for (int r = 0; r < rows; r++) {
        acc[r] = _mm256_setzero_ps();
        mins[r] = 0.0f;
    }
    if (kind == KIND_Q4_1) {
        const q4_1 *q = (const q4_1 *)w;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)(q + b) + PREFETCH, _MM_HINT_T0);
            __m256i wq = load_q4(q + b);
            float d = (float)q[b].d, m = (float)q[b].m;
            for (int r = 0; r < rows; r++) {
                const q8_1 *x = a + r * nb + b;
                __m256i xq = _mm256_loadu_si256((const __m256i *)x->qs);
                acc[r] = _mm256_fmadd_ps(dot_bytes(wq, xq), _mm256_set1_ps(d * x->d), acc[r]);
                mins[r] += m * x->s;
            }
        }
    } else {
        const q8_0 *q = (const q8_0 *)w;
        for (int64_t b = 0; b < nb; b++) {
            _mm_prefetch((const char *)(q + b) + PREFETCH, _MM_HINT_T0);
            __m256i wq = _mm256_loadu_si256((const __m256i *)q[b].qs);
            __m256i magnitude = _mm256_sign_epi8(wq, wq);
            float d = (float)q[b].d;
            for (int r = 0; r < rows; r++) {
                const q8_1 *x = a + r * nb + b;
                __m256i xq = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x->qs), wq);
                acc[r] = _mm256_fmadd_ps(dot_bytes(magnitude, xq), _mm256_set1_ps(d * x->d), acc[r]);
            }
        }
    }
    for (int r = 0; r < rows; r++) out[r] = hsum(acc[r]) + mins[r];
}
#else
static void dot_row(int kind, const void *w, const q8_1 *a, int64_t nb, int rows, float *out) {
    for (int r = 0; r < rows; r++) {
        float total = 0.0f;
        for (int64_t b = 0; b < nb; b++) {
            const q8_1 *x = a + r * nb + b;
            int sum = 0;
            if (kind == KIND_Q4_1) {
                const q4_1 *q = (const q4_1 *)w + b;
                for (int j = 0; j < QK / 2; j++)
                    sum += (q->qs[j] & 15) * x->qs[j] + (q->qs[j] >> 4) * x->qs[j + QK / 2];
                total += (float)q->d * x->d * (float)sum + (float)q->m * x->s;
            } else {
                const q8_0 *q = (const q8_0 *)w + b;
                for (int j = 0; j < QK; j++) sum += q->qs[j] * x->qs[j];
                total += (float)q->d * x->d * (float)sum;
            }
        }
        out[r] = total;
    }
}
#endif

/* y[m, n] = x[m, k] @ w[n, k]^T on `threads` threads, x quantized to 8 bits per block. */
void wisp_matmul(int kind, const void *w, int64_t n, int64_t k, const float *x, int64_t m,
                 float *y, int threads) {
    int64_t nb = k / QK;
    size_t row_bytes = (size_t)nb * (size_t)wisp_block_bytes(kind);
    q8_1 *a = malloc((size_t)(m * nb) * sizeof(q8_1));
    if (!a) return;
    for (int64_t i = 0; i < m * nb; i++) quantize_q8_1(x + i * QK, a + i);
    int team = threads > 0 ? threads : 1;
#pragma omp parallel for schedule(static) num_threads(team)
    for (int64_t j = 0; j < n; j++) {
        const void *row = (const char *)w + (size_t)j * row_bytes;
        for (int64_t r0 = 0; r0 < m; r0 += MAX_ROWS) {
            int rows = m - r0 < MAX_ROWS ? (int)(m - r0) : MAX_ROWS;
            float out[MAX_ROWS];
            dot_row(kind, row, a + r0 * nb, nb, rows, out);
            for (int r = 0; r < rows; r++) y[(r0 + r) * n + j] = out[r];
        }
    }
    free(a);
}

/* ---- One decoder layer for a decode step or a short chunk of one sequence, in place. ---- */

/* Keys and values are cached as half floats: half the bytes a decode step reads. With AVX2 the
 * kernels widen them eight at a time (F16C, which every AVX2 CPU has). */
#if defined(__AVX2__) && defined(__F16C__)
#define WIDE_HALVES 1
static inline __m256 load_halves(const _Float16 *h) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)); }
#endif

static float dot(const float *a, const _Float16 *b, int64_t n) {
    int64_t i = 0;
    float total = 0.0f;
#ifdef WIDE_HALVES
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load_halves(b + i), acc);
    total = hsum(acc);
#endif
    for (; i < n; i++) total += a[i] * (float)b[i];
    return total;
}

static void add_scaled(float *out, const _Float16 *v, float p, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] += p * (float)v[i];
}

#ifdef __AVX2__
/* The sums of eight vectors' lanes, in their order. */
static inline __m256 hsum8(const __m256 *a) {
    __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
    __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

/* e^x for x <= 0 (a softmax's shifted scores): 2^n * e^r with |r| <= ln2/2, e^r by Cephes'
 * polynomial (about 1 ulp); under -87.3 it is 0. */
static inline __m256 exp_nonpositive(__m256 x) {
    const __m256 low = _mm256_set1_ps(-87.3f);
    __m256 under = _mm256_cmp_ps(x, low, _CMP_LT_OQ);
    x = _mm256_max_ps(x, low);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}
#endif

/* One query head's attention over `length` cached positions: o = softmax(q.k * scale) . v.
 * With AVX2 eight positions' scores at a time, the exponentials eight at a time, and the
 * weighted values summed in registers for heads of up to 128 dimensions. */
static void attend(const float *q, const _Float16 *k, const _Float16 *v, int64_t length,
                   int64_t d, float scale, float *scores, float *o) {
    int64_t p = 0;
    float top = -INFINITY, total = 0.0f;
#ifdef WIDE_HALVES
    int wide = d % 8 == 0 && d <= 128;
    if (wide) {
        __m256 most = _mm256_set1_ps(-INFINITY);
        for (; p + 8 <= length; p += 8) {
            __m256 acc[8];
            const char *ahead = (const char *)(k + p * d) + ATTEND_AHEAD;
            for (int64_t b = 0; b < 8 * d * 2; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
            for (int j = 0; j < 8; j++) {
                const _Float16 *key = k + (p + j) * d;
                __m256 a = _mm256_setzero_ps();
                for (int64_t i = 0; i < d; i += 8)
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load_halves(key + i), a);
                acc[j] = a;
            }
            __m256 eight = _mm256_mul_ps(hsum8(acc), _mm256_set1_ps(scale));
            _mm256_storeu_ps(scores + p, eight);
            most = _mm256_max_ps(most, eight);
        }
        /* the largest lane: a scalar loop over the scores was a chain of dependent maxima */
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(most), _mm256_extractf128_ps(most, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        top = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    }
#endif
    for (int64_t rest = p; rest < length; rest++) {
        scores[rest] = dot(q, k + rest * d, d) * scale;
        top = scores[rest] > top ? scores[rest] : top;
    }
    p = 0;
#ifdef WIDE_HALVES
    if (wide) {
        __m256 sum = _mm256_setzero_ps(), shift = _mm256_set1_ps(top);
        for (; p + 8 <= length; p += 8) {
            __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + p), shift));
            _mm256_storeu_ps(scores + p, e);
            sum = _mm256_add_ps(sum, e);
        }
        total = hsum(sum);
    }
#endif
    for (; p < length; p++) {
        scores[p] = expf(scores[p] - top);
        total += scores[p];
    }
#ifdef WIDE_HALVES
    if (wide) {
        __m256 acc[16];
        int64_t lanes = d / 8;
        for (int64_t i = 0; i < lanes; i++) acc[i] = _mm256_setzero_ps();
        for (p = 0; p < length; p++) {
            __m256 w = _mm256_set1_ps(scores[p]);
            const _Float16 *value = v + p * d;
            const char *ahead = (const char *)value + ATTEND_AHEAD;
            for (int64_t b = 0; b < d * 2; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
            for (int64_t i = 0; i < lanes; i++)
                acc[i] = _mm256_fmadd_ps(w, load_halves(value + 8 * i), acc[i]);
        }
        __m256 inverse = _mm256_set1_ps(1.0f / total);
        for (int64_t i = 0; i < lanes; i++) _mm256_storeu_ps(o + 8 * i, _mm256_mul_ps(acc[i], inverse));
        return;
    }
#endif
    memset(o, 0, sizeof(float) * (size_t)d);
    for (p = 0; p < length; p++) add_scaled(o, v + p * d, scores[p] / total, d);
}

/* `attend` on its own (for tests); 0 when there was no memory for the scores. */
int wisp_attend(const float *q, const _Float16 *k, const _Float16 *v, int64_t length, int64_t d,
                float scale, float *out) {
    float *scores = malloc(sizeof(float) * (size_t)(length > 0 ? length : 1));
    if (!scores) return 0;
    attend(q, k, v, length, d, scale, scores, out);
    free(scores);
    return 1;
}

static void rms_norm(const float *x, const float *w, float eps, int64_t n, float *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    float scale = 1.0f / sqrtf(sum / (float)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = w[i] * (x[i] * scale);
}

/* Llama's rotation: the two halves of each head turn by the angles whose cos/sin are given. */
static void rotate(float *x, const float *cos, const float *sin, int64_t dim) {
    int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++) {
        float a = x[i], b = x[i + half];
        x[i] = a * cos[i] - b * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

typedef struct {
    int kind;
    const void *qkv, *out, *gate_up, *down;
    const float *qkv_bias; /* NULL without */
    const float *norm_in, *norm_mid;
    float eps_in, eps_mid;
    int64_t hidden, inter, heads, kv_heads, dim;
} layer_weights;

/* hidden[m, h] += attention and MLP of layer `w`, for m rows that are either
 * - one new position `pos` of m sequences (`sequence` 0): row r's key and value go to position
 *   `pos` of sequence r in `keys`/`values` ([m, kv_heads, capacity, dim] half floats each), and
 *   it attends over 0..pos; `cos`/`sin` hold one position's angles; or
 * - m new positions pos..pos+m-1 of sequence 0 (`sequence` 1: a short chunk, a draft to check):
 *   row r goes to position pos+r and attends over 0..pos+r; `cos`/`sin` hold m rows. */
void wisp_decode_layer(const layer_weights *w, float *hidden, int64_t m, const float *cos,
                       const float *sin, _Float16 *keys, _Float16 *values, int64_t capacity,
                       int64_t pos, float scale, int threads, int sequence) {
    int64_t h = w->hidden, d = w->dim, nq = w->heads * d, nkv = w->kv_heads * d;
    int64_t width = nq + 2 * nkv, group = w->heads / w->kv_heads;
    int64_t length = pos + (sequence ? m : 1); /* the longest any row attends over */
    float *x = malloc(sizeof(float) * (size_t)(m * h));
    float *qkv = malloc(sizeof(float) * (size_t)(m * width));
    float *att = malloc(sizeof(float) * (size_t)(m * nq));
    float *mid = malloc(sizeof(float) * (size_t)(m * 2 * w->inter));
    float *out = malloc(sizeof(float) * (size_t)(m * h));
    if (!x || !qkv || !att || !mid || !out) goto done;
    for (int64_t r = 0; r < m; r++) rms_norm(hidden + r * h, w->norm_in, w->eps_in, h, x + r * h);
    wisp_matmul(w->kind, w->qkv, width, h, x, m, qkv, threads);
    for (int64_t r = 0; r < m; r++) {
        float *row = qkv + r * width;
        if (w->qkv_bias)
            for (int64_t i = 0; i < width; i++) row[i] += w->qkv_bias[i];
        const float *c = cos + (sequence ? r * d : 0), *s = sin + (sequence ? r * d : 0);
        for (int64_t head = 0; head < w->heads + w->kv_heads; head++) rotate(row + head * d, c, s, d);
        int64_t b = sequence ? 0 : r, p = sequence ? pos + r : pos;
        for (int64_t g = 0; g < w->kv_heads; g++) {
            size_t at = (size_t)(((b * w->kv_heads + g) * capacity + p) * d);
            for (int64_t i = 0; i < d; i++) {
                keys[at + i] = (_Float16)row[nq + g * d + i];
                values[at + i] = (_Float16)row[nq + nkv + g * d + i];
            }
        }
    }
    int team = threads > 0 ? threads : 1;
    int64_t tasks = m * w->heads;
    /* On threads from about a hundred cached positions (nine heads): at 4096, the bundled
     * model's steps after 200-455 positions ran their attention on one thread, 0.3-0.6 ms
     * slower a step on the Intel Xeon. */
#pragma omp parallel for schedule(static) num_threads(team) if (tasks * length >= 1024)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t r = t / w->heads, head = t % w->heads, g = head / group;
        int64_t b = sequence ? 0 : r, seen = sequence ? pos + r + 1 : pos + 1;
        const float *q = qkv + r * width + head * d;
        const _Float16 *k = keys + (size_t)((b * w->kv_heads + g) * capacity) * (size_t)d;
        const _Float16 *v = values + (size_t)((b * w->kv_heads + g) * capacity) * (size_t)d;
        float *o = att + r * nq + head * d;
        float *scores = malloc(sizeof(float) * (size_t)seen);
        if (!scores) continue;
        attend(q, k, v, seen, d, scale, scores, o);
        free(scores);
    }
    wisp_matmul(w->kind, w->out, h, nq, att, m, out, threads);
    for (int64_t i = 0; i < m * h; i++) hidden[i] += out[i];
    for (int64_t r = 0; r < m; r++) rms_norm(hidden + r * h, w->norm_mid, w->eps_mid, h, x + r * h);
    wisp_matmul(w->kind, w->gate_up, 2 * w->inter, h, x, m, mid, threads);
    for (int64_t r = 0; r < m; r++) {
        float *gate = mid + r * 2 * w->inter, *up = gate + w->inter;
        for (int64_t i = 0; i < w->inter; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
        if (r) memmove(mid + r * w->inter, gate, sizeof(float) * (size_t)w->inter);
    }
    wisp_matmul(w->kind, w->down, h, w->inter, mid, m, out, threads);
    for (int64_t i = 0; i < m * h; i++) hidden[i] += out[i];
done:
    free(x);
    free(qkv);
    free(att);
    free(mid);
    free(out);
}
