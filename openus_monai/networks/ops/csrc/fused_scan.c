/*
 * Fused selective scan for the CPU: the four-direction scan of SS2D (or K plain sequences) in one pass.
 *
 * Layout (all float32, row-major):
 *   u      [B, L, (K,) D]  the scan input; strides (u_b, u_tok, u_k) in elements, u_k = 0 when the K directions
 *                          share one input (SS2D: the same map read in four orders)
 *   dt     [B, L, K, D]    raw step sizes: delta = softplus(dt + bias) (or dt + bias), computed here;
 *                          or, in the forward with dtw given, [B, L, K, R]: their low-rank factor, projected
 *                          here (dt[d] = sum_r dt[r] dtw[k, r, d]) so that [B, L, K, D] is never stored
 *   dtw    [K, R, D]       the step-size projection (forward only; NULL when dt is full)
 *   bias   [K, D]          step-size bias
 *   A      [K, N, D]       diagonal state matrix (negative)
 *   Bm, Cm [B, L, K, N]    input and output projections, shared by the D channels of a direction
 *   Dk     [K, D]          skip connection (zeros for none)
 *   y      like u          written: directions sharing an input are summed (cross merge), the first of them
 *                          writes and the others add, so y needs no zeroing
 *   hs     [B, K, L, N, D] states in step order, saved for the backward pass, or NULL
 * Positions are indexed by token (row-major over an H x W grid); step t of direction k reads token
 * token_at(k, t): rows, columns, rows reversed, columns reversed (order 0), or t itself (order 1).
 *
 * The caller splits (batch, channel) ranges across threads; a call owns channels [d0, d1) of batches
 * [b0, b1) for every direction, so the sums over directions into y and gu never race.
 * Inner loops run over channels, which are contiguous: they vectorise (exp is a polynomial for that; gcc
 * needs -fno-trapping-math to if-convert its clamp); the step sizes' low-rank projection keeps 64 channels in
 * registers across its R products (GNU vector types, which every gcc or clang target lowers to its own width).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_STATE 16
#define BLOCK 256


/* exp(x) for x <= 0 in float32 to about 2 ulp (relative error below 1e-7 over [-87, 0]): Cody-Waite range
 * reduction to r in [-ln2/2, ln2/2] and exp(r) = 1 + r + r^2 p(r), p of degree 4, branch-free so that loops
 * calling it vectorise. Arguments below -87 give exp(-87) ~ 1.6e-38 instead of a smaller number or 0, a
 * difference no float32 sum can see.
 * The polynomials here are least-squares fits of the relative error on Chebyshev nodes
 * (benchmarks/kernel_polynomials.py refits and checks them): as accurate in float32 as the longer Taylor/Cephes
 * forms and a few multiply-adds shorter, which matters because they are most of the kernel's arithmetic. */
typedef union { float f; int32_t i; } float_bits;

static inline float exp_nonpos(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.3751407896e-3f;
    p = p * r + 8.3689163414e-3f;
    p = p * r + 4.1669533109e-2f;
    p = p * r + 1.6666518460e-1f;
    p = p * r + 4.9999988595e-1f;
    p = p * r * r + r + 1.0f;
    /* 2^n from the bits of n + 127 + 1.5 * 2^23, whose low mantissa bits hold the integer n + 127 */
    const float_bits biased = {.f = n + (127.0f + 12582912.0f)};
    const float_bits scale = {.i = (biased.i - 0x4B400000) << 23};
    return p * scale.f;
}

/* log1p(z) for z in [0, 1] as 2 atanh(s) = 2 s q(s^2), s = z / (2 + z) in [0, 1/3], q of degree 4 fitted on
 * [0, 1/9] (fit error 4e-9; the softplus below is within 3e-7 relative of float64's over [-30, 30]). */
static inline float log1p_unit(float z) {
    const float s = z / (2.0f + z), s2 = s * s;
    float p = 1.4087328630e-1f;
    p = p * s2 + 1.3980709418e-1f;
    p = p * s2 + 2.0012426862e-1f;
    p = p * s2 + 3.3333157968e-1f;
    p = p * s2 + 1.0000000039e+0f;
    return 2.0f * s * p;
}

/* delta = softplus(x) = max(x, 0) + log1p(exp(-|x|)) (or x itself), and its derivative sigmoid(x) (or 1). */
static inline float step_size(float x, int softplus) {
    if (!softplus) return x;
    const float z = exp_nonpos(x < 0.0f ? x : -x);
    return (x > 0.0f ? x : 0.0f) + log1p_unit(z);
}

static inline float step_size_grad(float x, int softplus) {
    if (!softplus) return 1.0f;
    const float z = exp_nonpos(x < 0.0f ? x : -x);
    return (x >= 0.0f ? 1.0f : z) / (1.0f + z);
}

