/* The end of tracking's copy step on CPUs, fused: for each query, the k best of its window
 * scores (int8 products in int32, out-of-reach cells pushed down by a bias), those k rescored in
 * float32, softmax, and the weighted mean of their labels. In PyTorch these are a dozen passes
 * (bias gather and add, block maxima, two top-ks, gathers, einsum, softmax, matmul) that write
 * and reread every score; here each query's scores are read about once, from cache, and the
 * rest stays in registers. propagate.py runs the same protocol in PyTorch wherever this
 * module is not built; the tests hold the kernel to its definition at every instruction set,
 * and to the PyTorch path.
 *
 * On CPUs without VNNI the kernel also makes the int8 products itself (`scores` NULL), as
 * float32 FMAs of the same integers, tile by tile, and copies from a tile's scores while they
 * are in cache (docs/performance.md, "The arithmetic each CPU is fast at").
 *
 * Top-k in two passes over a query's scores, which are `frames` windows of `cells` cells:
 * (A) the best score of each block of 16 cells over all frames; the k-th best of these block
 * maxima is a floor under the k-th best score (k blocks hold k distinct scores at least that
 * high); (B) only blocks whose maximum reaches the floor, then the running k-th best, are read
 * again, and their scores that reach it enter a sorted list of k. The k best are ranked by
 * score, ties to the lower index, so the order of the scan does not change the result. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define COLORTRACK_X86 1
#include <immintrin.h>
#endif

#define BLOCK 16
#define MAXK 64
#define MAXBLOCKS 4096 /* so at most 65536 cells (module constant MAX_CELLS) */

typedef struct {
    const int32_t *scores; /* (rows, frames * cells) */
    int64_t rows, frames, cells;
    const int32_t *bias;   /* (kinds * per_tile, cells): 0 within reach, far beyond */
    const int64_t *kind;   /* (rows / per_tile): each tile's bias kind */
    int64_t per_tile;
    int k;
    float temperature;
    int32_t far;
    const float *queries;  /* (rows, dim) */
    int64_t dim;
    const float *keys;     /* (cells of the context buffers, dim) */
    const float *values;   /* (cells of the context buffers, channels) */
    int64_t channels;
    const int64_t *corners; /* (rows / per_tile): each tile's first buffer row */
    const int64_t *offsets; /* (frames * cells): a window cell's buffer row from its corner */
    float *out;             /* (rows, channels) */
    /* Where scores is NULL, the products are made here, per tile, from int8 values held as
     * float32 integers (exact sums): queries `pq` (rows, dim) and keys `pk` laid out (slots,
     * height, dim, width), so that a window row's keys for one channel are contiguous. */
    const float *pq, *pk;
    int64_t height, width, window_rows, window_cols;
} Job;

typedef void (*TopK)(const int32_t *, const int32_t *, int64_t, int64_t, int, int32_t *,
                     int64_t *);

/* Whether (value, at) ranks before (other, other_at): higher scores first, ties to the lower
 * index. */
static inline int before(int32_t value, int64_t at, int32_t other, int64_t other_at) {
    return value > other || (value == other && at < other_at);
}

static inline void insert(int32_t *top, int64_t *index, int k, int32_t value, int64_t at) {
    if (!before(value, at, top[k - 1], index[k - 1])) return;
    int p = k - 1;
    while (p > 0 && before(value, at, top[p - 1], index[p - 1])) {
        top[p] = top[p - 1];
        index[p] = index[p - 1];
        p--;
    }
    top[p] = value;
    index[p] = at;
}

/* The position of the lowest set bit of x (x > 0). */
static inline int lowest_bit(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctz(x);
#else
    int n = 0;
    for (; !(x & 1u); x >>= 1) n++;
    return n;
#endif
}

/* The k best block maxima, best first, with their blocks (INT64_MAX past the last block): the
 * k-th is a floor under the k-th best score. */
static void best_blocks(const int32_t *blockmax, int64_t blocks, int k, int32_t *best,
                        int64_t *which) {
    for (int i = 0; i < k; i++) {
        best[i] = INT32_MIN;
        which[i] = INT64_MAX;
    }
    for (int64_t j = 0; j < blocks; j++) insert(best, which, k, blockmax[j], j);
}

/* The driver, instantiated once per instruction set. MAXIMA(j) gives block j's maximum over
 * all frames; BEST is best_blocks or a faster equal; HITS(f, j) sets `hit`, a bit per cell of
 * frame f's block j whose score reaches `low`, and those scores in `lanes`. */
