/* GGUF's block types, read as the file stores them: products with a few rows of activations
 * and widening to floats.
 *
 * The types (ggml's numbers, wisp.h) and their layouts are llama.cpp's: F32, F16 and BF16;
 * blocks of 32 weights with a half-float scale d (Q4_0, Q5_0, Q8_0: w = d * q with q signed)
 * or a scale and a minimum m (Q4_1, Q5_1: w = d * q + m); and super-blocks of 256 (Q4_K and
 * Q5_K: eight sub-blocks of 32 with 6-bit scales and minimums under half-float d and dmin;
 * Q6_K: sixteen sub-blocks of 16 with int8 scales under a half-float d).
 *
 * A product quantizes the activations once to 8 bits per 32 values, with their scale d and
 * s = d * sum(q) (ggml's Q8_1) and the same sum for each 16, so that a block's dot product is
 * integer multiply-adds of bytes (on AVX2 one instruction per 32 where the CPU has VNNI) and
 * a minimum or an offset costs one multiply by a sum. Float matrices multiply the float
 * activations.
 *
 * In order: the block layouts and their reference form (`unpack`: any 32 weights as small
 * integers, scales and an offset, which the plain C paths read); the table of types and
 * `wisp_row_bytes`; quantizing (`wisp_quantize`, and the activations); the blocks on AVX2
 * (`levels`: any 32 weights as bytes); widening (`wisp_widen`, `wisp_widen_bf16`); the
 * products' kernels, plain C, then AVX2 (one per layout); and `wisp_multiply`.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "wisp.h"

#define QK 32    /* weights in a block, in an activation block, and in `unpack`'s groups */
#define QK_K 256 /* weights in a K-quant super-block */
#define MAX_ROWS 4
/* Weights are read this many bytes ahead: the hardware's own prefetching left a decode step's
 * products at half the speed (11.1 against 5.6 ms for a step's 120 on the Intel Xeon). */
#define PREFETCH 2048

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define VECTOR_KERNELS 1
#endif

typedef _Float16 half;

/* ---- Block layouts. Nibbles: byte j of qs holds weight j in its low half and weight j + 16
 * in its high half; qh bit j is weight j's fifth bit. ---- */
typedef struct {
    half d;
    uint8_t qs[QK / 2];
} block_q4_0;

typedef struct {
    half d, m;
    uint8_t qs[QK / 2];
} block_q4_1;

typedef struct {
    half d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_0;

typedef struct {
    half d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} block_q5_1;

typedef struct {
    half d;
    int8_t qs[QK];
} block_q8_0;

/* Sub-blocks 2i and 2i + 1 are the low and high nibbles of qs[32i .. 32i + 32); Q5_K's qh bit
 * i of byte l is the fifth bit of weight l of sub-block i. `scales`: see `k_scales`. */
typedef struct {
    half d, dmin;
    uint8_t scales[12];
    uint8_t qs[QK_K / 2];
} block_q4_K;

typedef struct {
    half d, dmin;
    uint8_t scales[12];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;

/* Half h of the super-block (weights 128h .. 128h + 128) is ql[64h ..] and qh[32h ..]: its
 * weight 32s + l (l < 32) has its low four bits in the low (s < 2) or high (s >= 2) nibble of
 * ql[32 (s % 2) + l] and its top two in bits 2s and 2s + 1 of qh[l]. Weight i of the
 * super-block is d * scales[i / 16] * (q - 32). */
typedef struct {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    half d;
} block_q6_K;

_Static_assert(sizeof(block_q4_0) == 18 && sizeof(block_q4_1) == 20, "GGUF's block sizes");
_Static_assert(sizeof(block_q5_0) == 22 && sizeof(block_q5_1) == 24, "GGUF's block sizes");
_Static_assert(sizeof(block_q8_0) == 34 && sizeof(block_q4_K) == 144, "GGUF's block sizes");
_Static_assert(sizeof(block_q5_K) == 176 && sizeof(block_q6_K) == 210, "GGUF's block sizes");

/* ---- The reference form: group g (weights 32g .. 32g + 32) of a block as integers q with
 * w[i] = scale[i / 16] * q[i] + offset, what the plain C paths read. Where gguf computes
 * d * (q - zero), q is signed and the offset 0, so that widening rounds once as gguf does. */
typedef void unpack_fn(const void *block, int g, int8_t *q, float *scale, float *offset);

static void unpack_q4_0(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q4_0 *b = block;
    (void)g;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) - 8);
        q[j + QK / 2] = (int8_t)((b->qs[j] >> 4) - 8);
    }
    scale[0] = scale[1] = (float)b->d;
    *offset = 0.0f;
}

static void unpack_q4_1(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q4_1 *b = block;
    (void)g;
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)(b->qs[j] & 15);
        q[j + QK / 2] = (int8_t)(b->qs[j] >> 4);
    }
    scale[0] = scale[1] = (float)b->d;
    *offset = (float)b->m;
}

/* Q5_0's and Q5_1's 32 levels, 0..31. */
static void fives(const uint8_t *qs, const uint8_t *qh, int8_t *q) {
    uint32_t high;
    memcpy(&high, qh, sizeof high);
    for (int j = 0; j < QK / 2; j++) {
        q[j] = (int8_t)((qs[j] & 15) | ((high >> j) & 1) << 4);
        q[j + QK / 2] = (int8_t)((qs[j] >> 4) | ((high >> (j + QK / 2)) & 1) << 4);
    }
}

