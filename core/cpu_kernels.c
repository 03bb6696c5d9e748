/* llmkit's own CPU kernels for a decode step (core/cpu_kernels.py builds, loads and explains them): the product of
 * float32 rows with weights in GGUF's Q8_0 layout (int8 in blocks of 32 inputs, a float32 scale each), for the
 * output projection; and attention of one query per head over a KV cache. */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define GROUP 32
#define MAX_ROWS 8 /* rows per pass over the weights: an accumulator each, in registers */

static inline __m512 widen(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

/* y[r][row] for rows r0 .. r0 + rows - 1 of x, one weight row; `rows` a constant where inlined */
static inline void dot_rows(const float *x, int64_t k, const int8_t *w, const float *scale, float *y, int64_t n,
                            int64_t r0, const int rows, int64_t row) {
    __m512 total[MAX_ROWS];
    for (int r = 0; r < rows; r++) total[r] = _mm512_setzero_ps();
    for (int64_t b = 0; b < k / GROUP; b++) {
        __m512 w0 = widen(w + b * GROUP), w1 = widen(w + b * GROUP + 16), s = _mm512_set1_ps(scale[b]);
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (r0 + r) * k + b * GROUP;
            __m512 block = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xr + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(xr)));
            total[r] = _mm512_fmadd_ps(block, s, total[r]);
        }
    }
    for (int r = 0; r < rows; r++) y[(r0 + r) * n + row] = _mm512_reduce_add_ps(total[r]);
}

#define DOT_ROWS(count) dot_rows(x, k, q + row * k, scales + row * (k / GROUP), y, n, r0, count, row)

/* y (m, n) = x (m, k) @ W^T, W[i][j] = q[i][j] * scales[i][j / 32]; k a multiple of 32; on `threads` threads */
void int8_matmul(const float *x, int64_t m, int64_t k, const int8_t *q, const float *scales, int64_t n, float *y,
                 int threads) {
    for (int64_t r0 = 0; r0 < m; r0 += MAX_ROWS) {
        int64_t rows = m - r0 < MAX_ROWS ? m - r0 : MAX_ROWS;
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t row = 0; row < n; row++) {
            switch (rows) { /* a loop per row count, each with its accumulators in registers */
            case 1: DOT_ROWS(1); break;
            case 2: DOT_ROWS(2); break;
            case 3: DOT_ROWS(3); break;
            case 4: DOT_ROWS(4); break;
            case 5: DOT_ROWS(5); break;
            case 6: DOT_ROWS(6); break;
            case 7: DOT_ROWS(7); break;
            default: DOT_ROWS(8); break;
            }
        }
    }
}

/* Attention of one query per head over a KV cache (a decode step of one sequence) */

#define KEYS_PER_TASK 256 /* keys a task scores at once; longer caches are split, the parts merged by their maxima */
#define MAX_DIM 256
#define MAX_REP 16

static inline __m512 bf16_to_f32(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

/* e^x for x <= 0, to float32 precision: 2^(x log2 e) = 2^n * 2^f, |f| <= 1/2, 2^f by a degree-6 polynomial */
static inline __m512 exp_nonpositive(__m512 x) {
    __m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(-150.0f));
    __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.69314718055994531f)); /* f ln 2 */
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* One task: the n_rep query heads of kv head g against keys [first, first + count): per head its largest score,
 * the sum of e^(score - largest) and the e^(score - largest)-weighted sum of the values (float32), into part. */
