/*
 * Kalman filter and Rauch-Tung-Striebel smoother for linear Gaussian state-space models,
 * in plain C99 (no BLAS): the inference-only back end of dynvae.ssm.native. It computes
 * the same quantities as dynvae.ssm.kalman:
 *
 *   predict   m = A_t m + o_t,  P = sym(A_t P A_t^T + Q_t)                   (t >= 1)
 *   update    S = sym(H P H^T + R) = L L^T,  K = P H^T S^{-1},
 *             m += K (y - H m),  P = sym((I - K H) P (I - K H)^T + K R K^T) (Joseph form)
 *   log-lik   log N(y - H m | 0, S) over the observed entries only
 *   smoother  G_t = P_{t|t} A_{t+1}^T P_{t+1|t}^-  (RTS),
 *             m_t^s = m_{t|t} + G_t (m_{t+1}^s - m_{t+1|t}),
 *             P_t^s = sym(P_{t|t} + G_t (P_{t+1}^s - P_{t+1|t}) G_t^T),
 *             Cov(z_{t+1}, z_t | x) = P_{t+1}^s G_t^T.
 *
 * Two drivers:
 *   dynvae_kalman_shared  when P0, A, Q, H, R are shared by the batch and every sequence
 *       has the same missing entries: the covariances, gains and log-determinants are
 *       then the same for all sequences and are computed once per step; only the means
 *       and innovations run per sequence, as loops over the batch on structure-of-arrays
 *       rows (state i of every sequence contiguous), which the compiler vectorises.
 *   dynvae_kalman  otherwise: one sequence at a time.
 * The per-sequence driver is instantiated with compile-time (S, D) for the common small
 * sizes; the shared one amortises its covariance work over the batch and is not.
 *
 * The smoother gain solves P_{t+1|t} after Jacobi equilibration (unit diagonal) by a
 * semidefinite Cholesky factorisation: a pivot below PIVOT_FLOOR marks a direction the
 * predicted covariance does not span, whose component is set to zero (a generalised
 * inverse; the gain applied to vectors in the range of P_{t+1|t} does not depend on it).
 *
 * Missing entries use the masked-entry trick of dynvae.gaussian.mask_observation: their
 * row of H is zeroed, their block of R is replaced by the identity (and y is 0 there),
 * so they carry no information; -0.5 log(2 pi) is counted only for the observed entries.
 * Matrices are row-major float64. Every parameter is passed with a batch stride and a
 * time stride (in doubles): 0 means "shared".
 *
 * Numerical guard (as dynvae.ssm.guard, in the balanced basis z / d with d_i a power of
 * two near sqrt(P0_ii)): conditioning never adds variance (diag P_{t|t}, diag P_{t|T} <=
 * diag P_{t|t-1} up to a slack of sqrt(tol) times the largest predicted variance so far
 * plus tol relative), and a posterior mean moves from the predicted one by at most
 * 2 sqrt(P_{t|t-1, ii}) times (1 + the squared norm of the normalised innovations)^1/2.
 * Non-finite or exploding moments stop the run with ERR_EXPLODED, the sequence, step
 * and kind.
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

#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

typedef struct {
    i64 B, T;
    const double *const *params;
    const i64 *strides;
    const double *y;                                      /* (B, T, D) */
    const uint8_t *mask;                                  /* (B, T, D); shared: (T, D) */
    double *pm, *pc, *fm, *fc, *ll, *sm, *sc, *cc;
    double tol, sqrt_tol;
} Problem;

/* Pointer to parameter k of batch element b at step t. */
#define PARAM(p, k, b, t) \
    ((p)->params[k] + (b) * (p)->strides[2 * (k)] + (t) * (p)->strides[2 * (k) + 1])

#include "kalman_steps.h"

/* ------------------------------------------------------------ one sequence at a time */