#define TOPK_BODY(MAXIMA, HITS, BEST)                                                            \
    int32_t blockmax[MAXBLOCKS], lanes[BLOCK], best[MAXK];                                   \
    int64_t which[MAXK];                                                                     \
    int64_t blocks = (cells + BLOCK - 1) / BLOCK;                                            \
    for (int i = 0; i < k; i++) {                                                            \
        top[i] = INT32_MIN;                                                                  \
        index[i] = INT64_MAX;                                                                \
    }                                                                                        \
    for (int64_t j = 0; j < blocks; j++) blockmax[j] = MAXIMA(j);                           \
    BEST(blockmax, blocks, k, best, which);                                                  \
    int32_t low = best[k - 1];                                                               \
    /* The k best blocks first, best first, so that `low` soon nears the k-th best score and \
     * few scores are inserted; then any other block that may still hold one (a tie). */     \
    for (int pass = 0; pass < 2; pass++)                                                     \
    for (int64_t i = 0; i < (pass ? blocks : k); i++) {                                      \
        int64_t j = pass ? i : which[i];                                                     \
        if (j >= blocks || blockmax[j] < low) continue;                                      \
        if (pass && !before(best[k - 1], which[k - 1], blockmax[j], j)) continue; /* seen */ \
        for (int64_t f = 0; f < frames; f++) {                                               \
            uint32_t hit;                                                                    \
            HITS(f, j);                                                                      \
            while (hit) {                                                                    \
                int l = lowest_bit(hit);                                                     \
                hit &= hit - 1;                                                              \
                insert(top, index, k, lanes[l], f * cells + j * BLOCK + l);                  \
            }                                                                                \
            low = top[k - 1] > low ? top[k - 1] : low;                                       \
        }                                                                                    \
    }

static inline int32_t maxima_scalar(const int32_t *s, const int32_t *b, int64_t frames,
                                    int64_t cells, int64_t j) {
    int64_t end = (j + 1) * BLOCK < cells ? (j + 1) * BLOCK : cells;
    int32_t best = INT32_MIN;
    for (int64_t f = 0; f < frames; f++)
        for (int64_t c = j * BLOCK; c < end; c++) {
            int32_t v = s[f * cells + c] + b[c];
            best = v > best ? v : best;
        }
    return best;
}

static inline uint32_t hits_scalar(const int32_t *s, const int32_t *b, int64_t cells,
                                   int64_t f, int64_t j, int32_t low, int32_t *lanes) {
    uint32_t hit = 0;
    for (int64_t l = 0; l < BLOCK && j * BLOCK + l < cells; l++) {
        lanes[l] = s[f * cells + j * BLOCK + l] + b[j * BLOCK + l];
        hit |= (uint32_t)(lanes[l] >= low) << l;
    }
    return hit;
}

static void topk_scalar(const int32_t *s, const int32_t *b, int64_t frames, int64_t cells,
                        int k, int32_t *top, int64_t *index) {
#define MAXIMA(j) maxima_scalar(s, b, frames, cells, j)
#define HITS(f, j) hit = hits_scalar(s, b, cells, f, j, low, lanes)
    TOPK_BODY(MAXIMA, HITS, best_blocks)
#undef MAXIMA
#undef HITS
}

#ifdef COLORTRACK_X86
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2")))

/* The lanes of block j that lie among the first `cells` (the last block may be short, later
 * ones empty). */
static inline __mmask16 inside(int64_t cells, int64_t j) {
    int64_t n = cells - j * BLOCK;
    return n >= BLOCK ? 0xFFFF : n > 0 ? (__mmask16)((1u << n) - 1) : 0;
}

AVX512 static inline int32_t maxima_avx512(const int32_t *s, const int32_t *b, int64_t frames,
                                           int64_t cells, int64_t j) {
    const __m512i none = _mm512_set1_epi32(INT32_MIN);
    __mmask16 in = inside(cells, j);
    __m512i best = none;
    for (int64_t f = 0; f < frames; f++)
        best = _mm512_max_epi32(best, _mm512_mask_loadu_epi32(none, in, s + f * cells + j * BLOCK));
    best = _mm512_add_epi32(best, _mm512_maskz_loadu_epi32(in, b + j * BLOCK));
    return _mm512_reduce_max_epi32(best); /* lanes past the row: INT32_MIN + 0 */
}

