/* llmkit's own CPU kernel (core/cpu_kernels.py builds and loads it): the product of float32 rows with weights in
 * GGUF's Q8_0 layout, int8 in blocks of 32 inputs with one float32 scale each, for the output projection. */
#include <immintrin.h>
#include <stdint.h>

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
