#ifndef DYNVAE_LANE_KERNELS
/*
 * Kalman filter and Rauch-Tung-Striebel smoother for linear Gaussian state-space models,
 * in plain C99 (no BLAS): the inference-only back end of dynvae.ssm.native. It computes
 * the same quantities as dynvae.ssm.kalman:
 *
 *   predict   m = A_t m + o_t,  P = sym(A_t P A_t^T + Q_t)                   (t >= 1)
 *   update    S = sym(H P H^T + R) = L L^T,  K = P H^T S^{-1},
 *             m += K (y - H m),  P = sym((I - K H) P (I - K H)^T + K R K^T) (Joseph form)
 *   log-lik   log N(y - H m | 0, S) over the observed entries only
 *   smoother  G_t = P_{t|t} A_{t+1}^T P_{t+1|t}^{-1}  (RTS),
 *             m_t^s = m_{t|t} + G_t (m_{t+1}^s - m_{t+1|t}),
 *             P_t^s = sym(P_{t|t} + G_t (P_{t+1}^s - P_{t+1|t}) G_t^T),
 *             Cov(z_{t+1}, z_t | x) = P_{t+1}^s G_t^T.
 *
 * Batched as structure of arrays: LANES = 8 sequences advance together, every
 * small-matrix entry held as a vector over the lanes (X[i * LANES + l]), so each
 * operation is an elementwise loop over lanes that the compiler turns into SIMD
 * instructions; the B mod 8 remaining sequences run the same code with LANES = 1 (this
 * file includes itself once per width, see the end). Observations and outputs are laid
 * out time-major, (T, B, D) and (T, B, S[, S]), so a block's lanes are contiguous. The
 * smoother gain solves P_{t+1|t} after Jacobi equilibration (unit diagonal) by a
 * semidefinite Cholesky factorisation: a pivot below PIVOT_FLOOR marks a direction the
 * predicted covariance does not span, whose component is set to zero (a generalised
 * inverse; the gain applied to vectors in the range of P_{t+1|t} does not depend on which).
 *
 * Missing entries use the masked-entry trick of dynvae.gaussian.mask_observation: their
 * row of H is zeroed, their block of R is replaced by the identity (and y is 0 there),
 * so they carry no information; -0.5 log(2 pi) is counted only for the observed entries.
 * All matrices are row-major float64. Every parameter is passed with a batch stride and
 * a time stride (in doubles): 0 means "shared", so constant and time-varying parameters,
 * shared or per-sequence, use one code path.
 *
 * Numerical guard (as dynvae.ssm.guard, in the balanced basis z / d with d_i a power of
 * two near sqrt(P0_ii)): conditioning never adds variance (diag P_{t|t}, diag P_{t|T} <=
 * diag P_{t|t-1} up to a slack of sqrt(tol) times the largest predicted variance so far
 * plus tol relative), and a posterior mean moves from the predicted one by at most
 * sqrt(P_{t|t-1, ii}) times the norm of the normalised innovations. Non-finite or
 * exploding moments stop the run with ERR_EXPLODED and the sequence, step and kind.
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

/* Parameter slots of the `params` / `strides` arrays passed by the caller. */
enum { P_M0, P_P0, P_A, P_Q, P_H, P_R, P_OFF, N_PARAMS };

/* Error codes returned to Python (batch index, step and kind go to err[0..2]). */
enum { OK = 0, ERR_INNOVATION_NOT_PD = 1, ERR_NO_MEMORY = 3, ERR_EXPLODED = 4 };
enum { FILTERED_COV = 0, FILTERED_MEAN = 1, SMOOTHED_COV = 2, SMOOTHED_MEAN = 3 };

#define PIVOT_FLOOR 1e-13
static const double LOG_2PI = 1.8378770664093454836;

/* Kernels take the sizes at run time: the loops over lanes are what vectorises, and
 * leaving the rest to the compiler keeps the build to a few seconds. */
#define INLINE static
/* Arrays of the whole batch, time-major: entry (b, t, i) of an n-vector series at
 * (t * B + b) * n, as a scan over time stacks them. Outputs: pm, fm, sm (T, B, S);
 * pc, fc, sc, cc (T, B, S, S). A block's lanes at one step are then one contiguous run
 * of memory, and a pass over time streams through each array in order. */
typedef struct {
    i64 B, T;
    const double *const *params;
    const i64 *strides;
    const double *y;                                      /* (T, B, D) */
    const uint8_t *mask;                                  /* (T, B, D) */
    double *pm, *pc, *fm, *fc, *ll, *sm, *sc, *cc;
    double tol;
} Problem;

#define AT(p, t, b, n) (((t) * (p)->B + (b)) * (n))     /* offset of (b, t, 0) */

#define FOR_LANES(l) for (int l = 0; l < LANES; l++)
#define V(X, i) ((X) + (size_t)(i) * LANES)                 /* lane vector of entry i */
/* lane vectors of workspace for one block of any S, D (with room to spare) */
#define LANE_WORK(S, D) ((size_t)(12 * (S) * (S) + 6 * (S) * (D) + 6 * (D) * (D) \
                                  + 14 * (S) + 8 * (D) + 20))

#define DYNVAE_LANE_KERNELS
#define LANES 8
#define SFX(name) name##_x8
#include "kalman.c"
#undef LANES
#undef SFX
#define LANES 1
#define SFX(name) name##_x1
#include "kalman.c"

/* ------------------------------------------------------------ shared covariances */

/* When every parameter that shapes the covariances (P0, A, Q, H, R) is shared by the
 * batch and every sequence has the same missing entries, P_{t|t-1}, P_{t|t}, the gains and
 * P_{t|T} are the same for all sequences: they are computed once per step (with the
 * one-lane kernels) and only the means, offsets and log-likelihood terms run per
 * sequence, as loops over the batch. Here y is (B, T, D), means are (T, S, B) (a state
 * of every sequence is one contiguous row) and covariance outputs (T, S, S). */