/* Filter and (if p->sm) smoother of batch element b; outputs (B, T, S[, S]). */
INLINE int run_one(int S, int D, const Problem *p, i64 b, Work *k, double *m, double *mp,
                   double *res, i64 *err)
{
    const i64 T = p->T, vs = T * S, cs = T * S * S;
    double *pm = p->pm + b * vs, *fm = p->fm + b * vs, *pc = p->pc + b * cs, *fc = p->fc + b * cs;
    const double *y = p->y + b * T * D;
    const uint8_t *mask = p->mask + b * T * D;
    double acc = 0.0, msum = 0.0, size = 0.0;
    memcpy(m, PARAM(p, P_M0, b, 0), S * sizeof(double));
    memcpy(k->P, PARAM(p, P_P0, b, 0), S * S * sizeof(double));
    balance(S, k->P, k->dinv2);
    for (i64 t = 0; t < T; t++) {
        const uint8_t *ok = mask + t * D;
        if (t > 0) {
            mat_mul(S, S, 1, PARAM(p, P_A, b, t), m, mp);
            if (p->params[P_OFF])
                for (int i = 0; i < S; i++) mp[i] += PARAM(p, P_OFF, b, t)[i];
        } else {
            memcpy(mp, m, S * sizeof(double));
        }
        if (cov_step(S, D, p, b, t, ok, k)) {
            err[0] = b; err[1] = t; err[2] = 0;
            return ERR_INNOVATION_NOT_PD;
        }
        if (t <= 1) size = 0.0;                           /* step 0 counts only at t = 0 */
        double s = scale_of(S, k->Pp, k->dinv2);
        if (s > size) size = s;
        double e2 = 0.0;
        for (int i = 0; i < D; i++) {                     /* residual y - H m */
            double r = ok[i] ? y[t * D + i] : 0.0;
            for (int j = 0; j < S; j++) r -= k->Hm[i * S + j] * mp[j];
            res[i] = r;
        }
        for (int i = 0; i < S; i++) {
            double v = mp[i];
            for (int j = 0; j < D; j++) v += k->KT[j * S + i] * res[j];
            m[i] = v;
        }
        forward_sub(D, 1, k->L, res);                     /* normalised innovation */
        for (int i = 0; i < D; i++) {
            e2 += res[i] * res[i];
            acc -= log(k->L[i * D + i]) + 0.5 * (ok[i] != 0) * LOG_2PI;
        }
        acc -= 0.5 * e2;
        msum += e2;
        if (cov_bad(S, k->Pp, k->P, k->dinv2, size, p->tol, p->sqrt_tol))
            return flag(err, b, t, FILTERED_COV);
        if (mean_bad(S, mp, m, 1, k->Pp, k->dinv2, size, p->tol, p->sqrt_tol, 1.0 + e2))
            return flag(err, b, t, FILTERED_MEAN);
        memcpy(pm + t * S, mp, S * sizeof(double));
        memcpy(fm + t * S, m, S * sizeof(double));
        memcpy(pc + t * S * S, k->Pp, S * S * sizeof(double));
        memcpy(fc + t * S * S, k->P, S * S * sizeof(double));
    }
    p->ll[b] = acc;
    if (!p->sm) return OK;
    double *sm = p->sm + b * vs, *sc = p->sc + b * cs, *cc = p->cc + b * cs, *Ps = k->P;
    memcpy(sm + (T - 1) * S, fm + (T - 1) * S, S * sizeof(double));
    memcpy(Ps, fc + (T - 1) * S * S, S * S * sizeof(double));
    memcpy(sc + (T - 1) * S * S, Ps, S * S * sizeof(double));
    memset(cc, 0, S * S * sizeof(double));
    for (i64 t = T - 2; t >= 0; t--) {
        smooth_cov_step(S, PARAM(p, P_A, b, t + 1), fc + t * S * S, pc + (t + 1) * S * S,
                        Ps, cc + (t + 1) * S * S, k);
        for (int i = 0; i < S; i++) mp[i] = sm[(t + 1) * S + i] - pm[(t + 1) * S + i];
        for (int i = 0; i < S; i++) {
            double v = fm[t * S + i];
            for (int j = 0; j < S; j++) v += k->X[j * S + i] * mp[j];
            sm[t * S + i] = v;
        }
        memcpy(sc + t * S * S, Ps, S * S * sizeof(double));
        if (cov_bad(S, pc + t * S * S, Ps, k->dinv2, size, p->tol, p->sqrt_tol))
            return flag(err, b, t, SMOOTHED_COV);
        if (mean_bad(S, pm + t * S, sm + t * S, 1, pc + t * S * S, k->dinv2, size, p->tol,
                     p->sqrt_tol, 1.0 + msum))
            return flag(err, b, t, SMOOTHED_MEAN);
    }
    return OK;
}