static void unpack_q5_0(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q5_0 *b = block;
    (void)g;
    fives(b->qs, b->qh, q);
    for (int j = 0; j < QK; j++) q[j] = (int8_t)(q[j] - 16);
    scale[0] = scale[1] = (float)b->d;
    *offset = 0.0f;
}

static void unpack_q5_1(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q5_1 *b = block;
    (void)g;
    fives(b->qs, b->qh, q);
    scale[0] = scale[1] = (float)b->d;
    *offset = (float)b->m;
}

static void unpack_q8_0(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q8_0 *b = block;
    (void)g;
    memcpy(q, b->qs, QK);
    scale[0] = scale[1] = (float)b->d;
    *offset = 0.0f;
}

/* Q4_K's and Q5_K's eight 6-bit scales and minimums. Bytes 0-3 hold scales 0-3 in their low
 * six bits and bytes 4-7 minimums 0-3; scale and minimum 4 + j are byte 8 + j's low and high
 * nibbles under the top two bits of bytes j and 4 + j. Four bytes at a time. */
static void k_scales(const uint8_t *packed, uint8_t *scales, uint8_t *mins) {
    uint32_t w[3], six = 0x3f3f3f3f, nibble = 0x0f0f0f0f, two = 0x03030303;
    memcpy(w, packed, sizeof w);
    uint32_t s[2] = {w[0] & six, (w[2] & nibble) | ((w[0] >> 6) & two) << 4};
    uint32_t m[2] = {w[1] & six, ((w[2] >> 4) & nibble) | ((w[1] >> 6) & two) << 4};
    memcpy(scales, s, sizeof s);
    memcpy(mins, m, sizeof m);
}

/* Q4_K and Q5_K: w = d * scale * q - dmin * min. */
static void unpack_k45(const block_q4_K *b, int g, float *scale, float *offset) {
    uint8_t scales[8], mins[8];
    k_scales(b->scales, scales, mins);
    scale[0] = scale[1] = (float)b->d * (float)scales[g];
    *offset = -((float)b->dmin * (float)mins[g]);
}

static void unpack_q4_k(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q4_K *b = block;
    const uint8_t *qs = b->qs + QK * (g / 2);
    for (int l = 0; l < QK; l++) q[l] = (int8_t)((qs[l] >> (4 * (g & 1))) & 15);
    unpack_k45(b, g, scale, offset);
}

static void unpack_q5_k(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q5_K *b = block;
    const uint8_t *qs = b->qs + QK * (g / 2);
    for (int l = 0; l < QK; l++)
        q[l] = (int8_t)(((qs[l] >> (4 * (g & 1))) & 15) | ((b->qh[l] >> g) & 1) << 4);
    unpack_k45(block, g, scale, offset); /* d, dmin, scales as Q4_K's */
}

static void unpack_q6_k(const void *block, int g, int8_t *q, float *scale, float *offset) {
    const block_q6_K *b = block;
    int half = g / 4, s = g % 4;
    const uint8_t *ql = b->ql + 64 * half + QK * (s & 1), *qh = b->qh + QK * half;
    for (int l = 0; l < QK; l++)
        q[l] = (int8_t)((((ql[l] >> (4 * (s >> 1))) & 15) | ((qh[l] >> (2 * s)) & 3) << 4) - 32);
    scale[0] = (float)b->d * (float)b->scales[2 * g];
    scale[1] = (float)b->d * (float)b->scales[2 * g + 1];
    *offset = 0.0f;
}

/* ---- The types wisp reads: weights and bytes per block, and the reference form of the
 * blocked ones (none for the float types, blocks of one weight). ---- */
typedef struct {
    int weights, bytes;
    unpack_fn *unpack;
} traits;

static const traits TYPES[] = {
    [TYPE_F32] = {1, 4, NULL},
    [TYPE_F16] = {1, 2, NULL},
    [TYPE_BF16] = {1, 2, NULL},
    [TYPE_Q4_0] = {QK, sizeof(block_q4_0), unpack_q4_0},
    [TYPE_Q4_1] = {QK, sizeof(block_q4_1), unpack_q4_1},
    [TYPE_Q5_0] = {QK, sizeof(block_q5_0), unpack_q5_0},
    [TYPE_Q5_1] = {QK, sizeof(block_q5_1), unpack_q5_1},
    [TYPE_Q8_0] = {QK, sizeof(block_q8_0), unpack_q8_0},
    [TYPE_Q4_K] = {QK_K, sizeof(block_q4_K), unpack_q4_k},
    [TYPE_Q5_K] = {QK_K, sizeof(block_q5_K), unpack_q5_k},
    [TYPE_Q6_K] = {QK_K, sizeof(block_q6_K), unpack_q6_k},
};

int64_t wisp_row_bytes(int type, int64_t k) {
    if (type < 0 || type >= (int)(sizeof TYPES / sizeof TYPES[0]) || TYPES[type].bytes == 0)
        return -1;
    if (k < 0 || k % TYPES[type].weights != 0) return -1;
    return k / TYPES[type].weights * TYPES[type].bytes;
}