typedef struct {
    double *P, *Pp, *tmp, *A, *Q, *H, *Hm, *R, *Rm, *PHt, *KT, *KR, *Sm, *Lc, *IKH, *dinv2;
    double *Pf, *Ppn, *Ppt, *X, *dP, *GdP, *Cm, *dsq, *cross;
} CovWork;

static void cov_work(int S, int D, double *w, CovWork *c)
{
    double **slots[] = {&c->P, &c->Pp, &c->tmp, &c->A, &c->Q, &c->IKH, &c->Pf, &c->Ppn,
                        &c->Ppt, &c->X, &c->dP, &c->GdP, &c->Cm, &c->cross};
    for (size_t k = 0; k < sizeof slots / sizeof *slots; k++, w += S * S) *slots[k] = w;
    c->H = w; c->Hm = w + D * S; c->PHt = w + 2 * D * S; c->KT = w + 3 * D * S;
    c->KR = w + 4 * D * S; w += 5 * D * S;
    c->R = w; c->Rm = w + D * D; c->Sm = w + 2 * D * D; c->Lc = w + 3 * D * D; w += 4 * D * D;
    c->dinv2 = w; c->dsq = w + S;
}

/* Flags a violation of the variance bound (see guard) for one covariance pair. */
static int cov_bad(int S, const double *Pp, const double *P, const double *dinv2,
                   double size, double tol)
{
    int bad = 0;
    for (int i = 0; i < S; i++) {
        double dp = Pp[i * S + i] * dinv2[i], dq = P[i * S + i] * dinv2[i];
        double slack = sqrt(tol) * size + tol * fabs(dp) + 1e-300;
        bad |= !((dq <= dp + slack) & (dq >= -slack) & (dp >= -slack) & (dp - dp == 0.0));
    }
    return bad;
}

/* The mean bound of guard for every sequence: m, mp (S, B) SoA; room (B). Returns the
 * first violating sequence or -1. */
static i64 means_bad(int S, i64 B, const double *mp, const double *Pp, const double *m,
                     const double *dinv2, double size, double tol, const double *room)
{
    for (int i = 0; i < S; i++) {
        double dp = Pp[i * S + i] * dinv2[i];
        double slack = sqrt(tol) * size + tol * fabs(dp) + 1e-300;
        double lim = 4.0 * ((dp > 0.0 ? dp : 0.0) + slack);
        const double *a = m + i * B, *b = mp + i * B;
        int any = 0;
        for (i64 k = 0; k < B; k++) {
            double shift = (a[k] - b[k]) * (a[k] - b[k]) * dinv2[i];
            any |= !(shift <= lim * room[k]) | !(a[k] - a[k] == 0.0);
        }
        if (any)
            for (i64 k = 0; k < B; k++) {
                double shift = (a[k] - b[k]) * (a[k] - b[k]) * dinv2[i];
                if (!(shift <= lim * room[k]) || !(a[k] - a[k] == 0.0)) return k;
            }
    }
    return -1;
}

/* Predicted covariance at step t and the update's gain, factor and filtered covariance;
 * returns 1 if the innovation covariance is not positive definite. */
static int shared_cov_step(int S, int D, const Problem *p, const uint8_t *ok, i64 t,
                           CovWork *c)
{
    const i64 *st = p->strides;
    int bad = 0;
    if (t > 0) {
        memcpy(c->A, p->params[P_A] + t * st[2 * P_A + 1], S * S * sizeof(double));
        memcpy(c->Q, p->params[P_Q] + t * st[2 * P_Q + 1], S * S * sizeof(double));
        mm_x1(S, S, S, c->A, c->P, c->tmp);
        mm_t_x1(S, S, S, c->tmp, c->A, c->P);
        for (int i = 0; i < S * S; i++) c->P[i] += c->Q[i];
        symmetrize_x1(S, c->P);
    }
    memcpy(c->Pp, c->P, S * S * sizeof(double));
    const double *H = p->params[P_H] + t * st[2 * P_H + 1];
    const double *R = p->params[P_R] + t * st[2 * P_R + 1];
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < S; j++) c->Hm[i * S + j] = ok[i] ? H[i * S + j] : 0.0;
        for (int j = 0; j < D; j++)
            c->Rm[i * D + j] = (ok[i] && ok[j]) ? R[i * D + j] : (i == j ? 1.0 : 0.0);
    }
    mm_t_x1(S, S, D, c->P, c->Hm, c->PHt);
    mm_x1(D, S, D, c->Hm, c->PHt, c->Sm);
    for (int i = 0; i < D * D; i++) c->Sm[i] += c->Rm[i];
    symmetrize_x1(D, c->Sm);
    cholesky_x1(D, c->Sm, c->Lc, &bad);
    if (bad) return 1;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < S; j++) c->KT[i * S + j] = c->PHt[j * D + i];
    chol_solve_x1(D, S, c->Lc, c->KT, 1);
    mtm_x1(S, D, S, c->KT, c->Hm, c->IKH);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) c->IKH[i * S + j] = (i == j) - c->IKH[i * S + j];
    mm_x1(S, S, S, c->IKH, c->P, c->tmp);
    mm_t_x1(S, S, S, c->tmp, c->IKH, c->P);
    mtm_x1(S, D, D, c->KT, c->Rm, c->KR);
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++)
            for (int q = 0; q < D; q++) c->P[i * S + j] += c->KR[i * D + q] * c->KT[q * S + j];
    symmetrize_x1(S, c->P);
    return 0;
}

/* Means of every sequence through step t of the filter: m (S, B) holds m_{t-1|t-1} on
 * entry and m_{t|t} on exit, mp gets m_{t|t-1} (rows of the outputs pm, fm at step t),
 * e2 the squared normalised innovations. */
