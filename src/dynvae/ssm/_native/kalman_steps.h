/*
 * Small dense kernels and per-step pieces of the Kalman back end (included by kalman.c):
 * products, Cholesky factorisations and solves of row-major float64 matrices, the
 * covariance part of a filter step and of a smoother step, and the numerical guard.
 * See kalman.c for the equations.
 */
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

/* X (n x m) <- P^- X for symmetric PSD P (n x n): Jacobi equilibration, then a
 * semidefinite Cholesky factorisation whose pivots below PIVOT_FLOOR (of the unit
 * diagonal) are dropped. Work: C, L (n x n), d (n). */
INLINE void psd_solve(int n, int m, const double *P, double *X, double *C, double *L,
                      double *d)
{
    for (int i = 0; i < n; i++) d[i] = sqrt(P[i * n + i] > 0.0 ? P[i * n + i] : 1.0);
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) C[i * n + j] = P[i * n + j] / (d[i] * d[j]);
        for (int c = 0; c < m; c++) X[i * m + c] /= d[i];
    }
    for (int j = 0; j < n; j++) {
        double p = C[j * n + j];
        for (int l = 0; l < j; l++) p -= L[j * n + l] * L[j * n + l];
        p = p > PIVOT_FLOOR ? sqrt(p) : 0.0;
        L[j * n + j] = p;
        for (int i = j + 1; i < n; i++) {
            double s = C[i * n + j];
            for (int l = 0; l < j; l++) s -= L[i * n + l] * L[j * n + l];
            L[i * n + j] = p > 0.0 ? s / p : 0.0;
        }
    }
    for (int c = 0; c < m; c++) {
        for (int i = 0; i < n; i++) {
            double s = X[i * m + c];
            for (int l = 0; l < i; l++) s -= L[i * n + l] * X[l * m + c];
            X[i * m + c] = L[i * n + i] > 0.0 ? s / L[i * n + i] : 0.0;
        }
        for (int i = n - 1; i >= 0; i--) {
            double s = X[i * m + c];
            for (int l = i + 1; l < n; l++) s -= L[l * n + i] * X[l * m + c];
            X[i * m + c] = L[i * n + i] > 0.0 ? s / L[i * n + i] : 0.0;
        }
    }
    for (int i = 0; i < n; i++)
        for (int c = 0; c < m; c++) X[i * m + c] /= d[i];
}

/* ------------------------------------------------------------ shared steps */

/* 1 / d_i^2 of the balanced basis, d_i a power of two near sqrt(P0_ii) (1 if not > 0). */
INLINE void balance(int S, const double *P0, double *dinv2)
{
    for (int i = 0; i < S; i++) {
        double v = P0[i * S + i], d2 = 1.0;
        if (v > 0.0 && v - v == 0.0) d2 = exp2(2.0 * nearbyint(0.5 * log2(v)));
        dinv2[i] = 1.0 / d2;
    }
}

/* Largest balanced predicted variance (the guard's scale). */
INLINE double scale_of(int S, const double *Pp, const double *dinv2)
{
    double s = 0.0;
    for (int i = 0; i < S; i++) {
        double v = fabs(Pp[i * S + i] * dinv2[i]);
        if (v > s) s = v;                                 /* NaN never raises s */
    }
    return s;
}

/* 1 if a posterior variance breaks the guard's bound against the prediction Pp. */
INLINE int cov_bad(int S, const double *Pp, const double *P, const double *dinv2,
                   double size, double tol, double sqrt_tol)
{
    int bad = 0;
    for (int i = 0; i < S; i++) {
        double dp = Pp[i * S + i] * dinv2[i], dq = P[i * S + i] * dinv2[i];
        double slack = sqrt_tol * size + tol * fabs(dp) + 1e-300;
        bad |= !((dq <= dp + slack) & (dq >= -slack) & (dp >= -slack) & (dp - dp == 0.0));
    }
    return bad;
}

/* 1 if the posterior mean m[i * stride] leaves the guard's bound around mp[i * stride]. */
INLINE int mean_bad(int S, const double *mp, const double *m, i64 stride, const double *Pp,
                    const double *dinv2, double size, double tol, double sqrt_tol, double room)
{
    int bad = 0;
    for (int i = 0; i < S; i++) {
        double dp = Pp[i * S + i] * dinv2[i];
        double slack = sqrt_tol * size + tol * fabs(dp) + 1e-300;
        double a = m[i * stride], shift = (a - mp[i * stride]) * (a - mp[i * stride]) * dinv2[i];
        bad |= !(shift <= 4.0 * ((dp > 0.0 ? dp : 0.0) + slack) * room) | !(a - a == 0.0);
    }
    return bad;
}

/* Workspace of the covariance part of one step. */
typedef struct {
    double *P, *Pp, *tmp, *Hm, *Rm, *PHt, *Sm, *L, *KT, *KR, *IKH, *X, *dP, *C, *Lw, *d;
    double *dinv2;
} Work;