/* ---- Quantizing: weights into Q4_1 or Q8_0, and the activations of a product. The scale and
 * minimum are gguf's, but each weight is rounded against them as stored (half floats), not
 * against the floats before rounding as gguf does: so every weight comes back within half a
 * step, and weights widened from such blocks quantize to the same bytes again. ---- */
static int clamp_round(float v, int lo, int hi) {
    int q = (int)lrintf(v);
    return q < lo ? lo : q > hi ? hi : q;
}

static void quantize_q4_1(const float *x, block_q4_1 *b) {
    float lo = x[0], hi = x[0];
    for (int i = 1; i < QK; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    b->d = (half)((hi - lo) / 15.0f);
    b->m = (half)lo;
    float d = (float)b->d, m = (float)b->m, inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < QK / 2; j++) {
        int a = clamp_round((x[j] - m) * inv, 0, 15);
        int c = clamp_round((x[j + QK / 2] - m) * inv, 0, 15);
        b->qs[j] = (uint8_t)(a | c << 4);
    }
}

static void quantize_q8_0(const float *x, block_q8_0 *b) {
    float most = 0.0f;
    for (int i = 0; i < QK; i++) most = fabsf(x[i]) > most ? fabsf(x[i]) : most;
    b->d = (half)(most / 127.0f);
    float d = (float)b->d, inv = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < QK; i++) b->qs[i] = (int8_t)clamp_round(x[i] * inv, -127, 127);
}

/* Rows of `w` ([n, k] floats, k a multiple of 32) into blocks of `type`: Q4_1 or Q8_0 (for any
 * other type nothing is written). */
void wisp_quantize(int type, const float *w, int64_t n, int64_t k, void *out) {
    if (type != TYPE_Q4_1 && type != TYPE_Q8_0) return;
    int64_t nb = k / QK;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n * nb; b++) {
        if (type == TYPE_Q4_1)
            quantize_q4_1(w + b * QK, (block_q4_1 *)out + b);
        else
            quantize_q8_0(w + b * QK, (block_q8_0 *)out + b);
    }
}

/* A product's activations: m rows of k floats `x`, and for blocked types the same rows as
 * bytes `q` (k a row) with per 32 a scale `d` and the sum `s` (d * sum of q), and the sums
 * `h` of each 16 (two per 32, for Q6_K). */
typedef struct {
    const float *x;
    const int8_t *q;
    const float *d, *s, *h;
    int64_t k;
} acts;

/* Rows r0 on of `a`. */
static acts from_row(const acts *a, int64_t r0) {
    int64_t nb = a->k / QK;
    if (!a->q) return (acts){a->x + r0 * a->k, NULL, NULL, NULL, NULL, a->k};
    return (acts){a->x + r0 * a->k, a->q + r0 * a->k, a->d + r0 * nb, a->s + r0 * nb,
                  a->h + r0 * 2 * nb, a->k};
}

/* 32 activations to 8 bits (nearest, ties to even). */
static void quantize_act(const float *x, int8_t *q, float *d_out, float *s_out, float *h_out) {
#ifdef VECTOR_KERNELS
    /* the same bytes as the loop below, eight lanes at a time */
    __m256 v[4], most = _mm256_setzero_ps(), sign = _mm256_set1_ps(-0.0f);
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        most = _mm256_max_ps(most, _mm256_andnot_ps(sign, v[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(most), _mm256_extractf128_ps(most, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    float d = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))) / 127.0f;
    __m256 inv = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i lanes[4];
    for (int i = 0; i < 4; i++) lanes[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inv));
    /* packing interleaves the 128-bit lanes; the permutation puts the 32 bytes back in order */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(lanes[0], lanes[1]),
                                       _mm256_packs_epi32(lanes[2], lanes[3]));
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, bytes);
    int sums[2];
    for (int i = 0; i < 2; i++) { /* of each 16 */
        __m256i both = _mm256_add_epi32(lanes[2 * i], lanes[2 * i + 1]);
        __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(both), _mm256_extracti128_si256(both, 1));
        t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4e));
        sums[i] = _mm_cvtsi128_si32(_mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xb1)));
    }
#else
    float most = 0.0f;
    for (int i = 0; i < QK; i++) most = fabsf(x[i]) > most ? fabsf(x[i]) : most;
    float d = most / 127.0f, inv = d != 0.0f ? 1.0f / d : 0.0f;
    int sums[2] = {0, 0};
    for (int i = 0; i < QK; i++) {
        q[i] = (int8_t)lrintf(x[i] * inv);
        sums[i / 16] += q[i];
    }
#endif
    *d_out = d;
    *s_out = d * (float)(sums[0] + sums[1]);
    h_out[0] = d * (float)sums[0];
    h_out[1] = d * (float)sums[1];
}

/* ---- The blocks on AVX2: any 32 weights as bytes, as the products and the widenings read
 * them. ---- */
#ifdef VECTOR_KERNELS
#define INLINE static inline __attribute__((always_inline))

INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 16 bytes of nibbles as 32 bytes: the low halves, then the high halves. */
INLINE __m256i nibbles(const uint8_t *qs) {
    __m128i raw = _mm_loadu_si128((const __m128i *)qs);
    __m256i both = _mm256_set_m128i(_mm_srli_epi16(raw, 4), raw);
    return _mm256_and_si256(both, _mm256_set1_epi8(15));
}

