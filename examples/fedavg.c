/*
 * Federated averaging (FedAvg) in C: clients with different amounts of data, a few per round,
 * joining each round's communicator through ibcomm_split. The C twin of fedavg.py:
 *
 *   ibcomm_run -n 4 -- ./examples/fedavg
 *
 * Every rank is a client with data of its own: a different number of samples, around a
 * centre of its own. Each round, the clients taking part (drawn from the round's seed, as a
 * server samples them) split off a communicator (color 0; the others pass a negative color
 * and get none). From the global model (logistic regression), each trains EPOCHS local steps,
 * then one allreduce sums their count-weighted models and their counts: the new global model
 * is sum(n_k * w_k) / sum(n_k). The lowest participant broadcasts it to every client.
 *
 * The check: every rank also computes every client's update itself (deterministic: same
 * seeds, same starting model) and the weighted average centrally. Rank 0 prints each round
 * and the largest difference; the exit status is 1 if it exceeds TOL or a call fails.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <ibcomm.h>

enum { D = 8, NW = D + 1, MAXN = 250, MAXCLIENTS = 64, ROUNDS = 8, EPOCHS = 5 };
#define LR 0.5
#define TOL 1e-10 /* float64: only the order of the sums differs */

/* A reproducible uniform number in [0, 1) (splitmix64). */
static double uniform(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

/* Client k's samples (features and a 1, the bias): 30 to 250, around a centre of its own; the
 * labels come from one teacher shared by every client. Returns their number. */
static int client_data(int k, double x[MAXN][NW], double y[MAXN])
{
	uint64_t s = 100 + (uint64_t)k, t = 7;
	int n = 30 + (97 * k) % 221;
	double centre[D], teacher[D];

	for (int j = 0; j < D; j++) {
		centre[j] = 2 * uniform(&s) - 1;
		teacher[j] = 2 * uniform(&t) - 1;
	}
	for (int i = 0; i < n; i++) {
		double dot = 0;

		for (int j = 0; j < D; j++) {
			x[i][j] = centre[j] + 2 * uniform(&s) - 1;
			dot += x[i][j] * teacher[j];
		}
		x[i][D] = 1;
		y[i] = dot > 0;
	}
	return n;
}

/* Client k's model after EPOCHS full-batch gradient steps on its data from w. */
static int local_update(int k, const double *w, double *out)
{
	static double x[MAXN][NW], y[MAXN];
	int n = client_data(k, x, y);

	memcpy(out, w, NW * sizeof(*out));
	for (int e = 0; e < EPOCHS; e++) {
		double grad[NW] = {0};

		for (int i = 0; i < n; i++) {
			double logit = 0;

			for (int j = 0; j < NW; j++)
				logit += out[j] * x[i][j];
			for (int j = 0; j < NW; j++)
				grad[j] += (1 / (1 + exp(-logit)) - y[i]) * x[i][j] / n;
		}
		for (int j = 0; j < NW; j++)
			out[j] -= LR * grad[j];
	}
	return n;
}

/* Is client k in round r? Each with probability 0.6, and at least one (client r % nclients). */
static int takes_part(int r, int k, int nclients)
{
	int any = 0;

	for (int c = 0; c < nclients; c++) {
		uint64_t s = 1000 + (uint64_t)r * MAXCLIENTS + (uint64_t)c;
		int in = uniform(&s) < 0.6;

		if (c == k && in)
			return 1;
		any |= in;
	}
	return !any && k == r % nclients;
}

static int fail(ibcomm_t *comm, const char *what, ibcomm_status_t st)
{
	fprintf(stderr, "rank %d: %s: %s: %s\n", ibcomm_rank(comm), what, ibcomm_strerror(st),
		ibcomm_last_error(comm));
	ibcomm_destroy(comm);
	return 1;
}

int main(void)
{
	double w[NW] = {0}, central[NW] = {0}, worst = 0;
	ibcomm_t *comm, *sub;
	ibcomm_status_t st;
	int rank, size;

	st = ibcomm_init_env(&comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	rank = ibcomm_rank(comm);
	size = ibcomm_size(comm);
	if (size > MAXCLIENTS) {
		fprintf(stderr, "fedavg: at most %d clients\n", MAXCLIENTS);
		ibcomm_destroy(comm);
		return 1;
	}

	for (int r = 0; r < ROUNDS; r++) {
		int in = takes_part(r, rank, size), first = -1, total = 0;
		double sum[NW + 1] = {0}, diff = 0;

		/* this round's communicator: the participants only */
		st = ibcomm_split(comm, in ? 0 : -1, rank, &sub);
		if (st != IBCOMM_OK)
			return fail(comm, "ibcomm_split", st);
		if (sub) {
			double buf[NW + 1];
			int n = local_update(rank, w, buf);

			for (int j = 0; j < NW; j++)
				buf[j] *= n;        /* [n_k * w_k, n_k], summed over the participants */
			buf[NW] = n;
			st = ibcomm_allreduce(sub, buf, buf, NW + 1, IBCOMM_FLOAT64, IBCOMM_SUM);
			if (st != IBCOMM_OK) {
				fail(sub, "ibcomm_allreduce of the weighted models", st);
				ibcomm_destroy(comm);
				return 1;
			}
			for (int j = 0; j < NW; j++)
				w[j] = buf[j] / buf[NW];
			ibcomm_destroy(sub);
		}
		for (int k = size - 1; k >= 0; k--)
			if (takes_part(r, k, size))
				first = k;
		st = ibcomm_broadcast(comm, w, NW, IBCOMM_FLOAT64, first); /* to every client */
		if (st != IBCOMM_OK)
			return fail(comm, "ibcomm_broadcast of the global model", st);

		/* the reference: every participant's update, averaged centrally */
		for (int k = 0; k < size; k++) {
			double u[NW];
			int n;

			if (!takes_part(r, k, size))
				continue;
			n = local_update(k, central, u);
			for (int j = 0; j < NW; j++)
				sum[j] += n * u[j];
			total += n;
		}
		for (int j = 0; j < NW; j++) {
			central[j] = sum[j] / total;
			diff = fmax(diff, fabs(w[j] - central[j]));
		}
		worst = fmax(worst, diff);
		if (rank == 0) {
			printf("fedavg: round %d: clients", r);
			for (int k = 0; k < size; k++)
				if (takes_part(r, k, size))
					printf(" %d", k);
			printf(" with %d samples; |w - central| = %.3g\n", total, diff);
		}
	}

	st = ibcomm_allreduce(comm, &worst, &worst, 1, IBCOMM_FLOAT64, IBCOMM_MAX);
	if (st != IBCOMM_OK)
		return fail(comm, "ibcomm_allreduce of the difference", st);
	if (rank == 0)
		printf("fedavg: %d clients, %d rounds: max |w - w_central| = %.3g (tolerance %g): %s\n", size, ROUNDS,
		       worst, TOL, worst <= TOL ? "OK" : "FAILED");
	st = ibcomm_destroy(comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_destroy: %s\n", rank, ibcomm_strerror(st));
		return 1;
	}
	return worst <= TOL ? 0 : 1;
}