static void shared_mean_step(int S, int D, const Problem *p, const uint8_t *ok, i64 t,
                             const CovWork *c, double *m, double *mp, double *res, double *e2)
{
    const i64 B = p->B, *st = p->strides;
    if (t == 0) {
        memcpy(mp, m, S * B * sizeof(double));
    } else {
        for (int i = 0; i < S; i++) {
            double *o = mp + i * B;
            for (i64 k = 0; k < B; k++) o[k] = 0.0;
            for (int j = 0; j < S; j++) {
                const double a = c->A[i * S + j], *v = m + j * B;
                for (i64 k = 0; k < B; k++) o[k] += a * v[k];
            }
        }
        if (p->params[P_OFF])
            for (i64 k = 0; k < B; k++) {
                const double *off = p->params[P_OFF] + k * st[2 * P_OFF] + t * st[2 * P_OFF + 1];
                for (int i = 0; i < S; i++) mp[i * B + k] += off[i];
            }
    }
    const double *y = p->y + t * D;
    const i64 yb = p->T * D;                              /* y is (B, T, D) */
    for (int j = 0; j < D; j++) {
        double *r = res + j * B;
        for (i64 k = 0; k < B; k++) r[k] = ok[j] ? y[k * yb + j] : 0.0;
        for (int q = 0; q < S; q++) {
            const double h = c->Hm[j * S + q], *v = mp + q * B;
            for (i64 k = 0; k < B; k++) r[k] -= h * v[k];
        }
    }
    for (int i = 0; i < S; i++) {
        double *o = m + i * B;
        memcpy(o, mp + i * B, B * sizeof(double));
        for (int j = 0; j < D; j++) {
            const double kk = c->KT[j * S + i], *r = res + j * B;
            for (i64 k = 0; k < B; k++) o[k] += kk * r[k];
        }
    }
    for (i64 k = 0; k < B; k++) e2[k] = 0.0;
    for (int j = 0; j < D; j++) {                         /* z = L^{-1} resid, in place */
        double *r = res + j * B;
        for (int q = 0; q < j; q++) {
            const double l = c->Lc[j * D + q], *v = res + q * B;
            for (i64 k = 0; k < B; k++) r[k] -= l * v[k];
        }
        const double d = c->Lc[j * D + j];
        for (i64 k = 0; k < B; k++) { r[k] /= d; e2[k] += r[k] * r[k]; }
    }
}

static int shared_filter(int S, int D, const Problem *p, const uint8_t *mask0, CovWork *c,
                         double *res, double *e2, double *msum, double *size, i64 *err)
{
    const i64 B = p->B, T = p->T, *st = p->strides;
    double logdet = 0.0, nobs = 0.0;
    memcpy(c->P, p->params[P_P0], S * S * sizeof(double));
    for (int i = 0; i < S; i++) {
        double v = c->P[i * S + i], d2 = 1.0;
        if (v > 0.0 && v - v == 0.0) d2 = exp2(2.0 * nearbyint(0.5 * log2(v)));
        c->dinv2[i] = 1.0 / d2;
    }
    for (i64 k = 0; k < B; k++) {                         /* m_{-1|-1} := m0, in fm row 0 */
        const double *m0 = p->params[P_M0] + k * st[2 * P_M0];
        for (int i = 0; i < S; i++) p->fm[i * B + k] = m0[i];
        msum[k] = 0.0;
    }
    for (i64 t = 0; t < T; t++) {
        const uint8_t *ok = mask0 + t * D;
        double *mp = p->pm + t * S * B, *m = p->fm + t * S * B;
        if (shared_cov_step(S, D, p, ok, t, c)) {
            err[0] = 0; err[1] = t; err[2] = 0;
            return ERR_INNOVATION_NOT_PD;
        }
        if (t <= 1) *size = 0.0;
        for (int i = 0; i < S; i++) {
            double v = fabs(c->Pp[i * S + i] * c->dinv2[i]);
            if (v > *size) *size = v;
        }
        for (int j = 0; j < D; j++) { nobs += ok[j] != 0; logdet += log(c->Lc[j * D + j]); }
        if (t > 0) memcpy(m, m - S * B, S * B * sizeof(double));
        shared_mean_step(S, D, p, ok, t, c, m, mp, res, e2);
        for (i64 k = 0; k < B; k++) { msum[k] += e2[k]; res[k] = 1.0 + e2[k]; }
        if (cov_bad(S, c->Pp, c->P, c->dinv2, *size, p->tol)) {
            err[0] = 0; err[1] = t; err[2] = FILTERED_COV;
            return ERR_EXPLODED;
        }
        i64 bad = means_bad(S, B, mp, c->Pp, m, c->dinv2, *size, p->tol, res);
        if (bad >= 0) { err[0] = bad; err[1] = t; err[2] = FILTERED_MEAN; return ERR_EXPLODED; }
        memcpy(p->pc + t * S * S, c->Pp, S * S * sizeof(double));
        memcpy(p->fc + t * S * S, c->P, S * S * sizeof(double));
    }
    for (i64 k = 0; k < B; k++) p->ll[k] = -0.5 * (msum[k] + nobs * LOG_2PI) - logdet;
    return OK;
}

