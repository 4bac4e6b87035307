/*
 * Sequential Kalman filter and Rauch-Tung-Striebel smoother for linear Gaussian
 * state-space models, in plain C99 (no BLAS): the inference-only back end of
 * dynvae.ssm.native. It computes the same quantities as dynvae.ssm.kalman:
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
 * Missing entries use the masked-entry trick of dynvae.gaussian.mask_observation:
 * their row of H is zeroed, their block of R is replaced by the identity (and y is
 * 0 there), so they carry no information; -0.5 log(2 pi) is counted only for the
 * observed entries. All matrices are row-major float64. Every parameter is passed
 * with a batch stride and a time stride (in doubles): 0 means "shared", so constant
 * and time-varying parameters, shared or per-sequence, use one code path.
 */
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef int64_t i64;

/* Parameter slots of the `params` / `strides` arrays passed by the caller. */
enum { P_M0, P_P0, P_A, P_Q, P_H, P_R, P_OFF, N_PARAMS };

/* Error codes returned to Python (the failing batch index and step go to err[0..1]). */
enum { OK = 0, ERR_INNOVATION_NOT_PD = 1, ERR_PREDICTED_SINGULAR = 2, ERR_NO_MEMORY = 3 };

static const double LOG_2PI = 1.8378770664093454836;

#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

/* ------------------------------------------------------------ small dense kernels */

/* C (n x m) = A (n x k) B (k x m). */
INLINE void mat_mul(int n, int k, int m, const double *A, const double *B, double *C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++) s += A[i * k + l] * B[l * m + j];
            C[i * m + j] = s;
        }
}

/* C (n x m) = A (n x k) B^T, with B (m x k). */
INLINE void mat_mul_t(int n, int k, int m, const double *A, const double *B, double *C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++) s += A[i * k + l] * B[j * k + l];
            C[i * m + j] = s;
        }
}

/* C (n x m) = A^T B, with A (k x n), B (k x m). */
INLINE void mat_t_mul(int n, int k, int m, const double *A, const double *B, double *C)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0.0;
            for (int l = 0; l < k; l++) s += A[l * n + i] * B[l * m + j];
            C[i * m + j] = s;
        }
}

/* P <- 0.5 (P + P^T) for an n x n matrix (the diagonal is unchanged exactly). */
INLINE void symmetrize(int n, double *P)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double v = 0.5 * (P[i * n + j] + P[j * n + i]);
            P[i * n + j] = v;
            P[j * n + i] = v;
        }
}

/* Lower Cholesky factor L of the SPD n x n matrix M; returns 0, or -1 if not PD. */
INLINE int cholesky(int n, const double *M, double *L)
{
    for (int j = 0; j < n; j++) {
        double d = M[j * n + j];
        for (int l = 0; l < j; l++) d -= L[j * n + l] * L[j * n + l];
        if (!(d > 0.0)) return -1;                       /* also catches NaN */
        d = sqrt(d);
        L[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = M[i * n + j];
            for (int l = 0; l < j; l++) s -= L[i * n + l] * L[j * n + l];
            L[i * n + j] = s / d;
        }
        for (int i = 0; i < j; i++) L[i * n + j] = 0.0;
    }
    return 0;
}

/* X (n x m) <- L^{-1} X by forward substitution (L lower, n x n). */
INLINE void forward_sub(int n, int m, const double *L, double *X)
{
    for (int c = 0; c < m; c++)
        for (int i = 0; i < n; i++) {
            double s = X[i * m + c];
            for (int l = 0; l < i; l++) s -= L[i * n + l] * X[l * m + c];
            X[i * m + c] = s / L[i * n + i];
        }
}

/* X (n x m) <- L^{-T} X by back substitution. */
INLINE void backward_sub_t(int n, int m, const double *L, double *X)
{
    for (int c = 0; c < m; c++)
        for (int i = n - 1; i >= 0; i--) {
            double s = X[i * m + c];
            for (int l = i + 1; l < n; l++) s -= L[l * n + i] * X[l * m + c];
            X[i * m + c] = s / L[i * n + i];
        }
}