static inline void attend_part(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t n_rep,
                               int64_t first, int64_t count, const int64_t dim, float scale, float *part) {
    float scores[MAX_REP][KEYS_PER_TASK + 16];
    __m512 query[MAX_REP][MAX_DIM / 16];
    const int64_t chunks = dim / 16;
    for (int64_t r = 0; r < n_rep; r++)
        for (int64_t c = 0; c < chunks; c++)
            query[r][c] = _mm512_mul_ps(bf16_to_f32(_mm256_loadu_si256((const __m256i *)(q + r * dim + 16 * c))),
                                        _mm512_set1_ps(scale));
    for (int64_t s = 0; s < count; s++) {
        const uint16_t *key = k + (first + s) * dim;
        __m512 row[MAX_DIM / 16];
        for (int64_t c = 0; c < chunks; c++) row[c] = bf16_to_f32(_mm256_loadu_si256((const __m256i *)(key + 16 * c)));
        for (int64_t r = 0; r < n_rep; r++) {
            __m512 dot = _mm512_mul_ps(query[r][0], row[0]);
            for (int64_t c = 1; c < chunks; c++) dot = _mm512_fmadd_ps(query[r][c], row[c], dot);
            scores[r][s] = _mm512_reduce_add_ps(dot);
        }
    }
    for (int64_t r = 0; r < n_rep; r++) {
        float *out = part + r * (dim + 2);
        __m512 top = _mm512_set1_ps(-INFINITY);
        int64_t s = 0;
        for (; s + 16 <= count; s += 16) top = _mm512_max_ps(top, _mm512_loadu_ps(scores[r] + s));
        float largest = _mm512_reduce_max_ps(top);
        for (; s < count; s++) largest = scores[r][s] > largest ? scores[r][s] : largest;
        __m512 total = _mm512_setzero_ps();
        for (s = 0; s < count; s += 16) {
            __mmask16 valid = count - s >= 16 ? 0xFFFF : (__mmask16)((1u << (count - s)) - 1);
            __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(valid, scores[r] + s), _mm512_set1_ps(largest)));
            e = _mm512_maskz_mov_ps(valid, e);
            _mm512_storeu_ps(scores[r] + s, e);
            total = _mm512_add_ps(total, e);
        }
        out[0] = largest;
        out[1] = _mm512_reduce_add_ps(total);
    }
    __m512 acc[MAX_REP][MAX_DIM / 16];
    for (int64_t r = 0; r < n_rep; r++) for (int64_t c = 0; c < chunks; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t s = 0; s < count; s++) {
        const uint16_t *value = v + (first + s) * dim;
        __m512 row[MAX_DIM / 16];
        for (int64_t c = 0; c < chunks; c++) row[c] = bf16_to_f32(_mm256_loadu_si256((const __m256i *)(value + 16 * c)));
        for (int64_t r = 0; r < n_rep; r++) {
            __m512 p = _mm512_set1_ps(scores[r][s]);
            for (int64_t c = 0; c < chunks; c++) acc[r][c] = _mm512_fmadd_ps(p, row[c], acc[r][c]);
        }
    }
    for (int64_t r = 0; r < n_rep; r++)
        for (int64_t c = 0; c < chunks; c++) _mm512_storeu_ps(part + r * (dim + 2) + 2 + 16 * c, acc[r][c]);
}

/* out (heads, dim) bfloat16 = softmax(q k^T / sqrt(dim)) v for one query per head, all `length` keys visible;
 * q (heads, dim) bfloat16; k, v bfloat16, kv head g's keys at k + g * kv_stride, (length, dim) contiguous; query
 * head h reads kv head h / (heads / kv_heads). dim a multiple of 16, at most MAX_DIM; heads / kv_heads at most
 * MAX_REP. Returns 0, or -1 when the scratch memory could not be allocated. */
int attend_one(const uint16_t *q, const uint16_t *k, const uint16_t *v, int64_t heads, int64_t kv_heads,
               int64_t length, int64_t kv_stride, int64_t dim, uint16_t *out, int threads) {
    int64_t n_rep = heads / kv_heads, parts = (length + KEYS_PER_TASK - 1) / KEYS_PER_TASK;
    float scale = 1.0f / sqrtf((float)dim);
    float *scratch = malloc(sizeof(float) * kv_heads * parts * n_rep * (dim + 2));
    if (!scratch) return -1;
    #pragma omp parallel for schedule(static) collapse(2) num_threads(threads)
    for (int64_t g = 0; g < kv_heads; g++)
        for (int64_t p = 0; p < parts; p++) {
            int64_t first = p * KEYS_PER_TASK, count = length - first < KEYS_PER_TASK ? length - first : KEYS_PER_TASK;
            float *part = scratch + (g * parts + p) * n_rep * (dim + 2);
            const uint16_t *qg = q + g * n_rep * dim, *kg = k + g * kv_stride, *vg = v + g * kv_stride;
            switch (dim) { /* the common head sizes with their loops unrolled */
            case 64: attend_part(qg, kg, vg, n_rep, first, count, 64, scale, part); break;
            case 128: attend_part(qg, kg, vg, n_rep, first, count, 128, scale, part); break;
            default: attend_part(qg, kg, vg, n_rep, first, count, dim, scale, part); break;
            }
        }
    for (int64_t h = 0; h < heads; h++) {
        int64_t g = h / n_rep, r = h % n_rep;
        float largest = -INFINITY, total = 0, merged[MAX_DIM] = {0};
        for (int64_t p = 0; p < parts; p++) {
            float m = scratch[((g * parts + p) * n_rep + r) * (dim + 2)];
            largest = m > largest ? m : largest;
        }
        for (int64_t p = 0; p < parts; p++) {
            const float *part = scratch + ((g * parts + p) * n_rep + r) * (dim + 2);
            float weight = expf(part[0] - largest);
            total += weight * part[1];
            for (int64_t d = 0; d < dim; d++) merged[d] += weight * part[2 + d];
        }
        for (int64_t c = 0; c < dim / 16; c++) {
            __m512 y = _mm512_div_ps(_mm512_loadu_ps(merged + 16 * c), _mm512_set1_ps(total));
            _mm256_storeu_si256((__m256i *)(out + h * dim + 16 * c), (__m256i)_mm512_cvtneps_pbh(y));
        }
    }
    free(scratch);
    return 0;
}

