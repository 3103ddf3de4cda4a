"""Federated averaging (FedAvg): clients with different amounts of data, a few per round.

    ibcomm_run -n 4 -- python3 -m ibcomm.run examples/fedavg.py

Every rank is a client with data of its own: a different number of samples, drawn around a
centre of its own (not identically distributed). Each round, the clients taking part (chosen
from the round's seed, as a server samples them) make that round's communicator with split:
color 0 for them, a negative color (no communicator) for the others. From the global model,
each participant trains a few local epochs on its data; the participants then sum, with one
allreduce, their count-weighted models and their counts: the new global model is
sum(n_k * w_k) / sum(n_k). The lowest participant broadcasts it to every client, the ones
that sat the round out too.

The check: every rank also computes every client's update itself (they are deterministic:
same seeds, same starting model) and the weighted average centrally, and compares it with
the global model of every round. Rank 0 prints each round and the largest difference; the
exit status is 1 if it exceeds TOL.
"""
import sys

import numpy as np

import ibcomm
from sgd import D, MLP

ROUNDS, EPOCHS, LR = 8, 5, 0.5
TOL = 1e-10             # float64: only the order of the sums differs
model = MLP(h=8)


def client_data(k):
    """Client k's samples: 30 to 250 of them, around a centre of its own; the labels come
    from one teacher shared by every client (the task the federation learns)."""
    rng = np.random.default_rng(100 + k)
    n = 30 + (97 * k) % 221
    x = rng.standard_normal((n, D)) + rng.standard_normal(D)
    y = (x @ np.random.default_rng(7).standard_normal(D) > 0).astype(np.float64)
    return np.hstack([x, np.ones((n, 1))]), y


def local_update(w, k):
    """Client k's model after EPOCHS full-batch gradient steps on its data from w."""
    x, y = client_data(k)
    w, grad = w.copy(), np.empty_like(w)
    for _ in range(EPOCHS):
        model.gradient(w, x, y, len(x), grad)
        w -= LR * grad
    return w


def participants(rnd, nclients):
    """The clients of round rnd: each with probability 0.6, at least one."""
    chosen = np.random.default_rng(1000 + rnd).random(nclients) < 0.6
    if not chosen.any():
        chosen[rnd % nclients] = True
    return [k for k in range(nclients) if chosen[k]]


def main():
    worst = 0.0
    w = model.init(seed=3)           # the same initial global model everywhere
    central = w.copy()
    with ibcomm.Comm() as comm:
        n_k = len(client_data(comm.rank)[1])
        for rnd in range(ROUNDS):
            clients = participants(rnd, comm.size)
            sub = comm.split(0 if comm.rank in clients else -1, key=comm.rank)
            if sub is not None:                  # taking part: [n_k * w_k, n_k], summed
                buf = np.append(n_k * local_update(w, comm.rank), n_k)
                sub.allreduce(buf)
                w = buf[:-1] / buf[-1]
                sub.close()
            comm.broadcast(w, root=clients[0])   # from the lowest participant to everyone

            # the reference: every participant's update, averaged centrally
            counts = [len(client_data(k)[1]) for k in clients]
            updates = [local_update(central, k) for k in clients]
            central = sum(n * u for n, u in zip(counts, updates)) / sum(counts)
            diff = np.max(np.abs(w - central))
            worst = max(worst, diff)
            if comm.rank == 0:
                everyone = np.vstack([client_data(k)[0] for k in range(comm.size)])
                labels = np.concatenate([client_data(k)[1] for k in range(comm.size)])
                print("fedavg: round %d: clients %s with %s samples; loss on all data %.4f; "
                      "|w - central| = %.3g" % (rnd, clients, counts, model.loss(w, everyone, labels), diff))
        worst = comm.allreduce(np.array([worst]), op=ibcomm.MAX)[0]
        if comm.rank == 0:
            print("fedavg: %d clients, %d rounds: max |w - w_central| = %.3g (tolerance %g): %s" %
                  (comm.size, ROUNDS, worst, TOL, "OK" if worst <= TOL else "FAILED"))
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
