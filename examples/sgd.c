/*
 * Data-parallel SGD: gradient buckets allreduced with ibcomm_iallreduce while the next one is
 * computed (what PyTorch DDP and Horovod do). The C twin of sgd.py:
 *
 *   ibcomm_run -n 4 -- ./examples/sgd
 *
 * A 2-layer perceptron (tanh hidden layer, logistic output, float32) learns a synthetic
 * binary task. The batch is split over the ranks; each rank computes its shard's gradient
 * bucket by bucket in backward order (the output layer first, then the hidden units CHUNK at
 * a time), starting an iallreduce of each bucket as soon as it is complete, so that the
 * library sums one bucket while the next is computed. After the last bucket it waits for all
 * of them and takes the step: every rank then holds the same weights.
 *
 * The check: every rank also trains the model alone on the whole batch; the two must agree up
 * to float rounding (the sums are taken in another order). Rank 0 prints the job's largest
 * difference; the exit status is 1 if it exceeds TOL or a call fails.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ibcomm.h>

enum {
	N = 500,              /* samples in the batch: uneven shards on 3 or 6 ranks */
	D = 16,               /* features (a constant 1 follows them: the biases are the last weights) */
	H = 32,               /* hidden units */
	STEPS = 30,
	CHUNK = 8,            /* hidden units per bucket */
	BUCKETS = 1 + H / CHUNK,
	NW = H + 1 + H * (D + 1), /* the weights, one flat vector: w2 (H + 1), then W1 (H rows of D + 1) */
};
_Static_assert(H % CHUNK == 0, "a bucket holds CHUNK whole hidden units");
#define LR 0.5f
#define TOL 1e-5f             /* float32: the reduction order changes the last bits only */

static float x[N][D + 1], y[N];

/* A reproducible uniform number in [-1, 1) (splitmix64): the same data on every rank. */
static float uniform(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return (float)((z ^ (z >> 31)) >> 40) / (float)(1 << 23) - 1.0f;
}

/* Labelled by a random linear "teacher", so that there is something to learn. */
static void make_data(void)
{
	uint64_t s = 1;
	float teacher[D];

	for (int k = 0; k < D; k++)
		teacher[k] = uniform(&s);
	for (int n = 0; n < N; n++) {
		float dot = 0;

		for (int k = 0; k < D; k++) {
			x[n][k] = uniform(&s);
			dot += teacher[k] * x[n][k];
		}
		x[n][D] = 1;
		y[n] = dot > 0;
	}
}

static void init_weights(float *w)
{
	uint64_t s = 2;

	for (int i = 0; i < NW; i++)
		w[i] = 0.3f * uniform(&s);
}

static float dot(const float *a, const float *b, int n)
{
	float s = 0;

	for (int i = 0; i < n; i++)
		s += a[i] * b[i];
	return s;
}

/* Forward pass of sample n: the hidden layer (and a 1) into hid, the probability of class 1. */
static float forward(const float *w, int n, float hid[H + 1])
{
	for (int j = 0; j < H; j++)
		hid[j] = tanhf(dot(w + H + 1 + j * (D + 1), x[n], D + 1));
	hid[H] = 1;
	return 1 / (1 + expf(-dot(w, hid, H + 1)));
}

static float loss(const float *w)
{
	float hid[H + 1], sum = 0;

	for (int n = 0; n < N; n++) {
		float p = fminf(fmaxf(forward(w, n, hid), 1e-7f), 1 - 1e-7f);

		sum -= y[n] ? logf(p) : logf(1 - p);
	}
	return sum / N;
}

/* Told each bucket (a range of the gradient) as soon as it is complete. */
typedef void ready_fn(void *arg, float *bucket, size_t count);

/*
 * The gradient of the mean loss over the N samples contributed by samples lo..hi-1 (a shard:
 * the shards' gradients sum to the batch's), written into grad one bucket after the other in
 * backward order.
 */