/* X (n x m) <- M^{-1} X by Gaussian elimination with partial pivoting (M is
 * overwritten). Returns 0, or -1 if M is singular. */
INLINE int lu_solve(int n, int m, double *M, double *X)
{
    for (int k = 0; k < n; k++) {
        int p = k;
        for (int i = k + 1; i < n; i++)
            if (fabs(M[i * n + k]) > fabs(M[p * n + k])) p = i;
        if (M[p * n + k] == 0.0 || M[p * n + k] != M[p * n + k]) return -1;
        if (p != k) {
            for (int j = 0; j < n; j++) {
                double t = M[k * n + j]; M[k * n + j] = M[p * n + j]; M[p * n + j] = t;
            }
            for (int j = 0; j < m; j++) {
                double t = X[k * m + j]; X[k * m + j] = X[p * m + j]; X[p * m + j] = t;
            }
        }
        for (int i = k + 1; i < n; i++) {
            double f = M[i * n + k] / M[k * n + k];
            for (int j = k + 1; j < n; j++) M[i * n + j] -= f * M[k * n + j];
            for (int j = 0; j < m; j++) X[i * m + j] -= f * X[k * m + j];
        }
    }
    for (int k = n - 1; k >= 0; k--)
        for (int j = 0; j < m; j++) {
            double s = X[k * m + j];
            for (int l = k + 1; l < n; l++) s -= M[k * n + l] * X[l * m + j];
            X[k * m + j] = s / M[k * n + k];
        }
    return 0;
}

/* ------------------------------------------------------------ one sequence */

/* Pointer to parameter `k` of batch element b at step t. */
#define PARAM(k, b, t) (params[k] + (b) * strides[2 * (k)] + (t) * strides[2 * (k) + 1])

/* Kalman filter over the T steps of batch element b. y (T, D) is the observation
 * minus the emission offset, zero where missing; mask (T, D) is nonzero where
 * observed. Writes pm, pc, fm, fc (T, S[, S]) and the log-likelihood *ll. */