#define WORK_SIZE(S, D) (8 * (S) * (S) + 4 * (S) * (D) + 3 * (D) * (D) + 2 * (S) + 8)

INLINE void work_split(int S, int D, double *w, Work *k)
{
    k->P = w; k->Pp = w + S * S; k->tmp = w + 2 * S * S; k->IKH = w + 3 * S * S;
    k->X = w + 4 * S * S; k->dP = w + 5 * S * S; k->C = w + 6 * S * S; k->Lw = w + 7 * S * S;
    w += 8 * S * S;
    k->Hm = w; k->PHt = w + D * S; k->KT = w + 2 * D * S; k->KR = w + 3 * D * S;
    w += 4 * S * D;
    k->Rm = w; k->Sm = w + D * D; k->L = w + 2 * D * D; w += 3 * D * D;
    k->d = w; k->dinv2 = w + S;
}

/* Predict P (t >= 1), then the masked update's factor L, gain K^T and Joseph-form P
 * (k->Pp keeps the prediction). ok: the D mask entries. Returns -1 if S is not PD. */
INLINE int cov_step(int S, int D, const Problem *p, i64 b, i64 t, const uint8_t *ok,
                    Work *k)
{
    double *P = k->P;
    if (t > 0) {
        const double *A = PARAM(p, P_A, b, t), *Q = PARAM(p, P_Q, b, t);
        mat_mul(S, S, S, A, P, k->tmp);
        mat_mul_t(S, S, S, k->tmp, A, P);
        for (int i = 0; i < S * S; i++) P[i] += Q[i];
        symmetrize(S, P);
    }
    memcpy(k->Pp, P, S * S * sizeof(double));
    const double *H = PARAM(p, P_H, b, t), *R = PARAM(p, P_R, b, t);
    for (int i = 0; i < D; i++) {
        int oi = ok[i] != 0;
        for (int j = 0; j < S; j++) k->Hm[i * S + j] = oi ? H[i * S + j] : 0.0;
        for (int j = 0; j < D; j++)
            k->Rm[i * D + j] = (oi && ok[j]) ? R[i * D + j] : (i == j ? 1.0 : 0.0);
    }
    mat_mul_t(S, S, D, P, k->Hm, k->PHt);                 /* P H^T      (S, D) */
    mat_mul(D, S, D, k->Hm, k->PHt, k->Sm);               /* H P H^T    (D, D) */
    for (int i = 0; i < D * D; i++) k->Sm[i] += k->Rm[i];
    symmetrize(D, k->Sm);
    if (cholesky(D, k->Sm, k->L)) return -1;
    for (int i = 0; i < D; i++)                           /* K^T = S^{-1} (P H^T)^T */
        for (int j = 0; j < S; j++) k->KT[i * S + j] = k->PHt[j * D + i];
    forward_sub(D, S, k->L, k->KT);
    backward_sub_t(D, S, k->L, k->KT);
    mat_t_mul(S, D, S, k->KT, k->Hm, k->IKH);             /* Joseph form */
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) k->IKH[i * S + j] = (i == j) - k->IKH[i * S + j];
    mat_mul(S, S, S, k->IKH, P, k->tmp);
    mat_mul_t(S, S, S, k->tmp, k->IKH, P);
    mat_t_mul(S, D, D, k->KT, k->Rm, k->KR);              /* + K R K^T */
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            double s = 0.0;
            for (int l = 0; l < D; l++) s += k->KR[i * D + l] * k->KT[l * S + j];
            P[i * S + j] += s;
        }
    symmetrize(S, P);
    return 0;
}

/* Smoother covariance step: X = G_t^T from P_{t|t} (Pf), P_{t+1|t} (Ppn) and A_{t+1};
 * cross (S x S) = P^s_{t+1} G_t^T; Ps <- P^s_t. */
INLINE void smooth_cov_step(int S, const double *A, const double *Pf, const double *Ppn,
                            double *Ps, double *cross, Work *k)
{
    mat_mul(S, S, S, A, Pf, k->X);                        /* A P_{t|t} */
    psd_solve(S, S, Ppn, k->X, k->C, k->Lw, k->d);        /* G^T */
    mat_mul(S, S, S, Ps, k->X, cross);
    for (int i = 0; i < S * S; i++) k->dP[i] = Ps[i] - Ppn[i];
    mat_t_mul(S, S, S, k->X, k->dP, k->tmp);              /* G dP */
    mat_mul(S, S, S, k->tmp, k->X, Ps);                   /* G dP G^T */
    for (int i = 0; i < S * S; i++) Ps[i] += Pf[i];
    symmetrize(S, Ps);
}

INLINE int flag(i64 *err, i64 b, i64 t, int kind)
{
    err[0] = b; err[1] = t; err[2] = kind;
    return ERR_EXPLODED;
}
