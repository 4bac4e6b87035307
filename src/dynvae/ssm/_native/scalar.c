/* The recursions of the Kalman filter and RTS smoother for one scalar observation per
 * step (dynvae.ssm.scalar), each with its exact reverse-mode derivative, for
 * dynvae.ssm.scalar_native: the Riccati pass, a linear vector recursion and the
 * quadratic recursion of the smoothed covariances.
 *
 * Riccati pass. For each of N independent models, steps t = 0..T-1 (row-major arrays):
 *   Pp_t = A_t Pf_{t-1} A_t^T + Q_t   (t > 0),   Pp_0 = P0
 *   g_t  = Pp_t h_t,   s_t = h_t^T g_t + r_t,   K_t = obs_t g_t / s_t
 *   M_t  = I - K_t h_t^T,   Pf_t = M_t Pp_t M_t^T + r_t K_t K_t^T     (Joseph form)
 * Shapes: A, Q, Pp, Pf (N, T, S, S); h, K (N, T, S); r, s, obs (N, T); P0 (N, S, S).
 * The backward pass runs the same steps in reverse and accumulates the adjoints of
 * A, Q, h, r and P0 from those of Pp, Pf, s and K (any of which may be NULL: zero).
 * Plain C99, double precision, no BLAS: S is small (the state of a GP kernel).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAXS 16

/* C = A B (S x S) */
static void mm(int S, const double *A, const double *B, double *C) {
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            double acc = 0.0;
            for (int k = 0; k < S; k++) acc += A[i * S + k] * B[k * S + j];
            C[i * S + j] = acc;
        }
}

/* C = A B^T */
static void mmt(int S, const double *A, const double *B, double *C) {
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            double acc = 0.0;
            for (int k = 0; k < S; k++) acc += A[i * S + k] * B[j * S + k];
            C[i * S + j] = acc;
        }
}

/* C = A^T B */
static void mtm(int S, const double *A, const double *B, double *C) {
    for (int i = 0; i < S; i++)
        for (int j = 0; j < S; j++) {
            double acc = 0.0;
            for (int k = 0; k < S; k++) acc += A[k * S + i] * B[k * S + j];
            C[i * S + j] = acc;
        }
}

int dynvae_riccati_forward(int64_t N, int64_t T, int S, const double *A, const double *Q,
                           const double *h, const double *r, const double *P0,
                           const uint8_t *obs, double *Pp, double *Pf, double *s,
                           double *K, int64_t *err) {
    if (S < 1 || S > MAXS) return 4;
    const int SS = S * S;
    double AP[MAXS * MAXS], M[MAXS * MAXS], MP[MAXS * MAXS], g[MAXS];
    for (int64_t n = 0; n < N; n++) {
        for (int64_t t = 0; t < T; t++) {
            const int64_t k = n * T + t;
            double *P = Pp + k * SS;
            if (t == 0) {
                memcpy(P, P0 + n * SS, sizeof(double) * SS);
            } else {
                mm(S, A + k * SS, Pf + (k - 1) * SS, AP);
                mmt(S, AP, A + k * SS, P);
                for (int i = 0; i < SS; i++) P[i] += Q[k * SS + i];
            }
            const double *hk = h + k * S;
            double sk = r[k];
            for (int i = 0; i < S; i++) {
                double acc = 0.0;
                for (int j = 0; j < S; j++) acc += P[i * S + j] * hk[j];
                g[i] = acc;
                sk += hk[i] * acc;
            }
            if (sk <= 0.0) {   /* NaN inputs pass through, as in the torch loops */
                err[0] = n;
                err[1] = t;
                return 1;
            }
            s[k] = sk;
            double *Kk = K + k * S;
            for (int i = 0; i < S; i++) Kk[i] = obs[k] ? g[i] / sk : 0.0;
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) M[i * S + j] = (i == j) - Kk[i] * hk[j];
            mm(S, M, P, MP);
            double *F = Pf + k * SS;
            mmt(S, MP, M, F);
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) F[i * S + j] += r[k] * Kk[i] * Kk[j];
        }
    }
    return 0;
}

static double at(const double *v, int64_t i) { return v ? v[i] : 0.0; }