AVX512 static inline uint32_t hits_avx512(const int32_t *s, const int32_t *b, int64_t cells,
                                          int64_t f, int64_t j, int32_t low, int32_t *lanes) {
    __mmask16 in = inside(cells, j);
    __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(in, s + f * cells + j * BLOCK),
                                 _mm512_maskz_loadu_epi32(in, b + j * BLOCK));
    __mmask16 hit = _mm512_mask_cmpge_epi32_mask(in, v, _mm512_set1_epi32(low));
    if (hit) _mm512_storeu_si512(lanes, v);
    return hit;
}

/* best_blocks for up to 64 blocks, held in four registers: the k best taken one value at a
 * time, the blocks that hold it in ascending order, without a data-dependent branch per block. */
AVX512 static void best_blocks_avx512(const int32_t *blockmax, int64_t blocks, int k,
                                      int32_t *best, int64_t *which) {
    if (blocks > 64) {
        best_blocks(blockmax, blocks, k, best, which);
        return;
    }
    const __m512i none = _mm512_set1_epi32(INT32_MIN);
    __m512i v[4];
    __mmask16 left[4];
    for (int r = 0; r < 4; r++) {
        left[r] = inside(blocks, r);
        v[r] = _mm512_mask_loadu_epi32(none, left[r], blockmax + r * BLOCK);
    }
    int found = 0;
    while (found < k && (left[0] | left[1] | left[2] | left[3])) {
        __m512i m = _mm512_max_epi32(_mm512_max_epi32(v[0], v[1]), _mm512_max_epi32(v[2], v[3]));
        int32_t value = _mm512_reduce_max_epi32(m);
        __m512i at = _mm512_set1_epi32(value);
        for (int r = 0; r < 4 && found < k; r++) {
            uint32_t tied = _mm512_mask_cmpeq_epi32_mask(left[r], v[r], at);
            left[r] &= (__mmask16)~tied;
            v[r] = _mm512_mask_mov_epi32(v[r], (__mmask16)tied, none);
            for (; tied && found < k; tied &= tied - 1, found++) {
                best[found] = value;
                which[found] = r * BLOCK + lowest_bit(tied);
            }
        }
    }
    for (; found < k; found++) {
        best[found] = INT32_MIN;
        which[found] = INT64_MAX;
    }
}

AVX512 static void topk_avx512(const int32_t *s, const int32_t *b, int64_t frames,
                               int64_t cells, int k, int32_t *top, int64_t *index) {
#define MAXIMA(j) maxima_avx512(s, b, frames, cells, j)
#define HITS(f, j) hit = hits_avx512(s, b, cells, f, j, low, lanes)
    TOPK_BODY(MAXIMA, HITS, best_blocks_avx512)
#undef MAXIMA
#undef HITS
}

/* 8 lanes from p, `fill` past the n that exist. */
AVX2 static inline __m256i load8(const int32_t *p, int64_t n, int32_t fill) {
    if (n >= 8) return _mm256_loadu_si256((const __m256i *)p);
    int32_t tmp[8];
    for (int i = 0; i < 8; i++) tmp[i] = i < n ? p[i] : fill;
    return _mm256_loadu_si256((const __m256i *)tmp);
}

AVX2 static inline int32_t maxima_avx2(const int32_t *s, const int32_t *b, int64_t frames,
                                       int64_t cells, int64_t j) {
    int64_t n = cells - j * BLOCK;
    const int32_t *row = s + j * BLOCK;
    __m256i lo = _mm256_set1_epi32(INT32_MIN), hi = lo;
    for (int64_t f = 0; f < frames; f++) {
        lo = _mm256_max_epi32(lo, load8(row + f * cells, n, INT32_MIN));
        hi = _mm256_max_epi32(hi, load8(row + f * cells + 8, n - 8, INT32_MIN));
    }
    /* Lanes past the row hold INT32_MIN and get a bias of 0, so they stay there. */
    lo = _mm256_add_epi32(lo, load8(b + j * BLOCK, n, 0));
    hi = _mm256_add_epi32(hi, load8(b + j * BLOCK + 8, n - 8, 0));
    __m256i m = _mm256_max_epi32(lo, hi);
    m = _mm256_max_epi32(m, _mm256_permute2x128_si256(m, m, 1));
    m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0x4E));
    m = _mm256_max_epi32(m, _mm256_shuffle_epi32(m, 0xB1));
    return _mm256_cvtsi256_si32(m);
}

