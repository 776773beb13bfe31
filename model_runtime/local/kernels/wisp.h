/* What the kernel files share: GGUF's block types by their ggml numbers, the matrices the
 * products take, and the products' and widenings' entry points (quants.c), used by the decoder
 * layer (layer.c). */
#ifndef WISP_H
#define WISP_H
#include <stdint.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

/* ggml's numbers for the block types a GGUF tensor may hold. */
enum {
    TYPE_F32 = 0,
    TYPE_F16 = 1,
    TYPE_Q4_0 = 2,
    TYPE_Q4_1 = 3,
    TYPE_Q5_0 = 6,
    TYPE_Q5_1 = 7,
    TYPE_Q8_0 = 8,
    TYPE_Q4_K = 12,
    TYPE_Q5_K = 13,
    TYPE_Q6_K = 14,
    TYPE_BF16 = 30,
};

/* One weight matrix of `rows` rows, stored row after row in blocks of `type`. */
typedef struct {
    int type;
    const void *data;
    int64_t rows;
} wisp_matrix;

/* Bytes of one row of k weights of `type`; -1 for a type not read or k not whole blocks. */
int64_t wisp_row_bytes(int type, int64_t k);
/* y[m, n0 + n1 + ...] = x[m, k] @ concat(matrices)^T: matrix i's outputs follow matrix i-1's. */
void wisp_multiply(const wisp_matrix *matrices, int count, int64_t k, const float *x, int64_t m,
                   float *y, int threads);
/* Rows of w ([n, k] floats, k whole blocks of 32) into blocks of Q4_1 or Q8_0 (of any other
 * type nothing is written). */
void wisp_quantize(int type, const float *w, int64_t n, int64_t k, void *out);
/* Rows rows[0..count) of a [*, k] matrix of `type` as floats (all rows in order when NULL). */
void wisp_widen(int type, const void *w, const int64_t *rows, int64_t count, int64_t k, float *out);
/* The whole [n, k] matrix of `type` as bf16 (nearest, ties to even). */
void wisp_widen_bf16(int type, const void *w, int64_t n, int64_t k, uint16_t *out);

#ifdef __AVX2__
static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif
#endif