int dynvae_riccati_backward(int64_t N, int64_t T, int S, const double *A, const double *Q,
                            const double *h, const double *r, const double *P0,
                            const uint8_t *obs, const double *Pp, const double *Pf,
                            const double *s, const double *K, const double *gPp,
                            const double *gPf, const double *gs, const double *gK,
                            double *gA, double *gQ, double *gh, double *gr, double *gP0) {
    if (S < 1 || S > MAXS) return 4;
    (void)Q;
    (void)P0;
    const int SS = S * S;
    double C[MAXS * MAXS], bF[MAXS * MAXS], bP[MAXS * MAXS], bM[MAXS * MAXS];
    double M[MAXS * MAXS], X[MAXS * MAXS], Y[MAXS * MAXS], g[MAXS], bK[MAXS], bg[MAXS];
    for (int64_t n = 0; n < N; n++) {
        memset(C, 0, sizeof(C));                        /* adjoint of Pf_t from step t+1 */
        for (int64_t t = T - 1; t >= 0; t--) {
            const int64_t k = n * T + t;
            const double *P = Pp + k * SS, *hk = h + k * S, *Kk = K + k * S;
            const double rk = r[k], sk = s[k];
            for (int i = 0; i < SS; i++) bF[i] = at(gPf, k * SS + i) + C[i];
            for (int i = 0; i < S; i++) {
                double acc = 0.0;
                for (int j = 0; j < S; j++) acc += P[i * S + j] * hk[j];
                g[i] = acc;
            }
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) M[i * S + j] = (i == j) - Kk[i] * hk[j];
            /* Pf = M P M^T + r K K^T */
            /* bM = bF M P^T + bF^T M P */
            mm(S, bF, M, X);
            mmt(S, X, P, bM);                            /* bF M P^T */
            mtm(S, bF, M, X);                            /* bF^T M */
            mm(S, X, P, Y);                              /* bF^T M P */
            for (int i = 0; i < SS; i++) bM[i] += Y[i];
            mtm(S, M, bF, X);                            /* M^T bF */
            mm(S, X, M, bP);                             /* M^T bF M */
            double br = 0.0;
            for (int i = 0; i < S; i++) {
                double acc = 0.0;
                for (int j = 0; j < S; j++) {
                    br += bF[i * S + j] * Kk[i] * Kk[j];
                    acc += (bF[i * S + j] + bF[j * S + i]) * Kk[j];
                }
                bK[i] = at(gK, k * S + i) + rk * acc;
            }
            /* M = I - K h^T */
            for (int i = 0; i < S; i++) {
                double acc = 0.0, acch = 0.0;
                for (int j = 0; j < S; j++) {
                    acc += bM[i * S + j] * hk[j];
                    acch += bM[j * S + i] * Kk[j];
                }
                bK[i] -= acc;
                gh[k * S + i] = -acch;
            }
            /* K = obs g / s */
            double bs = at(gs, k);
            for (int i = 0; i < S; i++) bg[i] = 0.0;
            if (obs[k]) {
                double dot = 0.0;
                for (int i = 0; i < S; i++) {
                    bg[i] = bK[i] / sk;
                    dot += bK[i] * g[i];
                }
                bs -= dot / (sk * sk);
            }
            /* s = h^T g + r */
            for (int i = 0; i < S; i++) {
                gh[k * S + i] += bs * g[i];
                bg[i] += bs * hk[i];
            }
            br += bs;
            gr[k] = br;
            /* g = P h */
            for (int i = 0; i < S; i++) {
                double acc = 0.0;
                for (int j = 0; j < S; j++) {
                    bP[i * S + j] += bg[i] * hk[j];
                    acc += P[j * S + i] * bg[j];
                }
                gh[k * S + i] += acc;
            }
            for (int i = 0; i < SS; i++) bP[i] += at(gPp, k * SS + i);
            if (t == 0) {
                memcpy(gP0 + n * SS, bP, sizeof(double) * SS);
                for (int i = 0; i < SS; i++) gA[k * SS + i] = gQ[k * SS + i] = 0.0;
                continue;
            }
            /* Pp = A Pf_{t-1} A^T + Q */
            const double *Ak = A + k * SS, *Fprev = Pf + (k - 1) * SS;
            memcpy(gQ + k * SS, bP, sizeof(double) * SS);
            mm(S, bP, Ak, X);                            /* bP A */
            mmt(S, X, Fprev, Y);                         /* bP A Fprev^T */
            mtm(S, bP, Ak, X);                           /* bP^T A */
            mm(S, X, Fprev, bM);                         /* bP^T A Fprev */
            for (int i = 0; i < SS; i++) gA[k * SS + i] = Y[i] + bM[i];
            mtm(S, Ak, bP, X);                           /* A^T bP */
            mm(S, X, Ak, C);                             /* A^T bP A */
        }
    }
    return 0;
}

/* Linear vector recursion over the T axis of N sequences:
 *   v_{t_0} = first,   v_{t_i} = F_{t_i} v_{t_{i-1}} + c_{t_i},  i = 1..T-1,
 * with t_i = i (forward) or T-1-i (reverse). F (N, T, S, S), c and v (N, T, S). */