INLINE int run_all(int S, int D, const Problem *p, double *w, i64 *err)
{
    Work k;
    double *m = w, *mp = m + S, *res = mp + S;
    work_split(S, D, res + D, &k);
    int rc = OK;
    for (i64 b = 0; b < p->B && !rc; b++) rc = run_one(S, D, p, b, &k, m, mp, res, err);
    return rc;
}

/* ------------------------------------------------------------ shared covariances */

/* Means of all sequences through filter step t: m, mp (S, B) rows (state i of every
 * sequence contiguous); m holds m_{t|t} on exit, mp m_{t|t-1}; e2 (B) the squared
 * normalised innovations; res (D, B) work. */
INLINE void shared_means(int S, int D, const Problem *p, i64 t, const uint8_t *ok,
                         const Work *k, const double *m_prev, double *mp, double *m,
                         double *res, double *e2)
{
    const i64 B = p->B, T = p->T;
    if (t == 0) {
        for (i64 b = 0; b < B; b++)
            for (int i = 0; i < S; i++) mp[i * B + b] = PARAM(p, P_M0, b, 0)[i];
    } else {
        const double *A = PARAM(p, P_A, 0, t);
        for (int i = 0; i < S; i++) {
            double *o = mp + i * B;
            for (i64 b = 0; b < B; b++) o[b] = 0.0;
            for (int j = 0; j < S; j++) {
                const double a = A[i * S + j], *v = m_prev + j * B;
                for (i64 b = 0; b < B; b++) o[b] += a * v[b];
            }
        }
        if (p->params[P_OFF])
            for (i64 b = 0; b < B; b++)
                for (int i = 0; i < S; i++) mp[i * B + b] += PARAM(p, P_OFF, b, t)[i];
    }
    for (int j = 0; j < D; j++) {                         /* residuals y - H m */
        double *r = res + j * B;
        const double *y = p->y + t * D + j;
        for (i64 b = 0; b < B; b++) r[b] = ok[j] ? y[b * T * D] : 0.0;
        for (int q = 0; q < S; q++) {
            const double h = k->Hm[j * S + q], *v = mp + q * B;
            for (i64 b = 0; b < B; b++) r[b] -= h * v[b];
        }
    }
    for (int i = 0; i < S; i++) {
        double *o = m + i * B;
        memcpy(o, mp + i * B, B * sizeof(double));
        for (int j = 0; j < D; j++) {
            const double g = k->KT[j * S + i], *r = res + j * B;
            for (i64 b = 0; b < B; b++) o[b] += g * r[b];
        }
    }
    for (i64 b = 0; b < B; b++) e2[b] = 0.0;
    for (int j = 0; j < D; j++) {                         /* z = L^{-1} resid, in place */
        double *r = res + j * B;
        for (int q = 0; q < j; q++) {
            const double l = k->L[j * D + q], *v = res + q * B;
            for (i64 b = 0; b < B; b++) r[b] -= l * v[b];
        }
        const double d = k->L[j * D + j];
        for (i64 b = 0; b < B; b++) { r[b] /= d; e2[b] += r[b] * r[b]; }
    }
}