static int shared_smoother(int S, const Problem *p, CovWork *c, double *dm, double *room,
                           const double *msum, double size, i64 *err)
{
    const i64 B = p->B, T = p->T, *st = p->strides;
    double *Ps = c->P;
    memcpy(p->sm + (T - 1) * S * B, p->fm + (T - 1) * S * B, S * B * sizeof(double));
    memcpy(Ps, p->fc + (T - 1) * S * S, S * S * sizeof(double));
    memcpy(p->sc + (T - 1) * S * S, Ps, S * S * sizeof(double));
    memset(p->cc, 0, S * S * sizeof(double));
    for (i64 k = 0; k < B; k++) room[k] = 1.0 + msum[k];
    for (i64 t = T - 2; t >= 0; t--) {
        memcpy(c->A, p->params[P_A] + (t + 1) * st[2 * P_A + 1], S * S * sizeof(double));
        memcpy(c->Pf, p->fc + t * S * S, S * S * sizeof(double));
        memcpy(c->Ppn, p->pc + (t + 1) * S * S, S * S * sizeof(double));
        mm_x1(S, S, S, c->A, c->Pf, c->X);
        psd_solve_x1(S, S, c->Ppn, c->X, c->Cm, c->tmp, c->dsq);     /* X = G^T */
        mm_x1(S, S, S, Ps, c->X, p->cc + (t + 1) * S * S);
        for (int i = 0; i < S * S; i++) c->dP[i] = Ps[i] - c->Ppn[i];
        mtm_x1(S, S, S, c->X, c->dP, c->GdP);
        mm_x1(S, S, S, c->GdP, c->X, Ps);
        for (int i = 0; i < S * S; i++) Ps[i] += c->Pf[i];
        symmetrize_x1(S, Ps);
        if (cov_bad(S, p->pc + t * S * S, Ps, c->dinv2, size, p->tol)) {
            err[0] = 0; err[1] = t; err[2] = SMOOTHED_COV;
            return ERR_EXPLODED;
        }
        memcpy(p->sc + t * S * S, Ps, S * S * sizeof(double));
        const double *ms1 = p->sm + (t + 1) * S * B, *mp1 = p->pm + (t + 1) * S * B;
        double *ms = p->sm + t * S * B;
        for (int i = 0; i < S * B; i++) dm[i] = ms1[i] - mp1[i];  /* m^s_{t+1} - m_{t+1|t} */
        memcpy(ms, p->fm + t * S * B, S * B * sizeof(double));
        for (int i = 0; i < S; i++) {
            double *o = ms + i * B;
            for (int j = 0; j < S; j++) {
                const double g = c->X[j * S + i], *v = dm + j * B;
                for (i64 k = 0; k < B; k++) o[k] += g * v[k];
            }
        }
        i64 bad = means_bad(S, B, p->pm + t * S * B, p->pc + t * S * S, ms, c->dinv2, size,
                            p->tol, room);
        if (bad >= 0) { err[0] = bad; err[1] = t; err[2] = SMOOTHED_MEAN; return ERR_EXPLODED; }
    }
    return OK;
}

/* Entry point of the shared-covariance case: as dynvae_kalman, but P0, A, Q, H, R have
 * batch stride 0, mask0 (T, D) is every sequence's mask, y is (B, T, D), the means
 * pm, fm, sm are (T, S, B) and the covariances pc, fc, sc, cc (T, S, S). */
int dynvae_kalman_shared(i64 B, i64 T, int S, int D, const double *const *params,
                         const i64 *strides, const double *y, const uint8_t *mask0,
                         double *pm, double *pc, double *fm, double *fc, double *ll,
                         double *sm, double *sc, double *cc, double tol, i64 *err)
{
    Problem p = {B, T, params, strides, y, mask0, pm, pc, fm, fc, ll, sm, sc, cc, tol};
    size_t n_cov = 14 * S * S + 5 * D * S + 4 * D * D + 2 * S;
    size_t n_mean = (size_t)B * (S + D + 2);
    double *w = malloc((n_cov + n_mean) * sizeof(double)), size = 0.0;
    CovWork c;
    int rc;
    if (!w) return ERR_NO_MEMORY;
    cov_work(S, D, w, &c);
    double *res = w + n_cov, *e2 = res + (S + D) * B, *msum = e2 + B;
    rc = shared_filter(S, D, &p, mask0, &c, res, e2, msum, &size, err);
    if (!rc && sm) rc = shared_smoother(S, &p, &c, res, e2, msum, size, err);
    free(w);
    return rc;
}

/* Entry point. B sequences of T steps, S states, D observed entries.
 *   params[N_PARAMS]: m0 (S), P0 (S, S), A (S, S), Q (S, S), H (D, S), R (D, D),
 *       transition offset (S) or NULL; strides[2 k], strides[2 k + 1]: batch and
 *       time stride of params[k] in doubles (0 = shared), params batch-major.
 *   y, mask: (T, B, D) contiguous.  Outputs (T, B, S[, S]) contiguous; ll (B).
 *   sm, sc, cc: smoother outputs, or all NULL for the filter only.
 *   tol: relative round-off slack of the numerical guard.
 * Returns 0, or an error code with err[0] = batch index, err[1] = step, err[2] = kind. */
int dynvae_kalman(i64 B, i64 T, int S, int D, const double *const *params,
                  const i64 *strides, const double *y, const uint8_t *mask, double *pm,
                  double *pc, double *fm, double *fc, double *ll, double *sm, double *sc,
                  double *cc, double tol, i64 *err)
{
    Problem p = {B, T, params, strides, y, mask, pm, pc, fm, fc, ll, sm, sc, cc, tol};
    double *w = malloc(8 * LANE_WORK(S, D) * sizeof(double));
    int rc = OK;
    i64 b0 = 0;
    if (!w) return ERR_NO_MEMORY;
    for (; b0 + 8 <= B && !rc; b0 += 8) rc = run_block_x8(S, D, &p, b0, w, err);
    for (; b0 < B && !rc; b0++) rc = run_block_x1(S, D, &p, b0, w, err);
    free(w);
    return rc;
}

#else  /* DYNVAE_LANE_KERNELS: the kernels, once per lane width */

/* ------------------------------------------------------------ lane-vector kernels */

/* C (n x m) = A (n x k) B (k x m); mm_t: C = A B^T with B (m x k). */
INLINE void SFX(mm)(int n, int k, int m, const double *restrict A, const double *restrict B,
               double *restrict C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double *restrict c = V(C, i * m + j);
            FOR_LANES(l) c[l] = 0.0;
            for (int q = 0; q < k; q++) {
                const double *restrict a = V(A, i * k + q), *restrict b = V(B, q * m + j);
                FOR_LANES(l) c[l] += a[l] * b[l];
            }
        }
}

INLINE void SFX(mm_t)(int n, int k, int m, const double *restrict A, const double *restrict B,
                 double *restrict C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double *restrict c = V(C, i * m + j);
            FOR_LANES(l) c[l] = 0.0;
            for (int q = 0; q < k; q++) {
                const double *restrict a = V(A, i * k + q), *restrict b = V(B, j * k + q);
                FOR_LANES(l) c[l] += a[l] * b[l];
            }
        }
}