void dynvae_linrec_forward(int64_t N, int64_t T, int S, int reverse, const double *F,
                           const double *c, const double *first, double *v) {
    const int SS = S * S;
    for (int64_t n = 0; n < N; n++) {
        int64_t t = reverse ? T - 1 : 0;
        memcpy(v + (n * T + t) * S, first + n * S, sizeof(double) * S);
        for (int64_t i = 1; i < T; i++) {
            const int64_t prev = t;
            t = reverse ? T - 1 - i : i;
            const int64_t k = n * T + t;
            const double *Fk = F + k * SS, *vp = v + (n * T + prev) * S;
            for (int a = 0; a < S; a++) {
                double acc = c[k * S + a];
                for (int b = 0; b < S; b++) acc += Fk[a * S + b] * vp[b];
                v[k * S + a] = acc;
            }
        }
    }
}

/* Adjoint of dynvae_linrec_forward: from gv (N, T, S) and the forward values v, the
 * gradients gF (N, T, S, S), gc (N, T, S) (zero at t_0) and gfirst (N, S). */
void dynvae_linrec_backward(int64_t N, int64_t T, int S, int reverse, const double *F,
                            const double *v, const double *gv, double *gF, double *gc,
                            double *gfirst) {
    const int SS = S * S;
    double lam[MAXS], nxt[MAXS];
    for (int64_t n = 0; n < N; n++) {
        memset(lam, 0, sizeof(lam));
        for (int64_t i = T - 1; i >= 1; i--) {
            const int64_t t = reverse ? T - 1 - i : i, prev = reverse ? t + 1 : t - 1;
            const int64_t k = n * T + t;
            const double *Fk = F + k * SS, *vp = v + (n * T + prev) * S;
            for (int a = 0; a < S; a++) {
                lam[a] += gv[k * S + a];
                gc[k * S + a] = lam[a];
            }
            for (int a = 0; a < S; a++)
                for (int b = 0; b < S; b++) gF[k * SS + a * S + b] = lam[a] * vp[b];
            for (int b = 0; b < S; b++) {
                double acc = 0.0;
                for (int a = 0; a < S; a++) acc += Fk[a * S + b] * lam[a];
                nxt[b] = acc;
            }
            memcpy(lam, nxt, sizeof(double) * S);
        }
        const int64_t t0 = reverse ? T - 1 : 0, k0 = n * T + t0;
        for (int a = 0; a < S; a++) {
            gfirst[n * S + a] = lam[a] + gv[k0 * S + a];
            gc[k0 * S + a] = 0.0;
        }
        for (int a = 0; a < SS; a++) gF[k0 * SS + a] = 0.0;
    }
}

/* Backward quadratic recursion of the RTS covariances over N sequences:
 *   P_{T-1} = last,   P_t = G_t P_{t+1} G_t^T + D_t,   t = T-2..0.
 * G, D, P (N, T, S, S); entry T-1 of G and D is unused. */
void dynvae_quadrec_forward(int64_t N, int64_t T, int S, const double *G, const double *D,
                            const double *last, double *P) {
    const int SS = S * S;
    double X[MAXS * MAXS];
    for (int64_t n = 0; n < N; n++) {
        memcpy(P + (n * T + T - 1) * SS, last + n * SS, sizeof(double) * SS);
        for (int64_t t = T - 2; t >= 0; t--) {
            const int64_t k = n * T + t;
            mm(S, G + k * SS, P + (k + 1) * SS, X);
            mmt(S, X, G + k * SS, P + k * SS);
            for (int a = 0; a < SS; a++) P[k * SS + a] += D[k * SS + a];
        }
    }
}

/* Adjoint of dynvae_quadrec_forward: gG, gD (N, T, S, S) (zero at T-1), glast (N, S, S). */
void dynvae_quadrec_backward(int64_t N, int64_t T, int S, const double *G, const double *P,
                             const double *gP, double *gG, double *gD, double *glast) {
    const int SS = S * S;
    double L[MAXS * MAXS], X[MAXS * MAXS], Y[MAXS * MAXS];
    for (int64_t n = 0; n < N; n++) {
        memset(L, 0, sizeof(L));
        for (int64_t t = 0; t <= T - 2; t++) {
            const int64_t k = n * T + t;
            const double *Gk = G + k * SS, *Pn = P + (k + 1) * SS;
            for (int a = 0; a < SS; a++) {
                L[a] += gP[k * SS + a];
                gD[k * SS + a] = L[a];
            }
            mm(S, L, Gk, X);                             /* L G */
            mmt(S, X, Pn, Y);                            /* L G P^T */
            mtm(S, L, Gk, X);                            /* L^T G */
            mm(S, X, Pn, gG + k * SS);                   /* L^T G P */
            for (int a = 0; a < SS; a++) gG[k * SS + a] += Y[a];
            mtm(S, Gk, L, X);                            /* G^T L */
            mm(S, X, Gk, L);                             /* G^T L G */
        }
        const int64_t k = n * T + T - 1;
        for (int a = 0; a < SS; a++) {
            glast[n * SS + a] = L[a] + gP[k * SS + a];
            gG[k * SS + a] = gD[k * SS + a] = 0.0;
        }
    }
}