/* Q5_0's and Q5_1's fifth bits: byte i is 16 where bit i of qh is set. */
INLINE __m256i fifth_bits(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, sizeof bits);
    __m256i byte_of_bit = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                           2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), byte_of_bit);
    __m256i bit = _mm256_set1_epi64x(0x8040201008040201);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(16));
}

/* The levels of group g (weights 32g .. 32g + 32) of a block as bytes: Q8_0's signed, every
 * other type's 0..63, weighed by `factors32`, `factors` or `k_factors`. */
INLINE __m256i levels(int type, const char *block, int g) {
    switch (type) {
    case TYPE_Q4_0: return nibbles(((const block_q4_0 *)block)->qs);
    case TYPE_Q4_1: return nibbles(((const block_q4_1 *)block)->qs);
    case TYPE_Q5_0: {
        const block_q5_0 *b = (const block_q5_0 *)block;
        return _mm256_or_si256(nibbles(b->qs), fifth_bits(b->qh));
    }
    case TYPE_Q5_1: {
        const block_q5_1 *b = (const block_q5_1 *)block;
        return _mm256_or_si256(nibbles(b->qs), fifth_bits(b->qh));
    }
    case TYPE_Q8_0: return load32(((const block_q8_0 *)block)->qs);
    case TYPE_Q4_K:
    case TYPE_Q5_K: {
        const block_q5_K *b5 = (const block_q5_K *)block;
        const uint8_t *qs = type == TYPE_Q4_K ? ((const block_q4_K *)block)->qs : b5->qs;
        __m256i q = _mm256_srli_epi16(load32(qs + QK * (g / 2)), 4 * (g % 2));
        q = _mm256_and_si256(q, _mm256_set1_epi8(15));
        if (type == TYPE_Q4_K) return q;
        __m256i high = _mm256_slli_epi16(_mm256_srli_epi16(load32(b5->qh), g), 4);
        return _mm256_or_si256(q, _mm256_and_si256(high, _mm256_set1_epi8(16)));
    }
    default: {
        const block_q6_K *b = (const block_q6_K *)block;
        int half = g / 4, s = g % 4;
        __m256i low = load32(b->ql + 64 * half + QK * (s % 2)), qh = load32(b->qh + QK * half);
        low = _mm256_and_si256(_mm256_srli_epi16(low, 4 * (s / 2)), _mm256_set1_epi8(15));
        /* bits 2s and 2s + 1 of qh to bits 4 and 5 */
        qh = s < 2 ? _mm256_slli_epi16(qh, 4 - 2 * s) : _mm256_srli_epi16(qh, 2 * s - 4);
        return _mm256_or_si256(low, _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
    }
    }
}

/* A block of 32's scale d and offset c: w = d * q + c on `levels`' bytes. */
INLINE float factors32(int type, const char *block, float *c) {
    float d = (float)*(const half *)block; /* every block of 32 begins with d */
    switch (type) {
    case TYPE_Q4_0: *c = -8.0f * d; break;
    case TYPE_Q5_0: *c = -16.0f * d; break;
    case TYPE_Q4_1: *c = (float)((const block_q4_1 *)block)->m; break;
    case TYPE_Q5_1: *c = (float)((const block_q5_1 *)block)->m; break;
    default: *c = 0.0f; /* Q8_0 */
    }
    return d;
}

/* The scale and offset of each 16 of a block (w = scale * q + offset on `levels`' bytes); an
 * offset of -zero * scale (zero a power of two) makes the multiply-add round as gguf's
 * scale * (q - zero) does. */
static void factors(int type, const char *block, float *scale, float *offset) {
    if (type == TYPE_Q6_K) {
        const block_q6_K *b = (const block_q6_K *)block;
        for (int i = 0; i < QK_K / 16; i++) {
            scale[i] = (float)b->d * (float)b->scales[i];
            offset[i] = -32.0f * scale[i];
        }
    } else if (type == TYPE_Q4_K || type == TYPE_Q5_K) {
        const block_q4_K *b = (const block_q4_K *)block; /* Q5_K's first fields are the same */
        uint8_t sc[8], mn[8];
        k_scales(b->scales, sc, mn);
        for (int i = 0; i < QK_K / 16; i++) {
            scale[i] = (float)b->d * (float)sc[i / 2];
            offset[i] = -((float)b->dmin * (float)mn[i / 2]);
        }
    } else {
        scale[0] = scale[1] = factors32(type, block, &offset[0]);
        offset[1] = offset[0];
    }
}
#endif

/* ---- Widening ---- */
static float float_at(int type, const void *row, int64_t i) {
    if (type == TYPE_F32) return ((const float *)row)[i];
    if (type == TYPE_F16) return (float)((const half *)row)[i];
    uint32_t bits = (uint32_t)((const uint16_t *)row)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

#ifdef VECTOR_KERNELS
/* Eight float weights from i on. */
INLINE __m256 floats8(int type, const void *row, int64_t i) {
    if (type == TYPE_F32) return _mm256_loadu_ps((const float *)row + i);
    __m128i raw = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + i));
    if (type == TYPE_F16) return _mm256_cvtph_ps(raw);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

/* Weights [first, first + count) of a row as floats; first and count whole blocks. */
static void widen_span(int type, const void *row, int64_t first, int64_t count, float *y) {
    const traits *t = &TYPES[type];
    int64_t i = 0;
    if (!t->unpack) {
        for (; i + 8 <= count; i += 8) _mm256_storeu_ps(y + i, floats8(type, row, first + i));
        for (; i < count; i++) y[i] = float_at(type, row, first + i);
        return;
    }
    for (; i < count; i += t->weights) {
        const char *block = (const char *)row + (first + i) / t->weights * t->bytes;
        float scale[QK_K / 16], offset[QK_K / 16];
        factors(type, block, scale, offset);
        for (int g = 0; g < t->weights / QK; g++) {
            __m256i q = levels(type, block, g);
            __m128i halves[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
            for (int e = 0; e < 4; e++) { /* eight at a time; each 16 has its factors */
                __m128i part = e % 2 ? _mm_srli_si128(halves[e / 2], 8) : halves[e / 2];
                __m256 q8 = _mm256_cvtepi32_ps(type == TYPE_Q8_0 ? _mm256_cvtepi8_epi32(part)
                                                                 : _mm256_cvtepu8_epi32(part));
                int at = 2 * g + e / 2;
                __m256 w = _mm256_set1_ps(offset[at]);
                w = _mm256_fmadd_ps(q8, _mm256_set1_ps(scale[at]), w);
                _mm256_storeu_ps(y + i + QK * g + 8 * e, w);
            }
        }
    }
}
#else
/* Weights [first, first + count) of a row as floats; first and count whole blocks. */
static void widen_span(int type, const void *row, int64_t first, int64_t count, float *y) {
    const traits *t = &TYPES[type];
    if (!t->unpack) {
        for (int64_t i = 0; i < count; i++) y[i] = float_at(type, row, first + i);
        return;
    }
    for (int64_t i = 0; i < count; i += QK) {
        int64_t at = first + i;
        int8_t q[QK];
        float scale[2], offset;
        t->unpack((const char *)row + at / t->weights * t->bytes, (int)(at % t->weights / QK), q,
                  scale, &offset);
        for (int j = 0; j < QK / 2; j++) y[i + j] = scale[0] * (float)q[j] + offset;
        for (int j = QK / 2; j < QK; j++) y[i + j] = scale[1] * (float)q[j] + offset;
    }
}
#endif

/* Rows `rows[0..count)` of the [*, k] matrix in `w` as floats (all rows in order when NULL). */
void wisp_widen(int type, const void *w, const int64_t *rows, int64_t count, int64_t k,
                float *out) {
    int64_t row_bytes = wisp_row_bytes(type, k);
    if (row_bytes < 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++)
        widen_span(type, (const char *)w + (rows ? rows[i] : i) * row_bytes, 0, k, out + i * k);
}

/* Floats rounded to bf16 (nearest, ties to even; weights are finite). */
static void round_bf16(const float *y, int64_t n, uint16_t *out) {
    int64_t i = 0;
#ifdef VECTOR_KERNELS
    for (; i + 8 <= n; i += 8) {
        __m256i bits = _mm256_castps_si256(_mm256_loadu_ps(y + i));
        __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
        __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(bits, _mm256_add_epi32(odd, _mm256_set1_epi32(0x7fff))), 16);
        __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(rounded, rounded), 0x08);
        _mm_storeu_si128((__m128i *)(out + i), _mm256_castsi256_si128(packed));
    }
#endif
    for (; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &y[i], sizeof bits);
        out[i] = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
    }
}