static inline int64_t token_at(int64_t k, int64_t t, int64_t height, int64_t width, int order) {
    if (order == 1) return t;
    int64_t length = height * width;
    int64_t s = k >= 2 ? length - 1 - t : t;
    return (k & 1) ? (s % height) * width + s / height : s;
}

/* 16 float lanes (GNU vector extension: one AVX-512 register, or two or four narrower ones elsewhere). */
typedef float lanes16 __attribute__((vector_size(64)));

static inline lanes16 load16(const float *p) { lanes16 v; memcpy(&v, p, sizeof v); return v; }
static inline lanes16 splat16(float x) { return (lanes16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }
static inline void store16(float *p, lanes16 v) { memcpy(p, &v, sizeof v); }

/* dr[d] = bias[d] + sum_r low[r] w[r D + d] for d < nd: the step sizes' rank-R projection of one token, 64 channels
 * at a time in registers (a loop over d with r inside would load and store dr R times). */
static void project_steps(float *restrict dr, const float *restrict bias, const float *restrict low,
                          const float *restrict w, int64_t R, int64_t D, int64_t nd) {
    int64_t d = 0;
    for (; d + 64 <= nd; d += 64) {
        lanes16 a0 = load16(bias + d), a1 = load16(bias + d + 16), a2 = load16(bias + d + 32), a3 = load16(bias + d + 48);
        for (int64_t r = 0; r < R; ++r) {
            const lanes16 l = splat16(low[r]);
            const float *wr = w + r * D + d;
            a0 += l * load16(wr);
            a1 += l * load16(wr + 16);
            a2 += l * load16(wr + 32);
            a3 += l * load16(wr + 48);
        }
        store16(dr + d, a0);
        store16(dr + d + 16, a1);
        store16(dr + d + 32, a2);
        store16(dr + d + 48, a3);
    }
    for (; d + 16 <= nd; d += 16) {
        lanes16 a = load16(bias + d);
        for (int64_t r = 0; r < R; ++r) a += splat16(low[r]) * load16(w + r * D + d);
        store16(dr + d, a);
    }
    for (; d < nd; ++d) {
        float a = bias[d];
        for (int64_t r = 0; r < R; ++r) a += low[r] * w[r * D + d];
        dr[d] = a;
    }
}

void openus_scan_fwd(const float *restrict u, int64_t u_b, int64_t u_tok, int64_t u_k,
                     const float *restrict dt, const float *restrict dtw, int64_t R, const float *restrict bias,
                     int softplus, const float *restrict A, const float *restrict Bm,
                     const float *restrict Cm, const float *restrict Dk, float *restrict y,
                     float *restrict hs, int64_t K, int64_t D, int64_t N, int64_t height, int64_t width,
                     int order, int64_t b0, int64_t b1, int64_t d0, int64_t d1) {
    const int64_t L = height * width;
    float h[MAX_STATE * BLOCK], acc[BLOCK], dr[BLOCK];
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t c0 = d0; c0 < d1; c0 += BLOCK) {
            const int64_t nd = (d1 - c0) < BLOCK ? (d1 - c0) : BLOCK;
            for (int64_t k = 0; k < K; ++k) {
                for (int64_t i = 0; i < N * nd; ++i) h[i] = 0.0f;
                const float *Ak = A + k * N * D + c0;
                const float *Dkk = Dk + k * D + c0, *biask = bias + k * D + c0;
                const int first = k == 0 || u_k != 0; /* the first direction to write this block of y */
                for (int64_t t = 0; t < L; ++t) {
                    const int64_t tok = token_at(k, t, height, width, order);
                    const float *ur = u + b * u_b + tok * u_tok + k * u_k + c0;
                    float *yr = y + b * u_b + tok * u_tok + k * u_k + c0;
                    const int64_t row = (b * L + tok) * K + k;
                    const float *br = Bm + row * N, *cr = Cm + row * N;
                    const float *low = dtw ? dt + row * R : 0, *dtr = dtw ? 0 : dt + row * D + c0;
                    float *hr = hs ? hs + ((b * K + k) * L + t) * N * D + c0 : 0;
                    if (dtw)
                        project_steps(dr, biask, low, dtw + k * R * D + c0, R, D, nd);
                    else {
#pragma omp simd
                        for (int64_t d = 0; d < nd; ++d) dr[d] = dtr[d] + biask[d];
                    }
#pragma omp simd
                    for (int64_t d = 0; d < nd; ++d) {
                        dr[d] = step_size(dr[d], softplus);
                        acc[d] = Dkk[d] * ur[d];
                    }
                    for (int64_t n = 0; n < N; ++n) {
                        const float bn = br[n], cn = cr[n];
                        const float *An = Ak + n * D;
                        float *hn = h + n * nd;
#pragma omp simd
                        for (int64_t d = 0; d < nd; ++d) {
                            const float v = exp_nonpos(dr[d] * An[d]) * hn[d] + dr[d] * bn * ur[d];
                            hn[d] = v;
                            acc[d] += cn * v;
                        }
                        if (hr)
                            for (int64_t d = 0; d < nd; ++d) hr[n * D + d] = hn[d];
                    }
                    if (first) {
#pragma omp simd
                        for (int64_t d = 0; d < nd; ++d) yr[d] = acc[d];
                    } else {
#pragma omp simd
                        for (int64_t d = 0; d < nd; ++d) yr[d] += acc[d];
                    }
                }
            }
        }
}