AVX2 static inline uint32_t hits_avx2(const int32_t *s, const int32_t *b, int64_t cells,
                                      int64_t f, int64_t j, int32_t low, int32_t *lanes) {
    int64_t n = cells - j * BLOCK;
    const int32_t *row = s + f * cells + j * BLOCK, *bias = b + j * BLOCK;
    __m256i lo = _mm256_add_epi32(load8(row, n, INT32_MIN), load8(bias, n, 0));
    __m256i hi = _mm256_add_epi32(load8(row + 8, n - 8, INT32_MIN), load8(bias + 8, n - 8, 0));
    __m256i under = _mm256_set1_epi32(low); /* a lane reaches low unless low > it */
    uint32_t below = (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(under, lo)))
                     | (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(under, hi))) << 8;
    uint32_t hit = ~below & (n >= BLOCK ? 0xFFFFu : (1u << n) - 1);
    if (hit) {
        _mm256_storeu_si256((__m256i *)lanes, lo);
        _mm256_storeu_si256((__m256i *)(lanes + 8), hi);
    }
    return hit;
}

AVX2 static void topk_avx2(const int32_t *s, const int32_t *b, int64_t frames, int64_t cells,
                           int k, int32_t *top, int64_t *index) {
#define MAXIMA(j) maxima_avx2(s, b, frames, cells, j)
#define HITS(f, j) hit = hits_avx2(s, b, cells, f, j, low, lanes)
    TOPK_BODY(MAXIMA, HITS, best_blocks)
#undef MAXIMA
#undef HITS
}
#endif

/* Fastest instruction set this CPU runs: 2 AVX-512, 1 AVX2, 0 portable C. */
static int best_level(void) {
#ifdef COLORTRACK_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
    if (__builtin_cpu_supports("avx2")) return 1;
#endif
    return 0;
}

static TopK topk_at(int level) {
#ifdef COLORTRACK_X86
    if (level == 2) return topk_avx512;
    if (level == 1) return topk_avx2;
#endif
    return topk_scalar;
}

/* q . k in float32, in 16 independent partial sums so that compilers vectorize it. */
static inline float dot(const float *q, const float *k, int64_t dim) {
    float part[16] = {0};
    int64_t d = 0;
    for (; d + 16 <= dim; d += 16)
        for (int l = 0; l < 16; l++) part[l] += q[d + l] * k[d + l];
    float sum = 0;
    for (; d < dim; d++) sum += q[d] * k[d];
    for (int l = 0; l < 16; l++) sum += part[l];
    return sum;
}

/* Row r's copy from its scores (frames * cells): top-k, float32 rescoring, softmax, mean. */
static void copy_row(const Job *job, TopK topk, int64_t r, const int32_t *scores) {
    int32_t top[MAXK];
    int64_t index[MAXK], row[MAXK];
    float weight[MAXK];
    int64_t tile = r / job->per_tile, c = job->channels;
    const int32_t *bias = job->bias + (job->kind[tile] * job->per_tile + r % job->per_tile)
                                          * job->cells;
    topk(scores, bias, job->frames, job->cells, job->k, top, index);
    const float *q = job->queries + r * job->dim;
    float best = -INFINITY, total = 0;
    for (int i = 0; i < job->k; i++) {
        row[i] = job->corners[tile] + job->offsets[index[i]];
        float score = top[i] <= job->far / 2 ? (float)job->far
                                             : dot(q, job->keys + row[i] * job->dim, job->dim);
        weight[i] = score / job->temperature;
        best = weight[i] > best ? weight[i] : best;
    }
    for (int i = 0; i < job->k; i++) total += weight[i] = expf(weight[i] - best);
    float *out = job->out + r * c;
    for (int64_t ch = 0; ch < c; ch++) out[ch] = 0;
    for (int i = 0; i < job->k; i++) {
        const float *v = job->values + row[i] * c;
        float w = weight[i] / total;
        for (int64_t ch = 0; ch < c; ch++) out[ch] += w * v[ch];
    }
}

/* The first key of tile t's window, channel 0, in frame f and window row y of `pk`: the
 * tile's corner (a row of the channels-last buffers) split into buffer row and column. */
