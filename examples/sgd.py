"""Data-parallel SGD: gradient buckets allreduced with iallreduce while the next is computed.

    ibcomm_run -n 4 -- python3 -m ibcomm.run examples/sgd.py

A 2-layer perceptron (tanh hidden layer, logistic output) learns a synthetic binary task. The
batch is split over the ranks; each rank computes its shard's gradient bucket by bucket in
backward order (the output layer first, then the hidden units a few at a time) and starts an
iallreduce of each bucket as soon as it is ready, so that one bucket is summed while the next
is computed (what PyTorch DDP and Horovod do). After the last bucket it waits for all of them
and takes the step: every rank then holds the same weights.

The check: every rank also trains the model alone on the whole batch, and the two must agree
up to float rounding (the sums are taken in another order). Rank 0 prints the job's largest
difference; the exit status is 1 if it exceeds TOL. nas.py and fedavg.py reuse the model.
"""
import sys

import numpy as np

import ibcomm

N, D, H = 500, 16, 32     # samples in the batch (uneven shards on 3 or 6 ranks), features, hidden units
STEPS, LR = 30, 0.5
CHUNK = 8                 # hidden units per bucket: H / CHUNK buckets for layer 1, 1 for layer 2
TOL = 1e-9                # float64: the reduction order changes the last bits only


def dataset(n, seed):
    """n samples of D features and a column of ones (the biases are the last weights), labelled
    by a random linear 'teacher' so that there is something to learn."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D))
    y = (x @ rng.standard_normal(D) > 0).astype(np.float64)
    return np.hstack([x, np.ones((n, 1))]), y


class MLP:
    """x -> sigmoid(w2 . [tanh(W1 x), 1]), the mean logistic loss. Its parameters are one flat
    float64 vector: w2 (h + 1), then W1 (h rows of D + 1), so that a bucket (a range of it) is
    a contiguous array that iallreduce takes in place."""

    def __init__(self, h=H, chunk=CHUNK):
        self.h, self.chunk = h, chunk
        self.size = h + 1 + h * (D + 1)

    def init(self, seed):
        return np.random.default_rng(seed).standard_normal(self.size) * 0.3

    def layers(self, p):
        return p[:self.h + 1], p[self.h + 1:].reshape(self.h, D + 1)

    def forward(self, p, x):
        w2, w1 = self.layers(p)
        hid = np.hstack([np.tanh(x @ w1.T), np.ones((len(x), 1))])
        return hid, 1 / (1 + np.exp(-(hid @ w2)))

    def loss(self, p, x, y):
        prob = np.clip(self.forward(p, x)[1], 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(prob) + (1 - y) * np.log(1 - prob))

    def gradient(self, p, x, y, n_total, grad, ready=lambda bucket: None):
        """Writes into grad the gradient of the mean loss over n_total samples contributed by
        the samples x, y (a shard: the shards' gradients sum to the batch's), one bucket after
        the other in backward order; ready(bucket) is called as each one is complete."""
        w2, _ = self.layers(p)
        g2, g1 = self.layers(grad)
        hid, prob = self.forward(p, x)
        dlogit = (prob - y) / n_total                    # d loss / d output, per sample
        g2[:] = hid.T @ dlogit
        ready(g2)
        dpre = np.outer(dlogit, w2[:self.h]) * (1 - hid[:, :self.h] ** 2)   # through tanh
        for j in range(0, self.h, self.chunk):
            g1[j:j + self.chunk] = dpre[:, j:j + self.chunk].T @ x
            ready(grad[self.h + 1 + j * (D + 1):self.h + 1 + min(j + self.chunk, self.h) * (D + 1)])


def shard(n, rank, size):
    """This rank's range of n samples: contiguous, sizes differing by one at most."""
    return n * rank // size, n * (rank + 1) // size


def train(model, comm, x, y, steps, lr, seed):
    """Data-parallel training over comm (its ranks split x, y); alone when comm is None.
    Returns the weights, and at how many bucket boundaries the previous bucket was still being
    summed (the overlap: it goes on while the next bucket is computed)."""
    p = model.init(seed)
    grad = np.empty_like(p)
    lo, hi = shard(len(x), comm.rank, comm.size) if comm else (0, len(x))
    overlapped = 0
    for _ in range(steps):
        reqs = []

        def ready(bucket):
            nonlocal overlapped
            overlapped += bool(reqs) and not reqs[-1].test()   # the previous one is still being summed
            if comm:
                reqs.append(comm.iallreduce(bucket))      # in place, SUM

        model.gradient(p, x[lo:hi], y[lo:hi], len(x), grad, ready)
        for r in reqs:
            r.wait()
        p -= lr * grad
    return p, overlapped


def main():
    model = MLP()
    x, y = dataset(N, seed=1)
    with ibcomm.Comm() as comm:
        p, overlapped = train(model, comm, x, y, STEPS, LR, seed=2)
        ref, _ = train(model, None, x, y, STEPS, LR, seed=2)    # single-process reference
        diff = comm.allreduce(np.array([np.max(np.abs(p - ref))]), op=ibcomm.MAX)[0]
        if comm.rank == 0:
            buckets = 1 + -(-H // CHUNK)
            print("sgd: %d ranks, %d samples, %d steps of %d buckets (%d weights); the previous bucket "
                  "still in flight when the next was ready: %d of %d times" %
                  (comm.size, N, STEPS, buckets, model.size, overlapped, STEPS * (buckets - 1)))
            print("sgd: loss %.4f -> %.4f; max |w - w_single| = %.3g (tolerance %g): %s" %
                  (model.loss(model.init(2), x, y), model.loss(p, x, y), diff, TOL,
                   "OK" if diff <= TOL else "FAILED"))
    return 0 if diff <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