/* Gradients, by the same recurrence run backwards: G_t = dL/dh_t = C_t gy_t + a_{t+1} G_{t+1}.
 * gu accumulates like y; gdt [B, L, K, D] is written; gA [B, K, N, D], gbias and gDk [B, K, D] accumulate;
 * gB, gC [B, L, K, N] accumulate this call's channel range (the caller gives each thread its own copy). */
void openus_scan_bwd(const float *restrict u, int64_t u_b, int64_t u_tok, int64_t u_k,
                     const float *restrict dt, const float *restrict bias, int softplus, const float *restrict A,
                     const float *restrict Bm, const float *restrict Cm, const float *restrict Dk,
                     const float *restrict hs, const float *restrict gy, float *restrict gu, float *restrict gdt_out,
                     float *restrict gA, float *restrict gB, float *restrict gC, float *restrict gDk,
                     float *restrict gbias, int64_t K, int64_t D,
                     int64_t N, int64_t height, int64_t width, int order, int64_t b0, int64_t b1, int64_t d0,
                     int64_t d1) {
    const int64_t L = height * width;
    float G[MAX_STATE * BLOCK], gdt[BLOCK], gacc[BLOCK], zeros[BLOCK], dr[BLOCK];
    for (int64_t d = 0; d < BLOCK; ++d) zeros[d] = 0.0f;
    for (int64_t b = b0; b < b1; ++b)
        for (int64_t c0 = d0; c0 < d1; c0 += BLOCK) {
            const int64_t nd = (d1 - c0) < BLOCK ? (d1 - c0) : BLOCK;
            for (int64_t k = 0; k < K; ++k) {
                for (int64_t i = 0; i < N * nd; ++i) G[i] = 0.0f;
                const float *Ak = A + k * N * D + c0;
                const float *Dkk = Dk + k * D + c0, *biask = bias + k * D + c0;
                float *gAk = gA + (b * K + k) * N * D + c0;
                float *gDkk = gDk + (b * K + k) * D + c0, *gbiask = gbias + (b * K + k) * D + c0;
                for (int64_t t = L - 1; t >= 0; --t) {
                    const int64_t tok = token_at(k, t, height, width, order);
                    const int64_t row = (b * L + tok) * K + k;
                    const float *ur = u + b * u_b + tok * u_tok + k * u_k + c0;
                    const float *gyr = gy + b * u_b + tok * u_tok + k * u_k + c0;
                    float *gur = gu + b * u_b + tok * u_tok + k * u_k + c0;
                    const float *dtr = dt + row * D + c0;
                    const float *hr = hs + ((b * K + k) * L + t) * N * D + c0;
                    const float *hp = t > 0 ? hr - N * D : 0; /* h_{t-1}; h_{-1} = 0 */
#pragma omp simd
                    for (int64_t d = 0; d < nd; ++d) {
                        dr[d] = step_size(dtr[d] + biask[d], softplus);
                        gdt[d] = 0.0f;
                        gacc[d] = Dkk[d] * gyr[d];
                        gDkk[d] += gyr[d] * ur[d];
                    }
                    for (int64_t n = 0; n < N; ++n) {
                        const float bn = Bm[row * N + n], cn = Cm[row * N + n];
                        const float *An = Ak + n * D;
                        const float *hn = hr + n * D;
                        const float *hpn = hp ? hp + n * D : zeros;
                        float *Gn = G + n * nd;
                        float *gAn = gAk + n * D;
                        float sb = 0.0f, sc = 0.0f;
#pragma omp simd reduction(+ : sb, sc)
                        for (int64_t d = 0; d < nd; ++d) {
                            const float a = exp_nonpos(dr[d] * An[d]);
                            const float g = Gn[d] + gyr[d] * cn;
                            const float ga = g * hpn[d];
                            sc += gyr[d] * hn[d];
                            sb += g * dr[d] * ur[d];
                            gdt[d] += ga * a * An[d] + g * bn * ur[d];
                            gAn[d] += ga * a * dr[d];
                            gacc[d] += g * dr[d] * bn;
                            Gn[d] = g * a;
                        }
                        gB[row * N + n] += sb;
                        gC[row * N + n] += sc;
                    }
                    float *gdtr = gdt_out + row * D + c0;
#pragma omp simd
                    for (int64_t d = 0; d < nd; ++d) {
                        const float graw = gdt[d] * step_size_grad(dtr[d] + biask[d], softplus);
                        gdtr[d] = graw;
                        gbiask[d] += graw;
                        gur[d] += gacc[d];
                    }
                }
            }
        }
}