/* The whole [n, k] matrix as bf16, widened 256 weights at a time. */
void wisp_widen_bf16(int type, const void *w, int64_t n, int64_t k, uint16_t *out) {
    int64_t row_bytes = wisp_row_bytes(type, k);
    if (row_bytes < 0) return;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        float y[QK_K];
        for (int64_t i = 0; i < k; i += QK_K) {
            int64_t count = k - i < QK_K ? k - i : QK_K;
            widen_span(type, (const char *)w + r * row_bytes, i, count, y);
            round_bf16(y, count, out + r * k + i);
        }
    }
}

/* ---- Products: one row of weights with `rows` (at most MAX_ROWS) rows of activations, each
 * weight read once for all of them. ---- */
#ifndef VECTOR_KERNELS
/* Every type through its reference form: per group, the integer sums of each 16. */
static void dot_plain(int type, const void *row, const acts *a, int rows, float *out) {
    const traits *t = &TYPES[type];
    for (int r = 0; r < rows; r++) out[r] = 0.0f;
    if (!t->unpack) {
        for (int64_t i = 0; i < a->k; i++) {
            float w = float_at(type, row, i);
            for (int r = 0; r < rows; r++) out[r] += w * a->x[r * a->k + i];
        }
        return;
    }
    int64_t nb = a->k / QK;
    for (int64_t b = 0; b < nb; b++) {
        int8_t q[QK];
        float scale[2], offset;
        t->unpack((const char *)row + b * QK / t->weights * t->bytes, (int)(b % (t->weights / QK)),
                  q, scale, &offset);
        for (int r = 0; r < rows; r++) {
            const int8_t *x = a->q + r * a->k + b * QK;
            int lo = 0, hi = 0;
            for (int j = 0; j < QK / 2; j++) {
                lo += q[j] * x[j];
                hi += q[j + QK / 2] * x[j + QK / 2];
            }
            float d = a->d[r * nb + b], s = a->s[r * nb + b];
            out[r] += d * (scale[0] * (float)lo + scale[1] * (float)hi) + offset * s;
        }
    }
}
#else
typedef void dot_fn(const void *row, const acts *a, int rows, float *out);