static inline const float *window_keys(const Job *job, int64_t t, int64_t f, int64_t y) {
    int64_t corner = job->corners[t], plane = job->height * job->width;
    int64_t y0 = corner % plane / job->width, x0 = corner % plane % job->width;
    return job->pk + ((f * job->height + y0 + y) * job->dim) * job->width + x0;
}

/* Tile t's products, (per_tile, frames * cells) int32, in portable C. */
static void products_scalar(const Job *job, int64_t t, int32_t *out) {
    int64_t n = job->frames * job->cells, cols = job->window_cols;
    for (int64_t q = 0; q < job->per_tile; q++) {
        const float *query = job->pq + (t * job->per_tile + q) * job->dim;
        for (int64_t f = 0; f < job->frames; f++)
            for (int64_t y = 0; y < job->window_rows; y++) {
                const float *keys = window_keys(job, t, f, y);
                int32_t *o = out + q * n + f * job->cells + y * cols;
                float sum[64];
                for (int64_t x0 = 0; x0 < cols; x0 += 64) {
                    int64_t w = cols - x0 < 64 ? cols - x0 : 64;
                    for (int64_t x = 0; x < w; x++) sum[x] = 0;
                    for (int64_t d = 0; d < job->dim; d++)
                        for (int64_t x = 0; x < w; x++)
                            sum[x] += query[d] * keys[d * job->width + x0 + x];
                    for (int64_t x = 0; x < w; x++) o[x0 + x] = (int32_t)sum[x];
                }
            }
    }
}

#ifdef COLORTRACK_X86
/* Three queries q0..q2 by 32 keys (four vectors of 8) of one window row: keys[d * stride + x],
 * the sums stored as int32 at o0..o2. 12 accumulators, 3 broadcast queries and one key vector
 * fill AVX2's 16 registers (named, so that the compiler keeps them there); each key vector
 * loaded feeds three FMAs. */
__attribute__((target("avx2,fma"))) static void fma_3x32(const float *q0, const float *q1,
                                                          const float *q2, const float *keys,
                                                          int64_t dim, int64_t stride,
                                                          int32_t *o0, int32_t *o1, int32_t *o2) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0,
           b3 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0;
    for (int64_t d = 0; d < dim; d++, keys += stride) {
        __m256 x = _mm256_broadcast_ss(q0 + d), y = _mm256_broadcast_ss(q1 + d),
               z = _mm256_broadcast_ss(q2 + d), k = _mm256_loadu_ps(keys);
        a0 = _mm256_fmadd_ps(x, k, a0), b0 = _mm256_fmadd_ps(y, k, b0), c0 = _mm256_fmadd_ps(z, k, c0);
        k = _mm256_loadu_ps(keys + 8);
        a1 = _mm256_fmadd_ps(x, k, a1), b1 = _mm256_fmadd_ps(y, k, b1), c1 = _mm256_fmadd_ps(z, k, c1);
        k = _mm256_loadu_ps(keys + 16);
        a2 = _mm256_fmadd_ps(x, k, a2), b2 = _mm256_fmadd_ps(y, k, b2), c2 = _mm256_fmadd_ps(z, k, c2);
        k = _mm256_loadu_ps(keys + 24);
        a3 = _mm256_fmadd_ps(x, k, a3), b3 = _mm256_fmadd_ps(y, k, b3), c3 = _mm256_fmadd_ps(z, k, c3);
    }
    /* int8 values: the float32 sums are exact integers, and the conversion is too. */
#define STORE(o, v0, v1, v2, v3)                                                                 \
    _mm256_storeu_si256((__m256i *)(o), _mm256_cvtps_epi32(v0));                                 \
    _mm256_storeu_si256((__m256i *)(o + 8), _mm256_cvtps_epi32(v1));                             \
    _mm256_storeu_si256((__m256i *)(o + 16), _mm256_cvtps_epi32(v2));                            \
    _mm256_storeu_si256((__m256i *)(o + 24), _mm256_cvtps_epi32(v3))
    STORE(o0, a0, a1, a2, a3);
    STORE(o1, b0, b1, b2, b3);
    STORE(o2, c0, c1, c2, c3);
#undef STORE
}