/* W^T (k, n) bfloat16 from torch's CPU int4 packing of an (n, k) weight (core.quant.unpack_int4 says how it is
 * laid out): w = (q - 8) * scale + zero, in float32 then rounded once; scales_and_zeros (k / 32, n, 2) bfloat16;
 * n a multiple of 64. */
void unpack_int4(const uint8_t *packed, const uint16_t *scales_and_zeros, int64_t k, int64_t n, uint16_t *out,
                 int threads) {
    #pragma omp parallel for schedule(static) collapse(2) num_threads(threads)
    for (int64_t g = 0; g < k / GROUP; g++)
        for (int64_t b = 0; b < n / 64; b++) {
            __m512 scale[4], offset[4]; /* outputs 64b + 16i .. + 15 */
            for (int i = 0; i < 4; i++) {
                __m512i pairs = _mm512_loadu_si512(scales_and_zeros + 2 * (g * n + 64 * b + 16 * i));
                scale[i] = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
                __m512 zero = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32((int)0xFFFF0000)));
                offset[i] = _mm512_fnmadd_ps(_mm512_set1_ps(8.0f), scale[i], zero);
            }
            for (int64_t j = g * GROUP; j < (g + 1) * GROUP; j++) {
                __m256i bytes = _mm256_loadu_si256((const __m256i *)(packed + (b * k + j) * 32));
                __m256i low = _mm256_and_si256(bytes, _mm256_set1_epi8(0x0F));
                __m256i high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0F));
                __m128i quarters[4] = {_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1),
                                       _mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1)};
                __m512 w[4];
                for (int i = 0; i < 4; i++)
                    w[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(quarters[i])), scale[i], offset[i]);
                uint16_t *row = out + j * n + 64 * b;
                _mm512_storeu_si512(row, (__m512i)_mm512_cvtne2ps_pbh(w[1], w[0]));
                _mm512_storeu_si512(row + 32, (__m512i)_mm512_cvtne2ps_pbh(w[3], w[2]));
            }
        }
}

/* Causal attention of a prefill: T queries at positions S - T .. S - 1 (from the start, or after S - T cached slots)
 * over S keys, query i seeing keys 0 .. S - T + i. Flash attention: keys in blocks of 64 with a running maximum and
 * sum per query; products in bfloat16 pairs (vdpbf16ps: bfloat16 times bfloat16 summed in float32), softmax in
 * float32, its weights rounded to bfloat16 for the product with the values. */
#define KEY_BLOCK 64
#define QUERY_TASK 64 /* queries per task */
#define QUERY_GROUP 4 /* queries whose scores are computed together, each key block read once for them */

static inline __m512 bcast_pair(const uint32_t *p) { return _mm512_castsi512_ps(_mm512_set1_epi32((int)*p)); }
#define DP(acc, a, b) _mm512_dpbf16_ps((acc), (__m512bh)(a), (__m512bh)(b))