/* Each kernel is written once for any number of rows and inlined into `KERNEL`'s callers for
 * one row (a decode step), MAX_ROWS, and the rest, so that the accumulators are registers. */
#define KERNEL(name, body, type)                                                             \
    static void name(const void *row, const acts *a, int rows, float *out) {                 \
        if (rows == 1)                                                                       \
            body(type, row, a, 1, out);                                                      \
        else if (rows == MAX_ROWS)                                                           \
            body(type, row, a, MAX_ROWS, out);                                               \
        else                                                                                 \
            body(type, row, a, rows, out);                                                   \
    }

INLINE void prefetch_ahead(const void *p, int bytes) {
    for (int o = 0; o < bytes; o += 64) _mm_prefetch((const char *)p + PREFETCH + o, _MM_HINT_T0);
}

/* Sums of four byte products per 32-bit lane. No pair sum overflows 16 bits (w <= 128 and
 * |x| <= 127), so the VNNI instruction and the AVX2 pair agree exactly. */
INLINE __m256 dot_bytes(__m256i unsigned_w, __m256i signed_x) {
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

/* Signed weights: |w| times x with w's sign (|w| is shared by the rows of a call). */
INLINE __m256 dot_signed(__m256i w, __m256i x) {
    return dot_bytes(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/* The scales d and offsets c (w = d * q + c on `levels`' bytes) of the first n (at most 8) of
 * the blocks of 32 from `blocks` on, the rest 0: the half floats gathered into one vector
 * (lane by lane, not through memory, which would stall the loads that follow). */
INLINE __m256 factors8(int type, const char *blocks, int n, __m256 *offset) {
    __m128i d = _mm_setzero_si128(), m = _mm_setzero_si128();
    int bytes = TYPES[type].bytes;
#define LANE(j)                                                                               \
    if (j < n) {                                                                              \
        const uint16_t *h = (const uint16_t *)(blocks + j * bytes);                           \
        d = _mm_insert_epi16(d, h[0], j);                                                     \
        if (type == TYPE_Q4_1 || type == TYPE_Q5_1) m = _mm_insert_epi16(m, h[1], j);         \
    }
    LANE(0) LANE(1) LANE(2) LANE(3) LANE(4) LANE(5) LANE(6) LANE(7)
#undef LANE
    __m256 scale = _mm256_cvtph_ps(d);
    switch (type) {
    case TYPE_Q4_0: *offset = _mm256_mul_ps(scale, _mm256_set1_ps(-8.0f)); break;
    case TYPE_Q5_0: *offset = _mm256_mul_ps(scale, _mm256_set1_ps(-16.0f)); break;
    default: *offset = _mm256_cvtph_ps(m); /* Q4_1's and Q5_1's minimums; 0 for Q8_0 */
    }
    return scale;
}

/* Block j of `blocks` into the accumulators, times each row's factor f[r][j]. */
INLINE void step32(int type, const char *blocks, int j, const int8_t *x, int64_t k,
                   float (*f)[8], int rows, __m256 *acc) {
    __m256i w = levels(type, blocks + j * TYPES[type].bytes, 0);
    for (int r = 0; r < rows; r++) {
        __m256i xs = load32(x + r * k + j * QK);
        __m256 p = type == TYPE_Q8_0 ? dot_signed(w, xs) : dot_bytes(w, xs);
        acc[r] = _mm256_fmadd_ps(p, _mm256_broadcast_ss(&f[r][j]), acc[r]);
    }
}

/* Blocks of 32, eight a turn: their scales times each row's activation scales as one vector
 * per row, and their offsets times the rows' sums s in one multiply-add; then each block with
 * every row, two a turn into two sets of accumulators, so that no multiply-add waits on the
 * one before it. */
INLINE void dot32(int type, const void *row, const acts *a, int rows, float *out) {
    __m256 acc[2][MAX_ROWS], offsets[MAX_ROWS];
    float f[MAX_ROWS][8];
    for (int r = 0; r < rows; r++) acc[0][r] = acc[1][r] = offsets[r] = _mm256_setzero_ps();
    int64_t nb = a->k / QK;
    int bytes = TYPES[type].bytes;
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int64_t b0 = 0; b0 < nb; b0 += 8) {
        int n = nb - b0 < 8 ? (int)(nb - b0) : 8;
        const char *blocks = (const char *)row + b0 * bytes;
        __m256 offset, scale = factors8(type, blocks, n, &offset);
        __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
        for (int r = 0; r < rows; r++) {
            int64_t at = r * nb + b0;
            _mm256_storeu_ps(f[r], _mm256_mul_ps(scale, _mm256_maskload_ps(a->d + at, live)));
            __m256 sums = _mm256_maskload_ps(a->s + at, live);
            if (type != TYPE_Q8_0) offsets[r] = _mm256_fmadd_ps(offset, sums, offsets[r]);
        }
        const int8_t *x = a->q + b0 * QK;
        int j = 0;
        for (; j + 1 < n; j += 2) {
            _mm_prefetch(blocks + j * bytes + PREFETCH, _MM_HINT_T0);
            step32(type, blocks, j, x, a->k, f, rows, acc[0]);
            step32(type, blocks, j + 1, x, a->k, f, rows, acc[1]);
        }
        if (j < n) step32(type, blocks, j, x, a->k, f, rows, acc[0]);
    }
    for (int r = 0; r < rows; r++)
        out[r] = hsum(_mm256_add_ps(_mm256_add_ps(acc[0][r], acc[1][r]), offsets[r]));
}

/* Lanes 4h .. 4h + 3 of a vector, each twice: factors per 32 as factors per 16. */
INLINE __m256i twice(int h) {
    return _mm256_setr_epi32(4 * h, 4 * h, 4 * h + 1, 4 * h + 1, 4 * h + 2, 4 * h + 2, 4 * h + 3,
                             4 * h + 3);
}

/* The scales and offsets of a K-quant super-block (w = scale * q + offset on `levels`' bytes):
 * Q4_K's and Q5_K's eight, one per 32, as a vector each; Q6_K's sixteen, one per 16, as two. */
INLINE void k_factors(int type, const char *block, __m256 *scale, __m256 *offset) {
    if (type == TYPE_Q6_K) {
        const block_q6_K *b = (const block_q6_K *)block;
        for (int h = 0; h < 2; h++) {
            __m128i eight = _mm_loadl_epi64((const __m128i *)(b->scales + 8 * h));
            __m256 scales = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight));
            scale[h] = _mm256_mul_ps(_mm256_set1_ps((float)b->d), scales);
            offset[h] = _mm256_mul_ps(_mm256_set1_ps(-32.0f), scale[h]);
        }
        return;
    }
    const block_q4_K *b = (const block_q4_K *)block; /* Q5_K's first fields are the same */
    uint8_t sc[8], mn[8];
    k_scales(b->scales, sc, mn);
    __m256 scales = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)sc)));
    __m256 mins = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)mn)));
    scale[0] = _mm256_mul_ps(scales, _mm256_set1_ps((float)b->d));
    offset[0] = _mm256_mul_ps(mins, _mm256_set1_ps(-(float)b->dmin));
}