INLINE int filter_one(int S, int D, i64 T, i64 b, const double *const *params,
                      const i64 *strides, const double *y, const uint8_t *mask,
                      double *pm, double *pc, double *fm, double *fc, double *ll, double *w,
                      i64 *err)
{
    /* workspace (caller-allocated, FILTER_WORK doubles): no VLAs, so this inlines */
    double *m = w, *mp = m + S, *P = mp + S, *tmp = P + S * S, *Hm = tmp + S * S;
    double *Rm = Hm + D * S, *PHt = Rm + D * D, *Sm = PHt + S * D, *L = Sm + D * D;
    double *KT = L + D * D, *KR = KT + D * S, *IKH = KR + S * D, *resid = IKH + S * S;
    const size_t vec = S * sizeof(double), mat = S * S * sizeof(double);
    double acc = 0.0;
    memcpy(m, PARAM(P_M0, b, 0), vec);
    memcpy(P, PARAM(P_P0, b, 0), mat);
    for (i64 t = 0; t < T; t++) {
        const uint8_t *ok = mask + t * D;
        if (t > 0) {                                      /* predict */
            const double *A = PARAM(P_A, b, t), *Q = PARAM(P_Q, b, t);
            mat_mul(S, S, 1, A, m, mp);
            if (params[P_OFF]) {
                const double *o = PARAM(P_OFF, b, t);
                for (int i = 0; i < S; i++) mp[i] += o[i];
            }
            memcpy(m, mp, vec);
            mat_mul(S, S, S, A, P, tmp);
            mat_mul_t(S, S, S, tmp, A, P);
            for (int i = 0; i < S * S; i++) P[i] += Q[i];
            symmetrize(S, P);
        }
        memcpy(pm + t * S, m, vec);
        memcpy(pc + t * S * S, P, mat);
        /* masked-entry trick: H rows of missing entries zeroed, R block -> identity */
        const double *H = PARAM(P_H, b, t), *R = PARAM(P_R, b, t);
        int n_obs = 0;
        for (int i = 0; i < D; i++) {
            n_obs += ok[i] != 0;
            for (int j = 0; j < S; j++) Hm[i * S + j] = ok[i] ? H[i * S + j] : 0.0;
            for (int j = 0; j < D; j++)
                Rm[i * D + j] = (ok[i] && ok[j]) ? R[i * D + j] : (i == j ? 1.0 : 0.0);
        }
        mat_mul_t(S, S, D, P, Hm, PHt);                   /* P H^T      (S, D) */
        mat_mul(D, S, D, Hm, PHt, Sm);                    /* H P H^T    (D, D) */
        for (int i = 0; i < D * D; i++) Sm[i] += Rm[i];
        symmetrize(D, Sm);
        if (cholesky(D, Sm, L)) { err[0] = b; err[1] = t; return ERR_INNOVATION_NOT_PD; }
        for (int i = 0; i < D; i++)                       /* K^T = S^{-1} (P H^T)^T */
            for (int j = 0; j < S; j++) KT[i * S + j] = PHt[j * D + i];
        forward_sub(D, S, L, KT);
        backward_sub_t(D, S, L, KT);
        for (int i = 0; i < D; i++) {                     /* residual y - H m */
            double s = y[t * D + i];
            for (int j = 0; j < S; j++) s -= Hm[i * S + j] * m[j];
            resid[i] = s;
        }
        for (int i = 0; i < S; i++)
            for (int j = 0; j < D; j++) m[i] += KT[j * S + i] * resid[j];
        /* Joseph form: (I - K H) P (I - K H)^T + K R K^T */
        mat_t_mul(S, D, S, KT, Hm, IKH);
        for (int i = 0; i < S * S; i++) IKH[i] = -IKH[i];
        for (int i = 0; i < S; i++) IKH[i * S + i] += 1.0;
        mat_mul(S, S, S, IKH, P, tmp);
        mat_mul_t(S, S, S, tmp, IKH, P);
        mat_t_mul(S, D, D, KT, Rm, KR);                   /* K R        (S, D) */
        for (int i = 0; i < S; i++)
            for (int j = 0; j < S; j++) {
                double s = 0.0;
                for (int l = 0; l < D; l++) s += KR[i * D + l] * KT[l * S + j];
                P[i * S + j] += s;
            }
        symmetrize(S, P);
        memcpy(fm + t * S, m, vec);
        memcpy(fc + t * S * S, P, mat);
        /* log N(resid | 0, L L^T), observed entries only */
        forward_sub(D, 1, L, resid);
        for (int i = 0; i < D; i++) acc -= 0.5 * resid[i] * resid[i] + log(L[i * D + i]);
        acc -= 0.5 * n_obs * LOG_2PI;
    }
    *ll = acc;
    return OK;
}

/* RTS smoother of one batch element from its filter outputs; cc (T, S, S) gets the
 * lag-one cross covariances Cov(z_t, z_{t-1} | x), entry 0 = 0. */
INLINE int smoother_one(int S, i64 T, i64 b, const double *const *params,
                        const i64 *strides, const double *pm, const double *pc,
                        const double *fm, const double *fc, double *sm, double *sc,
                        double *cc, double *w, i64 *err)
{
    double *X = w, *M = X + S * S, *dm = M + S * S, *dP = dm + S, *GdP = dP + S * S;
    memcpy(sm + (T - 1) * S, fm + (T - 1) * S, S * sizeof(double));
    memcpy(sc + (T - 1) * S * S, fc + (T - 1) * S * S, S * S * sizeof(double));
    memset(cc, 0, S * S * sizeof(double));
    for (i64 t = T - 2; t >= 0; t--) {
        const double *A = PARAM(P_A, b, t + 1);
        const double *Pf = fc + t * S * S, *Pp = pc + (t + 1) * S * S;
        const double *Ps = sc + (t + 1) * S * S;
        /* X = P_{t+1|t}^{-1} A P_{t|t} = G^T */
        mat_mul(S, S, S, A, Pf, X);
        memcpy(M, Pp, S * S * sizeof(double));
        if (lu_solve(S, S, M, X)) { err[0] = b; err[1] = t + 1; return ERR_PREDICTED_SINGULAR; }
        mat_mul(S, S, S, Ps, X, cc + (t + 1) * S * S);    /* P^s_{t+1} G^T */
        for (int i = 0; i < S; i++) dm[i] = sm[(t + 1) * S + i] - pm[(t + 1) * S + i];
        for (int i = 0; i < S; i++) {
            double s = fm[t * S + i];
            for (int j = 0; j < S; j++) s += X[j * S + i] * dm[j];
            sm[t * S + i] = s;
        }
        for (int i = 0; i < S * S; i++) dP[i] = Ps[i] - Pp[i];
        mat_t_mul(S, S, S, X, dP, GdP);                   /* G dP */
        double *out = sc + t * S * S;
        mat_mul(S, S, S, GdP, X, out);                    /* G dP G^T */
        for (int i = 0; i < S * S; i++) out[i] += Pf[i];
        symmetrize(S, out);
    }
    return OK;
}