/* keys (s, 2p..2p+1) at kp[p * padded + s], values (2j..2j+1, d) at vp[j * dim + d]: vdpbf16ps's pairs */
static void pack_head(const uint16_t *k, const uint16_t *v, int64_t row_stride, int64_t length, int64_t padded,
                      int64_t dim, uint32_t *kp, uint32_t *vp) {
    for (int64_t p = 0; p < dim / 2; p++)
        for (int64_t s = 0; s < padded; s++)
            kp[p * padded + s] = s < length ? (uint32_t)k[s * row_stride + 2 * p] |
                                              (uint32_t)k[s * row_stride + 2 * p + 1] << 16 : 0;
    for (int64_t j = 0; j < padded / 2; j++)
        for (int64_t d = 0; d < dim; d++) {
            uint32_t low = 2 * j < length ? v[2 * j * row_stride + d] : 0;
            uint32_t high = 2 * j + 1 < length ? v[(2 * j + 1) * row_stride + d] : 0;
            vp[j * dim + d] = low | high << 16;
        }
}

static inline void causal_group(const uint16_t *q, int64_t q_row_stride, const uint32_t *kp, const uint32_t *vp,
                                int64_t padded, int64_t first, int64_t rows, int64_t offset, const int64_t dim,
                                float scale, uint16_t *out, int64_t out_row_stride) {
    const int64_t chunks = dim / 16;
    float top[QUERY_GROUP], total[QUERY_GROUP];
    __m512 acc[QUERY_GROUP][MAX_DIM / 16];
    uint32_t weights[QUERY_GROUP][KEY_BLOCK / 2];
    for (int r = 0; r < QUERY_GROUP; r++) {
        top[r] = -INFINITY, total[r] = 0;
        for (int64_t c = 0; c < chunks; c++) acc[r][c] = _mm512_setzero_ps();
    }
    int64_t last = offset + first + rows - 1; /* the last key any of these queries sees */
    for (int64_t kb = 0; kb <= last; kb += KEY_BLOCK) {
        __m512 score[QUERY_GROUP][KEY_BLOCK / 16];
        for (int r = 0; r < QUERY_GROUP; r++)
            for (int c = 0; c < KEY_BLOCK / 16; c++) score[r][c] = _mm512_setzero_ps();
        for (int64_t p = 0; p < dim / 2; p++) {
            const uint32_t *keys = kp + p * padded + kb;
            __m512 k0 = _mm512_castsi512_ps(_mm512_loadu_si512(keys)), k1 = _mm512_castsi512_ps(_mm512_loadu_si512(keys + 16));
            __m512 k2 = _mm512_castsi512_ps(_mm512_loadu_si512(keys + 32)), k3 = _mm512_castsi512_ps(_mm512_loadu_si512(keys + 48));
            for (int r = 0; r < QUERY_GROUP; r++) {
                __m512 qp = bcast_pair((const uint32_t *)(q + (first + (r < rows ? r : 0)) * q_row_stride) + p);
                score[r][0] = DP(score[r][0], qp, k0);
                score[r][1] = DP(score[r][1], qp, k1);
                score[r][2] = DP(score[r][2], qp, k2);
                score[r][3] = DP(score[r][3], qp, k3);
            }
        }
        for (int r = 0; r < QUERY_GROUP; r++) {
            int64_t sees = offset + first + r; /* keys 0 .. sees */
            __m512 blockmax = _mm512_set1_ps(-INFINITY);
            __mmask16 valid[KEY_BLOCK / 16];
            for (int c = 0; c < KEY_BLOCK / 16; c++) {
                int64_t start = kb + 16 * c, n = sees - start + 1;
                valid[c] = n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
                score[r][c] = _mm512_mul_ps(score[r][c], _mm512_set1_ps(scale));
                blockmax = _mm512_mask_max_ps(blockmax, valid[c], blockmax, score[r][c]);
            }
            float newtop = _mm512_reduce_max_ps(blockmax);
            newtop = newtop > top[r] ? newtop : top[r];
            float shrink = top[r] == -INFINITY ? 0.0f : expf(top[r] - newtop);
            top[r] = newtop;
            __m512 sum = _mm512_setzero_ps(), e[KEY_BLOCK / 16];
            for (int c = 0; c < KEY_BLOCK / 16; c++) {
                e[c] = _mm512_maskz_mov_ps(valid[c], exp_nonpositive(_mm512_sub_ps(score[r][c], _mm512_set1_ps(newtop))));
                sum = _mm512_add_ps(sum, e[c]);
            }
            total[r] = total[r] * shrink + _mm512_reduce_add_ps(sum);
            _mm512_storeu_si512(weights[r], (__m512i)_mm512_cvtne2ps_pbh(e[1], e[0]));
            _mm512_storeu_si512(weights[r] + 16, (__m512i)_mm512_cvtne2ps_pbh(e[3], e[2]));
            for (int64_t c = 0; c < chunks; c++) acc[r][c] = _mm512_mul_ps(acc[r][c], _mm512_set1_ps(shrink));
        }
        int64_t pairs = (last - kb + 2) / 2 < KEY_BLOCK / 2 ? (last - kb + 2) / 2 : KEY_BLOCK / 2;
        for (int64_t j = 0; j < pairs; j++) {
            const uint32_t *values = vp + (kb / 2 + j) * dim;
            for (int64_t c = 0; c < chunks; c++) {
                __m512 vv = _mm512_castsi512_ps(_mm512_loadu_si512(values + 16 * c));
                for (int r = 0; r < QUERY_GROUP; r++) acc[r][c] = DP(acc[r][c], bcast_pair(&weights[r][j]), vv);
            }
        }
    }
    for (int r = 0; r < rows; r++)
        for (int64_t c = 0; c < chunks; c++) {
            __m512 y = _mm512_div_ps(acc[r][c], _mm512_set1_ps(total[r]));
            _mm256_storeu_si256((__m256i *)(out + (first + r) * out_row_stride + 16 * c), (__m256i)_mm512_cvtneps_pbh(y));
        }
}