/* Group g of a super-block into the accumulators, times its factor (lane g) or, for Q6_K, its
 * two (lanes 2s and 2s + 1 of its half's vector). */
INLINE void k_step(int type, const char *block, int g, __m256 (*factors)[2], const int8_t *x,
                   int64_t k, int rows, __m256 *acc) {
    __m256i w = levels(type, block, g);
    int s = g % 4, h = type == TYPE_Q6_K ? g / 4 : 0;
    __m256i pick = type == TYPE_Q6_K ? _mm256_setr_epi32(2 * s, 2 * s, 2 * s, 2 * s, 2 * s + 1,
                                                         2 * s + 1, 2 * s + 1, 2 * s + 1)
                                     : _mm256_set1_epi32(g);
    for (int r = 0; r < rows; r++) {
        __m256 f = _mm256_permutevar8x32_ps(factors[r][h], pick);
        acc[r] = _mm256_fmadd_ps(dot_bytes(w, load32(x + r * k + QK * g)), f, acc[r]);
    }
}

/* Q4_K, Q5_K and Q6_K. Per super-block and row: the factors scale * (activation d) as vectors,
 * and the offsets times the activations' sums in one or two multiply-adds (Q4_K's minimums per
 * 32 with s, Q6_K's -32s per 16 with h); the 32s go to two sets of accumulators in turn. */
INLINE void dot_k(int type, const void *row, const acts *a, int rows, float *out) {
    __m256 acc[2][MAX_ROWS], offsets[MAX_ROWS], factors[MAX_ROWS][2];
    for (int r = 0; r < rows; r++) acc[0][r] = acc[1][r] = offsets[r] = _mm256_setzero_ps();
    int64_t nb = a->k / QK;
    int bytes = TYPES[type].bytes;
    for (int64_t sb = 0; sb < a->k / QK_K; sb++) {
        const char *block = (const char *)row + sb * bytes;
        prefetch_ahead(block, bytes);
        __m256 scale[2], offset[2];
        k_factors(type, block, scale, offset);
        for (int r = 0; r < rows; r++) {
            int64_t at = r * nb + sb * (QK_K / QK);
            __m256 ad = _mm256_loadu_ps(a->d + at);
            if (type != TYPE_Q6_K) {
                factors[r][0] = _mm256_mul_ps(scale[0], ad);
                offsets[r] = _mm256_fmadd_ps(offset[0], _mm256_loadu_ps(a->s + at), offsets[r]);
                continue;
            }
            for (int h = 0; h < 2; h++) {
                factors[r][h] = _mm256_mul_ps(scale[h], _mm256_permutevar8x32_ps(ad, twice(h)));
                __m256 sums = _mm256_loadu_ps(a->h + 2 * at + 8 * h);
                offsets[r] = _mm256_fmadd_ps(offset[h], sums, offsets[r]);
            }
        }
        const int8_t *x = a->q + sb * QK_K;
#pragma GCC unroll 4
        for (int g = 0; g < QK_K / QK; g += 2) {
            k_step(type, block, g, factors, x, a->k, rows, acc[0]);
            k_step(type, block, g + 1, factors, x, a->k, rows, acc[1]);
        }
    }
    for (int r = 0; r < rows; r++)
        out[r] = hsum(_mm256_add_ps(acc[0][r], acc[1][r])) + hsum(offsets[r]);
}