/* C (n x m) = A^T B, with A (k x n), B (k x m). */
INLINE void SFX(mtm)(int n, int k, int m, const double *restrict A, const double *restrict B,
                double *restrict C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double *restrict c = V(C, i * m + j);
            FOR_LANES(l) c[l] = 0.0;
            for (int q = 0; q < k; q++) {
                const double *restrict a = V(A, q * n + i), *restrict b = V(B, q * m + j);
                FOR_LANES(l) c[l] += a[l] * b[l];
            }
        }
}

INLINE void SFX(symmetrize)(int n, double *P)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double *a = V(P, i * n + j), *b = V(P, j * n + i);
            FOR_LANES(l) { double v = 0.5 * (a[l] + b[l]); a[l] = v; b[l] = v; }
        }
}

/* Cholesky factor Lc of the n x n matrix M, per lane; bad[l] = 1 where M is not PD. */
INLINE void SFX(cholesky)(int n, const double *M, double *Lc, int *bad)
{
    for (int j = 0; j < n; j++) {
        double *d = V(Lc, j * n + j);
        FOR_LANES(l) d[l] = V(M, j * n + j)[l];
        for (int q = 0; q < j; q++) {
            const double *a = V(Lc, j * n + q);
            FOR_LANES(l) d[l] -= a[l] * a[l];
        }
        FOR_LANES(l) {
            bad[l] |= !(d[l] > 0.0);                      /* also catches NaN */
            d[l] = sqrt(d[l] > 0.0 ? d[l] : 1.0);
        }
        for (int i = j + 1; i < n; i++) {
            double *s = V(Lc, i * n + j);
            FOR_LANES(l) s[l] = V(M, i * n + j)[l];
            for (int q = 0; q < j; q++) {
                const double *a = V(Lc, i * n + q), *b = V(Lc, j * n + q);
                FOR_LANES(l) s[l] -= a[l] * b[l];
            }
            FOR_LANES(l) s[l] /= d[l];
        }
    }
}

/* X (n x m) <- Lc^{-1} X, then (if back) Lc^{-T} X; Lc lower n x n. */
INLINE void SFX(chol_solve)(int n, int m, const double *Lc, double *X, int back)
{
    for (int c = 0; c < m; c++) {
        for (int i = 0; i < n; i++) {
            double *x = V(X, i * m + c);
            for (int q = 0; q < i; q++) {
                const double *a = V(Lc, i * n + q), *b = V(X, q * m + c);
                FOR_LANES(l) x[l] -= a[l] * b[l];
            }
            const double *d = V(Lc, i * n + i);
            FOR_LANES(l) x[l] /= d[l];
        }
        if (!back) continue;
        for (int i = n - 1; i >= 0; i--) {
            double *x = V(X, i * m + c);
            for (int q = i + 1; q < n; q++) {
                const double *a = V(Lc, q * n + i), *b = V(X, q * m + c);
                FOR_LANES(l) x[l] -= a[l] * b[l];
            }
            const double *d = V(Lc, i * n + i);
            FOR_LANES(l) x[l] /= d[l];
        }
    }
}

/* X (n x m) <- P^- X for symmetric PSD P (n x n): Jacobi equilibration, then a
 * semidefinite Cholesky factorisation (pivots below PIVOT_FLOOR of the unit diagonal are
 * dropped: a generalised inverse). Work: Cm, Lc (n x n), dsq (n). */
INLINE void SFX(psd_solve)(int n, int m, const double *P, double *X, double *Cm, double *Lc,
                      double *dsq)
{
    for (int i = 0; i < n; i++) {
        const double *p = V(P, i * n + i);
        double *s = V(dsq, i);
        FOR_LANES(l) s[l] = sqrt(p[l] > 0.0 ? p[l] : 1.0);
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            const double *p = V(P, i * n + j), *a = V(dsq, i), *b = V(dsq, j);
            double *c = V(Cm, i * n + j);
            FOR_LANES(l) c[l] = p[l] / (a[l] * b[l]);
        }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double *x = V(X, i * m + c);
            const double *a = V(dsq, i);
            FOR_LANES(l) x[l] /= a[l];
        }
    for (int j = 0; j < n; j++) {                          /* semidefinite Cholesky */
        double *d = V(Lc, j * n + j);
        FOR_LANES(l) d[l] = V(Cm, j * n + j)[l];
        for (int q = 0; q < j; q++) {
            const double *a = V(Lc, j * n + q);
            FOR_LANES(l) d[l] -= a[l] * a[l];
        }
        FOR_LANES(l) d[l] = d[l] > PIVOT_FLOOR ? sqrt(d[l]) : 0.0;
        for (int i = j + 1; i < n; i++) {
            double *s = V(Lc, i * n + j);
            FOR_LANES(l) s[l] = V(Cm, i * n + j)[l];
            for (int q = 0; q < j; q++) {
                const double *a = V(Lc, i * n + q), *b = V(Lc, j * n + q);
                FOR_LANES(l) s[l] -= a[l] * b[l];
            }
            FOR_LANES(l) s[l] = d[l] > 0.0 ? s[l] / d[l] : 0.0;
        }
    }
    for (int c = 0; c < m; c++) {
        for (int i = 0; i < n; i++) {
            double *x = V(X, i * m + c);
            for (int q = 0; q < i; q++) {
                const double *a = V(Lc, i * n + q), *b = V(X, q * m + c);
                FOR_LANES(l) x[l] -= a[l] * b[l];
            }
            const double *d = V(Lc, i * n + i);
            FOR_LANES(l) x[l] = d[l] > 0.0 ? x[l] / d[l] : 0.0;
        }
        for (int i = n - 1; i >= 0; i--) {
            double *x = V(X, i * m + c);
            for (int q = i + 1; q < n; q++) {
                const double *a = V(Lc, q * n + i), *b = V(X, q * m + c);
                FOR_LANES(l) x[l] -= a[l] * b[l];
            }
            const double *d = V(Lc, i * n + i);
            FOR_LANES(l) x[l] = d[l] > 0.0 ? x[l] / d[l] : 0.0;
        }
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) {
            double *x = V(X, i * m + c);
            const double *a = V(dsq, i);
            FOR_LANES(l) x[l] /= a[l];
        }
}

