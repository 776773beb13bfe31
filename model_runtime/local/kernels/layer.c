/* One decoder layer of a Llama-shaped model for a decode step or a short chunk, in place.
 *
 * The layer's products run on its matrices as the GGUF file stores them (`wisp_multiply`,
 * quants.c), each in its own block type. Keys and values are cached as half floats.
 *
 * In order: the half-float dot products, `attend` (one query head over the cache, and
 * `wisp_attend` for tests), the norm and the rotation, and `wisp_decode_layer`.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wisp.h"

/* The decode attention reads the cached keys and values this many bytes ahead (further, or into
 * L2 only, measured slower on the Intel Xeon). */
#define ATTEND_AHEAD 2048
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

/* Where position p's key (or value) is: positions below `split` in the first cache, the rest
 * in the second (a candidate's own positions after the prompt that all candidates share). */
static inline const _Float16 *at(const _Float16 *const kv[2], int64_t split, int64_t p, int64_t d) {
    return kv[p >= split] + p * d;
}

/* One query head's attention over `length` cached positions: o = softmax(q.k * scale) . v, the
 * keys and values of positions below `split` from k[0] and v[0], the rest from k[1] and v[1].
 * With AVX2 eight positions' scores at a time, the exponentials eight at a time, and the
 * weighted values summed in registers for heads of up to 128 dimensions. */