/* First sequence whose mean (rows m around mp, (S, B)) breaks the guard, or -1. */
INLINE i64 first_bad_mean(int S, i64 B, const double *mp, const double *m, const double *Pp,
                          const double *dinv2, double size, const Problem *p,
                          const double *room)
{
    for (i64 b = 0; b < B; b++)
        if (mean_bad(S, mp + b, m + b, B, Pp, dinv2, size, p->tol, p->sqrt_tol, room[b]))
            return b;
    return -1;
}

/* Filter and smoother with covariances computed once: y (B, T, D), mask (T, D), means
 * pm, fm, sm (T, S, B), covariances pc, fc, sc, cc (T, S, S). */
INLINE int shared_all(int S, int D, const Problem *p, double *w, i64 *err)
{
    const i64 B = p->B, T = p->T;
    Work k;
    double *res = w, *e2 = res + (S + D) * B, *msum = e2 + B, size = 0.0, logdet = 0.0;
    double nobs = 0.0;
    work_split(S, D, msum + B, &k);
    memcpy(k.P, PARAM(p, P_P0, 0, 0), S * S * sizeof(double));
    balance(S, k.P, k.dinv2);
    for (i64 b = 0; b < B; b++) msum[b] = 0.0;
    for (i64 t = 0; t < T; t++) {
        const uint8_t *ok = p->mask + t * D;
        double *mp = p->pm + t * S * B, *m = p->fm + t * S * B;
        if (cov_step(S, D, p, 0, t, ok, &k)) {
            err[0] = 0; err[1] = t; err[2] = 0;
            return ERR_INNOVATION_NOT_PD;
        }
        if (t <= 1) size = 0.0;
        double s = scale_of(S, k.Pp, k.dinv2);
        if (s > size) size = s;
        for (int j = 0; j < D; j++) { nobs += ok[j] != 0; logdet += log(k.L[j * D + j]); }
        shared_means(S, D, p, t, ok, &k, t > 0 ? m - S * B : NULL, mp, m, res, e2);
        for (i64 b = 0; b < B; b++) { msum[b] += e2[b]; e2[b] += 1.0; }
        if (cov_bad(S, k.Pp, k.P, k.dinv2, size, p->tol, p->sqrt_tol))
            return flag(err, 0, t, FILTERED_COV);
        i64 bad = first_bad_mean(S, B, mp, m, k.Pp, k.dinv2, size, p, e2);
        if (bad >= 0) return flag(err, bad, t, FILTERED_MEAN);
        memcpy(p->pc + t * S * S, k.Pp, S * S * sizeof(double));
        memcpy(p->fc + t * S * S, k.P, S * S * sizeof(double));
    }
    for (i64 b = 0; b < B; b++) p->ll[b] = -0.5 * (msum[b] + nobs * LOG_2PI) - logdet;
    if (!p->sm) return OK;
    double *Ps = k.P, *dm = res;
    memcpy(p->sm + (T - 1) * S * B, p->fm + (T - 1) * S * B, S * B * sizeof(double));
    memcpy(Ps, p->fc + (T - 1) * S * S, S * S * sizeof(double));
    memcpy(p->sc + (T - 1) * S * S, Ps, S * S * sizeof(double));
    memset(p->cc, 0, S * S * sizeof(double));
    for (i64 b = 0; b < B; b++) e2[b] = 1.0 + msum[b];
    for (i64 t = T - 2; t >= 0; t--) {
        smooth_cov_step(S, PARAM(p, P_A, 0, t + 1), p->fc + t * S * S, p->pc + (t + 1) * S * S,
                        Ps, p->cc + (t + 1) * S * S, &k);
        memcpy(p->sc + t * S * S, Ps, S * S * sizeof(double));
        if (cov_bad(S, p->pc + t * S * S, Ps, k.dinv2, size, p->tol, p->sqrt_tol))
            return flag(err, 0, t, SMOOTHED_COV);
        const double *ms1 = p->sm + (t + 1) * S * B, *mp1 = p->pm + (t + 1) * S * B;
        double *ms = p->sm + t * S * B;
        for (i64 i = 0; i < S * B; i++) dm[i] = ms1[i] - mp1[i];  /* m^s_{t+1} - m_{t+1|t} */
        memcpy(ms, p->fm + t * S * B, S * B * sizeof(double));
        for (int i = 0; i < S; i++) {
            double *o = ms + i * B;
            for (int j = 0; j < S; j++) {
                const double g = k.X[j * S + i], *v = dm + j * B;
                for (i64 b = 0; b < B; b++) o[b] += g * v[b];
            }
        }
        i64 bad = first_bad_mean(S, B, p->pm + t * S * B, ms, p->pc + t * S * S, k.dinv2, size,
                                 p, e2);
        if (bad >= 0) return flag(err, bad, t, SMOOTHED_MEAN);
    }
    return OK;
}