/* ------------------------------------------------------------ gathers and scatters */

/* dst (n lane vectors) <- the n entries of parameter k for sequences b0.. at step t. */
INLINE void SFX(load_param)(const Problem *p, int k, i64 b0, i64 t, int n, double *dst)
{
    const double *base = p->params[k] + t * p->strides[2 * k + 1];
    i64 bs = p->strides[2 * k];
    if (bs == 0) {
        for (int i = 0; i < n; i++) {
            double v = base[i];
            FOR_LANES(l) V(dst, i)[l] = v;
        }
        return;
    }
    FOR_LANES(l) {
        const double *q = base + (b0 + l) * bs;
        for (int i = 0; i < n; i++) V(dst, i)[l] = q[i];
    }
}

/* dst (n lane vectors) <- entries (b0.., t, :n) of a (T, B, n) array, and back. */
INLINE void SFX(gather)(const Problem *p, const double *restrict src, int n, i64 b0, i64 t,
                        double *restrict dst)
{
    const double *restrict q = src + AT(p, t, b0, n);
    FOR_LANES(l)
        for (int i = 0; i < n; i++) V(dst, i)[l] = q[l * n + i];
}

INLINE void SFX(scatter)(const Problem *p, const double *restrict src, double *restrict dst,
                         int n, i64 b0, i64 t)
{
    double *restrict q = dst + AT(p, t, b0, n);
    FOR_LANES(l)
        for (int i = 0; i < n; i++) q[l * n + i] = V(src, i)[l];
}

/* ------------------------------------------------------------ numerical guard */

/* Flags lanes whose posterior (mean m, covariance P) breaks the bounds against the
 * prediction (mp, Pp): see the header. dinv2: 1 / d_i^2 per lane; size: the variance
 * scale of the slack; room: 1 + the squared norm of the normalised innovations. */
INLINE void SFX(guard)(int S, const double *mp, const double *Pp, const double *m,
                  const double *P, const double *dinv2, const double *size,
                  const double *room, double tol, int *bad_cov, int *bad_mean)
{
    double rt = sqrt(tol);
    for (int i = 0; i < S; i++) {
        const double *pp = V(Pp, i * S + i), *pq = V(P, i * S + i), *w = V(dinv2, i);
        const double *a = V(m, i), *b = V(mp, i);
        FOR_LANES(l) {
            double dp = pp[l] * w[l], dq = pq[l] * w[l];
            double slack = rt * size[l] + tol * fabs(dp) + 1e-300;
            int good = (dq <= dp + slack) & (dq >= -slack) & (dp >= -slack) & (dp - dp == 0.0);
            bad_cov[l] |= !good;
            double shift = (a[l] - b[l]) * (a[l] - b[l]) * w[l];
            double lim = 4.0 * ((dp > 0.0 ? dp : 0.0) + slack) * room[l];
            bad_mean[l] |= !(shift <= lim) | !(a[l] - a[l] == 0.0);
        }
    }
}

/* err <- (first flagged lane's sequence, t, kind); returns 1 if a lane is flagged. */
INLINE int SFX(report)(const int *bad, i64 b0, i64 t, int kind, i64 *err)
{
    FOR_LANES(l)
        if (bad[l]) { err[0] = b0 + l; err[1] = t; err[2] = kind; return 1; }
    return 0;
}

/* ------------------------------------------------------------ one block of lanes */


/* Kalman filter over the T steps of sequences b0 .. b0 + LANES - 1. Writes pm, pc, fm, fc,
 * ll; returns in msum the squared norm of the normalised innovations and in size the
 * largest balanced predicted variance after step 0 (both per lane). */