static void attend(const float *q, const _Float16 *const k[2], const _Float16 *const v[2],
                   int64_t split, int64_t length, int64_t d, float scale, float *scores, float *o) {
    int64_t p = 0;
    float top = -INFINITY, total = 0.0f;
#ifdef WIDE_HALVES
    int wide = d % 8 == 0 && d <= 128;
    if (wide) {
        __m256 most = _mm256_set1_ps(-INFINITY);
        for (; p + 8 <= length; p += 8) {
            __m256 acc[8];
            const char *ahead = (const char *)at(k, split, p, d) + ATTEND_AHEAD;
            for (int64_t b = 0; b < 8 * d * 2; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
            for (int j = 0; j < 8; j++) {
                const _Float16 *key = at(k, split, p + j, d);
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
        scores[rest] = dot(q, at(k, split, rest, d), d) * scale;
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
            const _Float16 *value = at(v, split, p, d);
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
    for (p = 0; p < length; p++) add_scaled(o, at(v, split, p, d), scores[p] / total, d);
}

/* `attend` on its own (for tests); 0 when there was no memory for the scores. */
int wisp_attend(const float *q, const _Float16 *k, const _Float16 *v, int64_t length, int64_t d,
                float scale, float *out) {
    float *scores = malloc(sizeof(float) * (size_t)(length > 0 ? length : 1));
    if (!scores) return 0;
    const _Float16 *keys[2] = {k, k}, *values[2] = {v, v};
    attend(q, keys, values, length, length, d, scale, scores, out);
    free(scores);
    return 1;
}

static void rms_norm(const float *x, const float *w, float eps, int64_t n, float *y) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    float scale = 1.0f / sqrtf(sum / (float)n + eps);
    for (int64_t i = 0; i < n; i++) y[i] = w[i] * (x[i] * scale);
}

/* The rotation of one head by the angles whose cos/sin are given (cos[i] = cos[i + dim/2]): the
 * two halves of the head turn together, or with `pairs` (GGUF's llama files, whose query and key
 * rows the converter interleaved) neighbouring weights do. */
static void rotate(float *x, const float *cos, const float *sin, int64_t dim, int pairs) {
    int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++) {
        int64_t a = pairs ? 2 * i : i, b = pairs ? 2 * i + 1 : i + half;
        float u = x[a], v = x[b];
        x[a] = u * cos[i] - v * sin[i];
        x[b] = v * cos[i] + u * sin[i];
    }
}

typedef struct {
    wisp_matrix qkv[3], out, gate_up[2], down; /* each in the block type the file gave it */
    const float *qkv_bias;                     /* NULL without */
    const float *norm_in, *norm_mid;
    float eps_in, eps_mid;
    int64_t hidden, inter, heads, kv_heads, dim;
    int pairs; /* rotate neighbouring weights (see `rotate`) */
} layer_weights;

/* hidden[m, h] += attention and MLP of layer `w`, for m rows that are either
 * - one new position `pos` of m sequences (`sequence` 0): row r's key and value go to position
 *   `pos` of sequence r in `keys`/`values` ([m, kv_heads, capacity, dim] half floats each), and
 *   it attends over 0..pos, its positions below `shared` being sequence 0's (the prompt the
 *   rows share, cached once); `cos`/`sin` hold one position's angles; or
 * - m new positions pos..pos+m-1 of sequence 0 (`sequence` 1: a short chunk, a draft to check):
 *   row r goes to position pos+r and attends over 0..pos+r; `cos`/`sin` hold m rows. */
void wisp_decode_layer(const layer_weights *w, float *hidden, int64_t m, const float *cos,
                       const float *sin, _Float16 *keys, _Float16 *values, int64_t capacity,
                       int64_t pos, int64_t shared, float scale, int threads, int sequence) {
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
    wisp_multiply(w->qkv, 3, h, x, m, qkv, threads);
    for (int64_t r = 0; r < m; r++) {
        float *row = qkv + r * width;
        if (w->qkv_bias)
            for (int64_t i = 0; i < width; i++) row[i] += w->qkv_bias[i];
        const float *c = cos + (sequence ? r * d : 0), *s = sin + (sequence ? r * d : 0);
        for (int64_t head = 0; head < w->heads + w->kv_heads; head++) rotate(row + head * d, c, s, d, w->pairs);
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
    int64_t tasks = m * w->heads, split = sequence ? 0 : shared;
    /* On threads from about a hundred cached positions (nine heads): at 4096, the bundled
     * model's steps after 200-455 positions ran their attention on one thread, 0.3-0.6 ms
     * slower a step on the Intel Xeon. The tasks go by key/value head, so that the rows' query
     * heads that read the same shared keys and values follow each other on one thread. */
#pragma omp parallel for schedule(static) num_threads(team) if (tasks * length >= 1024)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t g = t / (m * group), r = t % (m * group) / group, head = g * group + t % group;
        int64_t b = sequence ? 0 : r, seen = sequence ? pos + r + 1 : pos + 1;
        const float *q = qkv + r * width + head * d;
        size_t first = (size_t)(g * capacity * d), own = (size_t)(b * w->kv_heads * capacity * d);
        const _Float16 *k[2] = {keys + first, keys + own + first};
        const _Float16 *v[2] = {values + first, values + own + first};
        float *o = att + r * nq + head * d;
        float *scores = malloc(sizeof(float) * (size_t)seen);
        if (!scores) continue;
        attend(q, k, v, split, seen, d, scale, scores, o);
        free(scores);
    }
    wisp_multiply(&w->out, 1, nq, att, m, out, threads);
    for (int64_t i = 0; i < m * h; i++) hidden[i] += out[i];
    for (int64_t r = 0; r < m; r++) rms_norm(hidden + r * h, w->norm_mid, w->eps_mid, h, x + r * h);
    wisp_multiply(w->gate_up, 2, h, x, m, mid, threads);
    for (int64_t r = 0; r < m; r++) {
        float *gate = mid + r * 2 * w->inter, *up = gate + w->inter;
        for (int64_t i = 0; i < w->inter; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
        if (r) memmove(mid + r * w->inter, gate, sizeof(float) * (size_t)w->inter);
    }
    wisp_multiply(&w->down, 1, w->inter, mid, m, out, threads);
    for (int64_t i = 0; i < m * h; i++) hidden[i] += out[i];
done:
    free(x);
    free(qkv);
    free(att);
    free(mid);
    free(out);
}