/* The same for 8 keys: the columns left past the last whole 32. */
__attribute__((target("avx2,fma"))) static void fma_3x8(const float *q0, const float *q1,
                                                         const float *q2, const float *keys,
                                                         int64_t dim, int64_t stride,
                                                         int32_t *o0, int32_t *o1, int32_t *o2) {
    __m256 a = _mm256_setzero_ps(), b = a, c = a;
    for (int64_t d = 0; d < dim; d++, keys += stride) {
        __m256 k = _mm256_loadu_ps(keys);
        a = _mm256_fmadd_ps(_mm256_broadcast_ss(q0 + d), k, a);
        b = _mm256_fmadd_ps(_mm256_broadcast_ss(q1 + d), k, b);
        c = _mm256_fmadd_ps(_mm256_broadcast_ss(q2 + d), k, c);
    }
    _mm256_storeu_si256((__m256i *)o0, _mm256_cvtps_epi32(a));
    _mm256_storeu_si256((__m256i *)o1, _mm256_cvtps_epi32(b));
    _mm256_storeu_si256((__m256i *)o2, _mm256_cvtps_epi32(c));
}

/* Tile t's products with AVX2 FMAs: the window columns are a multiple of 8 (windows.py). */
static void products_avx2(const Job *job, int64_t t, int32_t *out) {
    int64_t n = job->frames * job->cells, cols = job->window_cols;
    /* Window row by window row: its keys (8 KB at 32 columns of 64 channels) stay in L1 while
     * every query of the tile is multiplied with them. */
    for (int64_t f = 0; f < job->frames; f++)
        for (int64_t y = 0; y < job->window_rows; y++) {
            const float *keys = window_keys(job, t, f, y);
            for (int64_t q = 0; q < job->per_tile; q += 3) {
                /* Past the tile's last query, the last one again (computed twice, same sums). */
                const float *query[3];
                int32_t *o[3];
                for (int i = 0; i < 3; i++) {
                    int64_t at = q + i < job->per_tile ? q + i : job->per_tile - 1;
                    query[i] = job->pq + (t * job->per_tile + at) * job->dim;
                    o[i] = out + at * n + f * job->cells + y * cols;
                }
                int64_t x = 0;
                for (; x + 32 <= cols; x += 32)
                    fma_3x32(query[0], query[1], query[2], keys + x, job->dim, job->width,
                             o[0] + x, o[1] + x, o[2] + x);
                for (; x < cols; x += 8)
                    fma_3x8(query[0], query[1], query[2], keys + x, job->dim, job->width,
                            o[0] + x, o[1] + x, o[2] + x);
            }
        }
}
#endif

/* 0, or -1 where a thread could not allocate its tile's scores. */
static int run(const Job *job, TopK topk, int level) {
    int64_t n = job->frames * job->cells;
    int failed = 0;
    /* Built with OpenMP (setup.py, Linux), on the threads of the runtime PyTorch loaded. */
    if (job->scores != NULL) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < job->rows; r++) copy_row(job, topk, r, job->scores + r * n);
        return 0;
    }
    void (*products)(const Job *, int64_t, int32_t *) = products_scalar;
#ifdef COLORTRACK_X86
    if (level >= 1) products = products_avx2;
#endif
    (void)level;
    /* A tile's scores are made and copied from while they are in cache; one buffer a thread. */
#pragma omp parallel
    {
        int32_t *scores = malloc(sizeof(int32_t) * job->per_tile * n);
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < job->rows / job->per_tile; t++) {
            if (scores == NULL) continue;
            products(job, t, scores);
            for (int64_t q = 0; q < job->per_tile; q++)
                copy_row(job, topk, t * job->per_tile + q, scores + q * n);
        }
        free(scores);
    }
    return failed ? -1 : 0;
}

static void *pointer(PyObject *value) { return PyLong_AsVoidPtr(value); }

/* Whether every tile's bias kind exists and every window cell's row lies in the buffers. */
static int in_bounds(const Job *job, int64_t kinds, int64_t entries) {
    int64_t n = job->frames * job->cells, low = INT64_MAX, high = INT64_MIN;
    for (int64_t i = 0; i < n; i++) {
        low = job->offsets[i] < low ? job->offsets[i] : low;
        high = job->offsets[i] > high ? job->offsets[i] : high;
    }
    int64_t plane = job->height * job->width;
    if (job->scores == NULL && (plane <= 0 || job->frames * plane > entries
                                || job->window_rows * job->window_cols != job->cells
                                || job->window_cols % 8))
        return 0;
    for (int64_t t = 0; t < job->rows / job->per_tile; t++) {
        if (job->kind[t] < 0 || job->kind[t] >= kinds || job->corners[t] + low < 0
            || job->corners[t] + high >= entries)
            return 0;
        if (job->scores == NULL && (job->corners[t] % plane / job->width + job->window_rows
                                        > job->height
                                    || job->corners[t] % plane % job->width + job->window_cols
                                        > job->width))
            return 0;
    }
    return 1;
}