/* ------------------------------------------------------------ entry points */

/* Calls driver(S, D, ...) with compile-time sizes for the common small models. */
#define DISPATCH(driver, S, D, ...)                                                     \
    ((S) == 1 && (D) == 1 ? driver(1, 1, __VA_ARGS__) :                                 \
     (S) == 2 && (D) == 1 ? driver(2, 1, __VA_ARGS__) :                                 \
     (S) == 3 && (D) == 1 ? driver(3, 1, __VA_ARGS__) :                                 \
     (S) == 4 && (D) == 1 ? driver(4, 1, __VA_ARGS__) :                                 \
     (S) == 2 && (D) == 2 ? driver(2, 2, __VA_ARGS__) :                                 \
     (S) == 3 && (D) == 2 ? driver(3, 2, __VA_ARGS__) : driver(S, D, __VA_ARGS__))

/* B sequences of T steps, S states, D observed entries.
 *   params[N_PARAMS]: m0 (S), P0 (S, S), A (S, S), Q (S, S), H (D, S), R (D, D),
 *       transition offset (S) or NULL; strides[2 k], strides[2 k + 1]: batch and
 *       time stride of params[k] in doubles (0 = shared).
 *   y, mask: (B, T, D) contiguous.  Outputs (B, T, S[, S]) contiguous; ll (B).
 *   sm, sc, cc: smoother outputs, or all NULL for the filter only.
 *   tol: relative round-off slack of the numerical guard.
 * Returns 0, or an error code with err[0] = batch index, err[1] = step, err[2] = kind. */
int dynvae_kalman(i64 B, i64 T, int S, int D, const double *const *params,
                  const i64 *strides, const double *y, const uint8_t *mask, double *pm,
                  double *pc, double *fm, double *fc, double *ll, double *sm, double *sc,
                  double *cc, double tol, i64 *err)
{
    Problem p = {B, T, params, strides, y, mask, pm, pc, fm, fc, ll, sm, sc, cc, tol, sqrt(tol)};
    double *w = malloc((WORK_SIZE(S, D) + 2 * S + D) * sizeof(double));
    if (!w) return ERR_NO_MEMORY;
    int rc = DISPATCH(run_all, S, D, &p, w, err);
    free(w);
    return rc;
}

/* As dynvae_kalman, when P0, A, Q, H, R have batch stride 0 and every sequence has the
 * same mask, here (T, D); y is (B, T, D), the means pm, fm, sm are (T, S, B) and the
 * covariances pc, fc, sc, cc (T, S, S). */
int dynvae_kalman_shared(i64 B, i64 T, int S, int D, const double *const *params,
                         const i64 *strides, const double *y, const uint8_t *mask,
                         double *pm, double *pc, double *fm, double *fc, double *ll,
                         double *sm, double *sc, double *cc, double tol, i64 *err)
{
    Problem p = {B, T, params, strides, y, mask, pm, pc, fm, fc, ll, sm, sc, cc, tol, sqrt(tol)};
    double *w = malloc((WORK_SIZE(S, D) + (size_t)B * (S + D + 2)) * sizeof(double));
    if (!w) return ERR_NO_MEMORY;
    int rc = shared_all(S, D, &p, w, err);     /* run-time sizes: covariances run once */
    free(w);
    return rc;
}