/* out (T, heads, dim) bfloat16; q row (h, i) at q + h * q_head_stride + i * q_row_stride; k, v row (g, s) at
 * k + g * kv_head_stride + s * kv_row_stride (each row's dim values contiguous); query head h reads kv head
 * h / (heads / kv_heads); dim a multiple of 32, at most MAX_DIM. Returns 0, or -1 when out of memory. */
int attend_causal(const uint16_t *q, int64_t q_head_stride, int64_t q_row_stride, const uint16_t *k,
                  const uint16_t *v, int64_t kv_head_stride, int64_t kv_row_stride, int64_t heads, int64_t kv_heads,
                  int64_t queries, int64_t length, int64_t dim, uint16_t *out, int threads) {
    int64_t padded = (length + KEY_BLOCK - 1) / KEY_BLOCK * KEY_BLOCK, n_rep = heads / kv_heads;
    int64_t offset = length - queries, tasks = (queries + QUERY_TASK - 1) / QUERY_TASK;
    float scale = 1.0f / sqrtf((float)dim);
    uint32_t *packed = malloc(sizeof(uint32_t) * kv_heads * padded * dim);
    if (!packed) return -1;
    uint32_t *kp = packed, *vp = packed + kv_heads * padded * dim / 2;
    #pragma omp parallel num_threads(threads)
    {
        #pragma omp for schedule(static)
        for (int64_t g = 0; g < kv_heads; g++)
            pack_head(k + g * kv_head_stride, v + g * kv_head_stride, kv_row_stride, length, padded, dim,
                      kp + g * padded * dim / 2, vp + g * padded * dim / 2);
        /* the last query tasks see the most keys: largest first, handed out as threads free up */
        #pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t t = tasks - 1; t >= 0; t--)
            for (int64_t h = 0; h < heads; h++) {
                int64_t g = h / n_rep, end = (t + 1) * QUERY_TASK < queries ? (t + 1) * QUERY_TASK : queries;
                for (int64_t first = t * QUERY_TASK; first < end; first += QUERY_GROUP) {
                    int64_t rows = end - first < QUERY_GROUP ? end - first : QUERY_GROUP;
                    const uint16_t *qh = q + h * q_head_stride;
                    const uint32_t *kg = kp + g * padded * dim / 2, *vg = vp + g * padded * dim / 2;
                    uint16_t *oh = out + h * dim;
                    switch (dim) {
                    case 64: causal_group(qh, q_row_stride, kg, vg, padded, first, rows, offset, 64, scale, oh, heads * dim); break;
                    case 128: causal_group(qh, q_row_stride, kg, vg, padded, first, rows, offset, 128, scale, oh, heads * dim); break;
                    default: causal_group(qh, q_row_stride, kg, vg, padded, first, rows, offset, dim, scale, oh, heads * dim); break;
                    }
                }
            }
    }
    free(packed);
    return 0;
}