static void gradient(const float *w, int lo, int hi, float *grad, ready_fn *ready, void *arg)
{
	static float hid[N][H + 1], dlogit[N];

	for (int n = lo; n < hi; n++)
		dlogit[n] = (forward(w, n, hid[n]) - y[n]) / N; /* d loss / d output */

	/* bucket 0: the output layer */
	memset(grad, 0, (H + 1) * sizeof(*grad));
	for (int n = lo; n < hi; n++)
		for (int j = 0; j <= H; j++)
			grad[j] += dlogit[n] * hid[n][j];
	ready(arg, grad, H + 1);

	/* then CHUNK hidden units per bucket, back through tanh */
	for (int j0 = 0; j0 < H; j0 += CHUNK) {
		float *g = grad + H + 1 + j0 * (D + 1);

		memset(g, 0, CHUNK * (D + 1) * sizeof(*g));
		for (int n = lo; n < hi; n++)
			for (int j = j0; j < j0 + CHUNK; j++) {
				float dpre = dlogit[n] * w[j] * (1 - hid[n][j] * hid[n][j]);

				for (int k = 0; k <= D; k++)
					g[(j - j0) * (D + 1) + k] += dpre * x[n][k];
			}
		ready(arg, g, CHUNK * (D + 1));
	}
}

/* The buckets of one step in flight. */
struct step {
	ibcomm_t *comm;
	ibcomm_request_t *req[BUCKETS];
	int started;
	ibcomm_status_t status; /* the first failure */
	int overlapped;         /* times the previous bucket was still being summed */
};

/* ready_fn: sum the bucket over the ranks, in place, while the caller goes on. */
static void start_allreduce(void *arg, float *bucket, size_t count)
{
	struct step *s = arg;
	ibcomm_status_t st;
	int done = 1;

	if (s->started > 0 && ibcomm_test(s->req[s->started - 1], &done) == IBCOMM_OK && !done)
		s->overlapped++;
	st = ibcomm_iallreduce(s->comm, bucket, bucket, count, IBCOMM_FLOAT32, IBCOMM_SUM, &s->req[s->started]);
	if (st == IBCOMM_OK)
		s->started++;
	else if (s->status == IBCOMM_OK)
		s->status = st;
}

static void no_comm(void *arg, float *bucket, size_t count)
{
	(void)arg, (void)bucket, (void)count;
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
	static float w[NW], ref[NW], grad[NW];
	struct step s = {0};
	ibcomm_status_t st;
	int rank, size, lo, hi;
	float diff = 0;

	st = ibcomm_init_env(&s.comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "ibcomm_init_env: %s: %s\n", ibcomm_strerror(st), ibcomm_last_error(NULL));
		return 1;
	}
	rank = ibcomm_rank(s.comm);
	size = ibcomm_size(s.comm);
	lo = N * rank / size; /* this rank's shard: sizes differ by one at most */
	hi = N * (rank + 1) / size;
	make_data();
	init_weights(w);
	init_weights(ref);
	if (rank == 0)
		printf("sgd: %d ranks, %d samples, %d steps of %d buckets (%d weights), loss %.4f\n", size, N,
		       STEPS, BUCKETS, NW, loss(w));

	for (int step = 0; step < STEPS; step++) {
		/* data-parallel: the buckets are summed while the next ones are computed */
		s.started = 0;
		gradient(w, lo, hi, grad, start_allreduce, &s);
		for (int b = 0; b < s.started; b++) {
			st = ibcomm_wait(s.req[b]); /* every request started is waited for (and freed) */
			if (st != IBCOMM_OK && s.status == IBCOMM_OK)
				s.status = st;
		}
		if (s.status != IBCOMM_OK)
			return fail(s.comm, "ibcomm_iallreduce of a gradient bucket", s.status);
		for (int i = 0; i < NW; i++)
			w[i] -= LR * grad[i];

		/* the reference: the whole batch in this process alone */
		gradient(ref, 0, N, grad, no_comm, NULL);
		for (int i = 0; i < NW; i++)
			ref[i] -= LR * grad[i];
	}
	for (int i = 0; i < NW; i++)
		diff = fmaxf(diff, fabsf(w[i] - ref[i]));
	st = ibcomm_allreduce(s.comm, &diff, &diff, 1, IBCOMM_FLOAT32, IBCOMM_MAX);
	if (st != IBCOMM_OK)
		return fail(s.comm, "ibcomm_allreduce of the difference", st);
	if (rank == 0)
		printf("sgd: loss %.4f; the previous bucket still in flight when the next was ready: %d of %d "
		       "times; max |w - w_single| = %.3g (tolerance %g): %s\n",
		       loss(w), s.overlapped, STEPS * (BUCKETS - 1), diff, TOL, diff <= TOL ? "OK" : "FAILED");
	st = ibcomm_destroy(s.comm);
	if (st != IBCOMM_OK) {
		fprintf(stderr, "rank %d: ibcomm_destroy: %s\n", rank, ibcomm_strerror(st));
		return 1;
	}
	return diff <= TOL ? 0 : 1;
}