INLINE int SFX(filter_block)(int S, int D, const Problem *p, i64 b0, double *w,
                        double *dinv2, double *msum, double *size, i64 *err)
{
    double *m = w, *mp = V(m, S), *off = V(mp, S), *P = V(off, S), *Pp = V(P, S * S);
    double *tmp = V(Pp, S * S), *A = V(tmp, S * S), *Q = V(A, S * S), *IKH = V(Q, S * S);
    double *H = V(IKH, S * S), *Hm = V(H, D * S), *PHt = V(Hm, D * S), *KT = V(PHt, S * D);
    double *KR = V(KT, D * S), *R = V(KR, S * D), *Rm = V(R, D * D), *Sm = V(Rm, D * D);
    double *Lc = V(Sm, D * D), *yv = V(Lc, D * D), *okv = V(yv, D), *res = V(okv, D);
    double *acc = V(res, D), *e2 = V(acc, 1), *room = V(e2, 1), *nobs = V(room, 1);
    int bad[LANES], bad_mean[LANES];
    const i64 T = p->T;
    const double *const *params = p->params;
    const i64 *strides = p->strides;
    SFX(load_param)(p, P_M0, b0, 0, S, m);
    SFX(load_param)(p, P_P0, b0, 0, S * S, P);
    for (int i = 0; i < S; i++) {                         /* balanced basis: 1 / d_i^2 */
        const double *v = V(P, i * S + i);
        FOR_LANES(l) {
            double d2 = 1.0;
            if (v[l] > 0.0 && v[l] - v[l] == 0.0) d2 = exp2(2.0 * nearbyint(0.5 * log2(v[l])));
            V(dinv2, i)[l] = 1.0 / d2;
        }
    }
    FOR_LANES(l) { acc[l] = 0.0; msum[l] = 0.0; size[l] = 0.0; }
    int shared_A = strides[2 * P_A] == 0 && strides[2 * P_A + 1] == 0;
    int shared_Q = strides[2 * P_Q] == 0 && strides[2 * P_Q + 1] == 0;
    int shared_H = strides[2 * P_H] == 0 && strides[2 * P_H + 1] == 0;
    int shared_R = strides[2 * P_R] == 0 && strides[2 * P_R + 1] == 0;
    if (shared_A) SFX(load_param)(p, P_A, b0, 0, S * S, A);
    if (shared_Q) SFX(load_param)(p, P_Q, b0, 0, S * S, Q);
    if (shared_H) SFX(load_param)(p, P_H, b0, 0, D * S, H);
    if (shared_R) SFX(load_param)(p, P_R, b0, 0, D * D, R);
    for (i64 t = 0; t < T; t++) {
        if (t > 0) {                                      /* predict */
            if (!shared_A) SFX(load_param)(p, P_A, b0, t, S * S, A);
            if (!shared_Q) SFX(load_param)(p, P_Q, b0, t, S * S, Q);
            SFX(mm)(S, S, 1, A, m, mp);
            if (params[P_OFF]) {
                SFX(load_param)(p, P_OFF, b0, t, S, off);
                for (int i = 0; i < S * 1; i++) FOR_LANES(l) V(mp, i)[l] += V(off, i)[l];
            }
            memcpy(m, mp, (size_t)S * LANES * sizeof(double));
            SFX(mm)(S, S, S, A, P, tmp);
            SFX(mm_t)(S, S, S, tmp, A, P);
            for (int i = 0; i < S * S; i++) FOR_LANES(l) V(P, i)[l] += V(Q, i)[l];
            SFX(symmetrize)(S, P);
        } else {
            memcpy(mp, m, (size_t)S * LANES * sizeof(double));
        }
        memcpy(Pp, P, (size_t)S * S * LANES * sizeof(double));
        SFX(scatter)(p, m, p->pm, S, b0, t);
        SFX(scatter)(p, P, p->pc, S * S, b0, t);
        if (t == 0 || t == 1) FOR_LANES(l) size[l] = 0.0;  /* step 0 counts only at t = 0 */
        for (int i = 0; i < S; i++) {
            const double *pp = V(P, i * S + i), *ww = V(dinv2, i);
            FOR_LANES(l) {
                double v = fabs(pp[l] * ww[l]);
                if (v > size[l]) size[l] = v;             /* NaN never raises size */
            }
        }
        /* masked-entry trick: H rows of missing entries zeroed, R block -> identity */
        if (!shared_H) SFX(load_param)(p, P_H, b0, t, D * S, H);
        if (!shared_R) SFX(load_param)(p, P_R, b0, t, D * D, R);
        {
            const double *restrict yy = p->y + AT(p, t, b0, D);
            const uint8_t *restrict mk = p->mask + AT(p, t, b0, D);
            FOR_LANES(l)
                for (int i = 0; i < D; i++) {
                    V(yv, i)[l] = yy[l * D + i];
                    V(okv, i)[l] = mk[l * D + i] ? 1.0 : 0.0;
                }
        }
        FOR_LANES(l) nobs[l] = 0.0;
        for (int i = 0; i < D; i++) {
            const double *o = V(okv, i);
            FOR_LANES(l) nobs[l] += o[l];
            for (int j = 0; j < S; j++) FOR_LANES(l) V(Hm, i * S + j)[l] = o[l] * V(H, i * S + j)[l];
            for (int j = 0; j < D; j++) {
                const double *o2 = V(okv, j);
                FOR_LANES(l) V(Rm, i * D + j)[l] = o[l] * o2[l] * V(R, i * D + j)[l]
                                                   + (i == j ? 1.0 - o[l] : 0.0);
            }
        }
        SFX(mm_t)(S, S, D, P, Hm, PHt);                       /* P H^T      (S, D) */
        SFX(mm)(D, S, D, Hm, PHt, Sm);                      /* H P H^T    (D, D) */
        for (int i = 0; i < D * D; i++) FOR_LANES(l) V(Sm, i)[l] += V(Rm, i)[l];
        SFX(symmetrize)(D, Sm);
        FOR_LANES(l) bad[l] = 0;
        SFX(cholesky)(D, Sm, Lc, bad);
        if (SFX(report)(bad, b0, t, 0, err)) return ERR_INNOVATION_NOT_PD;
        for (int i = 0; i < D; i++)                       /* K^T = S^{-1} (P H^T)^T */
            for (int j = 0; j < S; j++) FOR_LANES(l) V(KT, i * S + j)[l] = V(PHt, j * D + i)[l];
        SFX(chol_solve)(D, S, Lc, KT, 1);
        for (int i = 0; i < D; i++) {                     /* residual y - H m */
            double *r = V(res, i);
            FOR_LANES(l) r[l] = V(yv, i)[l];
            for (int j = 0; j < S; j++) FOR_LANES(l) r[l] -= V(Hm, i * S + j)[l] * V(m, j)[l];
        }
        for (int i = 0; i < S; i++)
            for (int j = 0; j < D; j++) FOR_LANES(l) V(m, i)[l] += V(KT, j * S + i)[l] * V(res, j)[l];
        /* Joseph form: (I - K H) P (I - K H)^T + K R K^T */
        SFX(mtm)(S, D, S, KT, Hm, IKH);
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++)
                FOR_LANES(l) V(IKH, i * S + j)[l] = (i == j ? 1.0 : 0.0) - V(IKH, i * S + j)[l];
        SFX(mm)(S, S, S, IKH, P, tmp);
        SFX(mm_t)(S, S, S, tmp, IKH, P);
        SFX(mtm)(S, D, D, KT, Rm, KR);                         /* K R        (S, D) */
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++)
                for (int q = 0; q < D; q++)
                    FOR_LANES(l) V(P, i * S + j)[l] += V(KR, i * D + q)[l] * V(KT, q * S + j)[l];
        SFX(symmetrize)(S, P);
        /* log N(resid | 0, L L^T), observed entries only */
        SFX(chol_solve)(D, 1, Lc, res, 0);
        FOR_LANES(l) e2[l] = 0.0;
        for (int i = 0; i < D; i++) {
            const double *r = V(res, i), *d = V(Lc, i * D + i);
            FOR_LANES(l) { e2[l] += r[l] * r[l]; acc[l] -= log(d[l]); }
        }
        FOR_LANES(l) {
            acc[l] -= 0.5 * (e2[l] + nobs[l] * LOG_2PI);
            msum[l] += e2[l];
            room[l] = 1.0 + e2[l];
            bad[l] = 0;
            bad_mean[l] = 0;
        }
        SFX(guard)(S, mp, Pp, m, P, dinv2, size, room, p->tol, bad, bad_mean);
        if (SFX(report)(bad, b0, t, FILTERED_COV, err) ||
            SFX(report)(bad_mean, b0, t, FILTERED_MEAN, err)) return ERR_EXPLODED;
        SFX(scatter)(p, m, p->fm, S, b0, t);
        SFX(scatter)(p, P, p->fc, S * S, b0, t);
    }
    FOR_LANES(l) p->ll[b0 + l] = acc[l];
    return OK;
}