/* The small steps of a decode step between its products, one call each instead of several torch ops, with the
 * modules' roundings (bfloat16 after each of their ops, float32 inside). */

static inline float bf16_value(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch does (NaN kept a NaN) */
    uint32_t bits;
    __builtin_memcpy(&bits, &f, 4);
    if ((bits & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)((bits >> 16) | 0x40);
    return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

/* out = x / sqrt(mean(x^2) + eps) * weight, normalised in float32 and rounded to bfloat16, then times the weight */
static inline void norm_row(const uint16_t *x, const uint16_t *weight, int64_t n, float eps, uint16_t *out) {
    float sum = 0;
    for (int64_t i = 0; i < n; i++) sum += bf16_value(x[i]) * bf16_value(x[i]);
    float scale = 1.0f / sqrtf(sum / (float)n + eps);
    for (int64_t i = 0; i < n; i++)
        out[i] = to_bf16(bf16_value(to_bf16(bf16_value(x[i]) * scale)) * bf16_value(weight[i]));
}

/* RMSNorm of `rows` rows of n (core.model.rms_norm for bfloat16 on CPU: every path through one rounding) */
void rms_norm_rows(const uint16_t *x, const uint16_t *weight, int64_t rows, int64_t n, float eps, uint16_t *out,
                   int threads) {
    #pragma omp parallel for schedule(static) num_threads(rows >= 64 ? threads : 1)
    for (int64_t r = 0; r < rows; r++) norm_row(x + r * n, weight, n, eps, out + r * n);
}

/* x += y (when y is given, rounded to bfloat16), then out = RMSNorm(x), for a decode step's one row */
void residual_rms_norm(uint16_t *x, const uint16_t *y, const uint16_t *weight, int64_t n, float eps, uint16_t *out) {
    if (y)
        for (int64_t i = 0; i < n; i++) x[i] = to_bf16(bf16_value(x[i]) + bf16_value(y[i]));
    norm_row(x, weight, n, eps, out);
}

/* heads (q_heads + 2 kv_heads, dim): RoPE on the q and k heads in place (x cos + roll(x, dim/2) signed sin, the
 * product with cos rounded to bfloat16 first, as core.model.apply_rope), then the k and v heads copied to the KV
 * cache's slot: head g at k_slot + g * head_stride (and v_slot likewise) */
void rope_into_cache(uint16_t *heads, const uint16_t *cos, const uint16_t *signed_sin, int64_t q_heads,
                     int64_t kv_heads, int64_t dim, uint16_t *k_slot, uint16_t *v_slot, int64_t head_stride) {
    uint16_t rotated[MAX_DIM];
    for (int64_t h = 0; h < q_heads + kv_heads; h++) {
        uint16_t *x = heads + h * dim;
        for (int64_t d = 0; d < dim; d++) {
            float partner = bf16_value(x[(d + dim / 2) % dim]);
            float first = bf16_value(to_bf16(bf16_value(x[d]) * bf16_value(cos[d])));
            rotated[d] = to_bf16(first + partner * bf16_value(signed_sin[d]));
        }
        __builtin_memcpy(x, rotated, sizeof(uint16_t) * dim);
    }
    for (int64_t g = 0; g < kv_heads; g++) {
        __builtin_memcpy(k_slot + g * head_stride, heads + (q_heads + g) * dim, sizeof(uint16_t) * dim);
        __builtin_memcpy(v_slot + g * head_stride, heads + (q_heads + kv_heads + g) * dim, sizeof(uint16_t) * dim);
    }
}

/* out (n) = silu(gate) * up, gate_up (2n) = [gate, up]; silu rounded to bfloat16 first, as F.silu(gate) * up */
void silu_mul(const uint16_t *gate_up, int64_t n, uint16_t *out) {
    for (int64_t i = 0; i < n; i++) {
        float g = bf16_value(gate_up[i]);
        float silu = bf16_value(to_bf16(g / (1.0f + expf(-g))));
        out[i] = to_bf16(silu * bf16_value(gate_up[n + i]));
    }
}