/* Filter (and, if sm != NULL, smoother) of one batch element; S and D are passed as
 * compile-time constants by the dispatch below so that small sizes get unrolled. */
INLINE int run_one(int S, int D, i64 T, i64 b, const double *const *params,
                   const i64 *strides, const double *y, const uint8_t *mask, double *pm,
                   double *pc, double *fm, double *fc, double *ll, double *sm, double *sc,
                   double *cc, double *w, i64 *err)
{
    i64 v = T * S, c = T * S * S;
    int rc = filter_one(S, D, T, b, params, strides, y + b * T * D, mask + b * T * D,
                        pm + b * v, pc + b * c, fm + b * v, fc + b * c, ll + b, w, err);
    if (rc || !sm) return rc;
    return smoother_one(S, T, b, params, strides, pm + b * v, pc + b * c, fm + b * v,
                        fc + b * c, sm + b * v, sc + b * c, cc + b * c, w, err);
}

#define RUN_ALL(s, d)                                                                    \
    for (i64 b = 0; b < B && !rc; b++)                                                    \
        rc = run_one(s, d, T, b, params, strides, y, mask, pm, pc, fm, fc, ll, sm, sc, cc,\
                     w, err)

/* Entry point. B sequences of T steps, S states, D observed entries.
 *   params[N_PARAMS]: m0 (S), P0 (S, S), A (S, S), Q (S, S), H (D, S), R (D, D),
 *       transition offset (S) or NULL; strides[2 k], strides[2 k + 1]: batch and
 *       time stride of params[k] in doubles (0 = shared).
 *   y, mask: (B, T, D) contiguous.  Outputs (B, T, S[, S]) contiguous; ll (B).
 *   sm, sc, cc: smoother outputs, or all NULL for the filter only.
 * Returns 0, or an error code with err[0] = batch index, err[1] = step. */
int dynvae_kalman(i64 B, i64 T, int S, int D, const double *const *params,
                  const i64 *strides, const double *y, const uint8_t *mask, double *pm,
                  double *pc, double *fm, double *fc, double *ll, double *sm, double *sc,
                  double *cc, i64 *err)
{
    /* workspace of filter_one plus that of smoother_one */
    size_t n_work = 2 * S + 3 * S * S + 4 * S * D + 3 * D * D + D + 4 * S * S + S;
    double *w = malloc(n_work * sizeof(double));
    int rc = OK;
    if (!w) return ERR_NO_MEMORY;
    if (S == 1 && D == 1) { RUN_ALL(1, 1); }
    else if (S == 2 && D == 1) { RUN_ALL(2, 1); }
    else if (S == 3 && D == 1) { RUN_ALL(3, 1); }
    else if (S == 4 && D == 1) { RUN_ALL(4, 1); }
    else if (S == 2 && D == 2) { RUN_ALL(2, 2); }
    else if (S == 3 && D == 2) { RUN_ALL(3, 2); }
    else { RUN_ALL(S, D); }
    free(w);
    return rc;
}