/* RTS smoother of sequences b0 .. b0 + LANES - 1 from their filter outputs; cc gets the
 * lag-one cross covariances Cov(z_t, z_{t-1} | x), entry 0 = 0. */
INLINE int SFX(smoother_block)(int S, const Problem *p, i64 b0, double *w,
                          const double *dinv2, const double *msum, const double *size,
                          i64 *err)
{
    double *ms = w, *mf = V(ms, S), *mpn = V(mf, S), *mpt = V(mpn, S), *dm = V(mpt, S);
    double *dsq = V(dm, S), *Ps = V(dsq, S), *Pf = V(Ps, S * S), *Ppn = V(Pf, S * S);
    double *Ppt = V(Ppn, S * S), *A = V(Ppt, S * S), *X = V(A, S * S), *dP = V(X, S * S);
    double *GdP = V(dP, S * S), *out = V(GdP, S * S), *Cm = V(out, S * S), *Lc = V(Cm, S * S);
    double *cross = V(Lc, S * S), *room = V(cross, S * S);
    int bad[LANES], bad_mean[LANES];
    const i64 T = p->T;
    SFX(gather)(p, p->fm, S, b0, T - 1, ms);
    SFX(gather)(p, p->fc, S * S, b0, T - 1, Ps);
    SFX(scatter)(p, ms, p->sm, S, b0, T - 1);
    SFX(scatter)(p, Ps, p->sc, S * S, b0, T - 1);
    FOR_LANES(l) room[l] = 1.0 + msum[l];
    for (int i = 0; i < S * S; i++) FOR_LANES(l) V(cross, i)[l] = 0.0;
    SFX(scatter)(p, cross, p->cc, S * S, b0, 0);
    for (i64 t = T - 2; t >= 0; t--) {
        SFX(load_param)(p, P_A, b0, t + 1, S * S, A);
        SFX(gather)(p, p->fc, S * S, b0, t, Pf);
        SFX(gather)(p, p->pc, S * S, b0, t + 1, Ppn);
        SFX(gather)(p, p->pm, S, b0, t + 1, mpn);
        SFX(gather)(p, p->fm, S, b0, t, mf);
        SFX(mm)(S, S, S, A, Pf, X);                         /* X = A P_{t|t} */
        SFX(psd_solve)(S, S, Ppn, X, Cm, Lc, dsq);             /* X = P_{t+1|t}^- A P_{t|t} = G^T */
        SFX(mm)(S, S, S, Ps, X, cross);                     /* P^s_{t+1} G^T */
        SFX(scatter)(p, cross, p->cc, S * S, b0, t + 1);
        for (int i = 0; i < S; i++) FOR_LANES(l) V(dm, i)[l] = V(ms, i)[l] - V(mpn, i)[l];
        for (int i = 0; i < S; i++) {
            double *r = V(ms, i);
            FOR_LANES(l) r[l] = V(mf, i)[l];
            for (int j = 0; j < S; j++) FOR_LANES(l) r[l] += V(X, j * S + i)[l] * V(dm, j)[l];
        }
        for (int i = 0; i < S * S; i++) FOR_LANES(l) V(dP, i)[l] = V(Ps, i)[l] - V(Ppn, i)[l];
        SFX(mtm)(S, S, S, X, dP, GdP);                         /* G dP */
        SFX(mm)(S, S, S, GdP, X, out);                      /* G dP G^T */
        for (int i = 0; i < S * S; i++) FOR_LANES(l) V(Ps, i)[l] = V(out, i)[l] + V(Pf, i)[l];
        SFX(symmetrize)(S, Ps);
        SFX(gather)(p, p->pc, S * S, b0, t, Ppt);
        SFX(gather)(p, p->pm, S, b0, t, mpt);
        FOR_LANES(l) { bad[l] = 0; bad_mean[l] = 0; }
        SFX(guard)(S, mpt, Ppt, ms, Ps, dinv2, size, room, p->tol, bad, bad_mean);
        if (SFX(report)(bad, b0, t, SMOOTHED_COV, err) ||
            SFX(report)(bad_mean, b0, t, SMOOTHED_MEAN, err)) return ERR_EXPLODED;
        SFX(scatter)(p, ms, p->sm, S, b0, t);
        SFX(scatter)(p, Ps, p->sc, S * S, b0, t);
    }
    return OK;
}

/* Filter (and, if p->sm != NULL, smoother) of sequences b0 .. b0 + LANES - 1; w holds
 * LANE_WORK(S, D) doubles. */
INLINE int SFX(run_block)(int S, int D, const Problem *p, i64 b0, double *w, i64 *err)
{
    double *dinv2 = w, *msum = V(dinv2, S), *size = V(msum, 1), *work = V(size, 1);
    int rc = SFX(filter_block)(S, D, p, b0, work, dinv2, msum, size, err);
    if (!rc && p->sm) rc = SFX(smoother_block)(S, p, b0, work, dinv2, msum, size, err);
    return rc;
}

#endif