static PyObject *copy_windows(PyObject *self, PyObject *args, PyObject *kwargs) {
    static char *names[] = {"scores", "rows", "frames", "cells", "bias", "kinds", "kind",
                            "per_tile", "k", "temperature", "far", "queries", "dim", "keys",
                            "values", "entries", "channels", "corners", "offsets", "out",
                            "level", "pq", "pk", "height", "width", "window_rows",
                            "window_cols", NULL};
    PyObject *scores, *bias, *kind, *queries, *keys, *values, *corners, *offsets, *out;
    PyObject *pq = NULL, *pk = NULL;
    Py_ssize_t rows, frames, cells, kinds, per_tile, dim, entries, channels;
    Py_ssize_t height = 0, width = 0, window_rows = 0, window_cols = 0;
    int k, far, level;
    float temperature;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OnnnOnOnifiOnOOnnOOOi|OOnnnn", names, &scores, &rows, &frames, &cells,
                                     &bias, &kinds, &kind, &per_tile, &k, &temperature, &far,
                                     &queries, &dim, &keys, &values, &entries, &channels,
                                     &corners, &offsets, &out, &level, &pq, &pk, &height,
                                     &width, &window_rows, &window_cols))
        return NULL;
    if (k < 1 || k > MAXK || k > frames * cells || cells > MAXBLOCKS * BLOCK || per_tile < 1
        || rows % per_tile || !(temperature > 0) || level < 0 || level > best_level()) {
        PyErr_Format(PyExc_ValueError,
                     "copy_windows: bad arguments (k=%d must be 1..%d and at most the %zd "
                     "scores of a row; cells=%zd at most %d; rows=%zd a multiple of "
                     "per_tile=%zd; temperature > 0; level %d at most %d)",
                     k, MAXK, frames * cells, cells, MAXBLOCKS * BLOCK, rows, per_tile, level,
                     best_level());
        return NULL;
    }
    Job job = {pointer(scores), rows, frames, cells, pointer(bias), pointer(kind), per_tile, k,
               temperature, far, pointer(queries), dim, pointer(keys), pointer(values),
               channels, pointer(corners), pointer(offsets), pointer(out),
               pq ? pointer(pq) : NULL, pk ? pointer(pk) : NULL, height, width, window_rows,
               window_cols};
    if (!PyErr_Occurred() && job.scores == NULL && (job.pq == NULL || job.pk == NULL)) {
        PyErr_SetString(PyExc_ValueError, "copy_windows: without scores, pass pq and pk");
        return NULL;
    }
    if (PyErr_Occurred()) return NULL;
    if (!in_bounds(&job, kinds, entries)) {
        PyErr_SetString(PyExc_ValueError, "copy_windows: a tile's kind or window lies outside "
                                          "the biases or the buffers");
        return NULL;
    }
    TopK topk = topk_at(level);
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = run(&job, topk, level);
    Py_END_ALLOW_THREADS
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *level(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyLong_FromLong(best_level());
}

static PyObject *openmp(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
#ifdef _OPENMP
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"copy_windows", (PyCFunction)(void (*)(void))copy_windows, METH_VARARGS | METH_KEYWORDS,
     "copy_windows(scores, rows, frames, cells, bias, kinds, kind, per_tile, k, temperature, "
     "far, queries, dim, keys, values, entries, channels, corners, offsets, out, level): the "
     "fused top-k copy (data pointers and sizes, by name; colortrack.copy.native.copy_windows checks "
     "the tensors)."},
    {"best_level", level, METH_NOARGS,
     "Fastest instruction set this CPU runs: 2 AVX-512, 1 AVX2, 0 portable C."},
    {"openmp", openmp, METH_NOARGS,
     "Whether the kernel splits its rows over OpenMP threads (else it runs on one)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_window",
                                    "Fused top-k copy over tracking's local windows.", -1,
                                    methods};

/* The limits native.py checks before handing a copy to the kernel. */
PyMODINIT_FUNC PyInit__window(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "MAX_K", MAXK) < 0
              || PyModule_AddIntConstant(m, "MAX_CELLS", MAXBLOCKS * BLOCK) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