/* F32, F16 and BF16 on the float activations, 16 weights a turn. */
INLINE void dot_floats(int type, const void *row, const acts *a, int rows, float *out) {
    __m256 acc[2][MAX_ROWS];
    for (int r = 0; r < rows; r++) acc[0][r] = acc[1][r] = _mm256_setzero_ps();
    int64_t k = a->k, i = 0;
    for (; i + 16 <= k; i += 16) {
        _mm_prefetch((const char *)row + i * TYPES[type].bytes + PREFETCH, _MM_HINT_T0);
        __m256 w0 = floats8(type, row, i), w1 = floats8(type, row, i + 8);
        for (int r = 0; r < rows; r++) {
            acc[0][r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a->x + r * k + i), acc[0][r]);
            acc[1][r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a->x + r * k + i + 8), acc[1][r]);
        }
    }
    for (int r = 0; r < rows; r++) out[r] = hsum(_mm256_add_ps(acc[0][r], acc[1][r]));
    for (; i < k; i++) {
        float w = float_at(type, row, i);
        for (int r = 0; r < rows; r++) out[r] += w * a->x[r * k + i];
    }
}

KERNEL(dot_f32, dot_floats, TYPE_F32)
KERNEL(dot_f16, dot_floats, TYPE_F16)
KERNEL(dot_bf16, dot_floats, TYPE_BF16)
KERNEL(dot_q4_0, dot32, TYPE_Q4_0)
KERNEL(dot_q4_1, dot32, TYPE_Q4_1)
KERNEL(dot_q5_0, dot32, TYPE_Q5_0)
KERNEL(dot_q5_1, dot32, TYPE_Q5_1)
KERNEL(dot_q8_0, dot32, TYPE_Q8_0)
KERNEL(dot_q4_k, dot_k, TYPE_Q4_K)
KERNEL(dot_q5_k, dot_k, TYPE_Q5_K)
KERNEL(dot_q6_k, dot_k, TYPE_Q6_K)

static dot_fn *const KERNELS[] = {
    [TYPE_F32] = dot_f32,   [TYPE_F16] = dot_f16,   [TYPE_BF16] = dot_bf16,
    [TYPE_Q4_0] = dot_q4_0, [TYPE_Q4_1] = dot_q4_1, [TYPE_Q5_0] = dot_q5_0,
    [TYPE_Q5_1] = dot_q5_1, [TYPE_Q8_0] = dot_q8_0, [TYPE_Q4_K] = dot_q4_k,
    [TYPE_Q5_K] = dot_q5_k, [TYPE_Q6_K] = dot_q6_k,
};
#endif

static void dot(int type, const void *row, const acts *a, int rows, float *out) {
#ifdef VECTOR_KERNELS
    KERNELS[type](row, a, rows, out);
#else
    dot_plain(type, row, a, rows, out);
#endif
}

/* y[m, N] = x[m, k] @ concat(matrices)^T, N their rows together, on `threads` threads: one
 * parallel region in which the threads share out each matrix's rows in turn, none waiting at
 * the end of one. Each row of weights is read once per MAX_ROWS rows of x; x is quantized to 8
 * bits per 32 once, if any matrix is blocked. Nothing is written if a matrix's type is not
 * read or k is not whole blocks of it. */
void wisp_multiply(const wisp_matrix *matrices, int count, int64_t k, const float *x, int64_t m,
                   float *y, int threads) {
    int64_t n = 0;
    int blocked = 0;
    for (int i = 0; i < count; i++) {
        if (wisp_row_bytes(matrices[i].type, k) < 0) return;
        n += matrices[i].rows;
        blocked |= TYPES[matrices[i].type].unpack != NULL;
    }
    acts all = {x, NULL, NULL, NULL, NULL, k};
    int8_t *q = NULL;
    if (blocked) {
        int64_t nb = k / QK;
        q = malloc((size_t)(m * k) + 4 * (size_t)(m * nb) * sizeof(float));
        if (!q) return;
        float *d = (float *)(q + m * k), *s = d + m * nb, *h = s + m * nb; /* k: whole 32s */
        for (int64_t b = 0; b < m * nb; b++)
            quantize_act(x + b * QK, q + b * QK, d + b, s + b, h + 2 * b);
        all = (acts){x, q, d, s, h, k};
    }
#pragma omp parallel num_threads(threads > 0 ? threads : 1)
    for (int64_t i = 0, first = 0; i < count; first += matrices[i++].rows) {
        int type = matrices[i].type;
        int64_t row_bytes = wisp_row_bytes(type, k);
#pragma omp for schedule(static) nowait
        for (int64_t j = 0; j < matrices[i].rows; j++) {
            const char *row = (const char *)matrices[i].data + j * row_bytes;
            for (int64_t r0 = 0; r0 < m; r0 += MAX_ROWS) {
                int rows = m - r0 < MAX_ROWS ? (int)(m - r0) : MAX_ROWS;
                const acts part = from_row(&all, r0);
                float out[MAX_ROWS];
                dot(type, row, &part, rows, out);
                for (int r = 0; r < rows; r++) y[(r0 + r) * n + first + j] = out[r];
            }
        }
    }
    free(q);
}
