"""Architecture search: groups of ranks train candidate models, the best one wins.

    ibcomm_run -n 4 -- python3 -m ibcomm.run examples/nas.py

The job splits into GROUPS groups of neighbouring ranks (split). Candidate c (a hidden-layer
width and a learning rate) belongs to group c % GROUPS, which trains it data-parallel (the
training set split over the group's ranks, sgd.py's bucketed iallreduce) on a communicator of
its own, a dup of the group's: each candidate's traffic is kept apart, as a framework would
give each trial its process group. Its score is the loss on a validation set. Every rank
contributes its group's scores to an allgather, so that all agree on the winner; the leader
of the winner's group (its lowest rank) broadcasts the winner's weights to every rank.

The check: every rank also trains every candidate alone on the whole training set and finds
the same scores (up to float rounding), the same winner and the same weights. Rank 0 prints
the scores and the differences; the exit status is 1 if one exceeds TOL or the winner differs.
"""
import sys

import numpy as np

import ibcomm
from sgd import MLP, dataset, train

CANDIDATES = [(4, 0.5), (16, 0.5), (32, 0.1), (8, 1.0), (24, 0.3)]   # (hidden units, learning rate)
GROUPS, STEPS = 2, 20
TOL = 1e-9


def main():
    x, y = dataset(400, seed=11)
    x, y, vx, vy = x[:300], y[:300], x[300:], y[300:]    # training and validation sets
    with ibcomm.Comm() as comm:
        groups = min(GROUPS, comm.size)
        group_of = [r * groups // comm.size for r in range(comm.size)]    # neighbouring ranks
        leader = [group_of.index(g) for g in range(groups)]               # each group's lowest rank
        mine = group_of[comm.rank]
        group = comm.split(mine, key=comm.rank)

        # this group's candidates, each trained on a clone of the group's communicator
        per = -(-len(CANDIDATES) // groups)            # candidates per group (at most)
        scores = np.full(per, np.inf)
        weights = {}
        for i, c in enumerate(range(mine, len(CANDIDATES), groups)):
            hidden, lr = CANDIDATES[c]
            trial = group.dup()
            weights[c], _ = train(MLP(h=hidden), trial, x, y, STEPS, lr, seed=c)
            trial.close()
            scores[i] = MLP(h=hidden).loss(weights[c], vx, vy)
        group.close()

        # everyone learns every score, picks the same winner, gets its weights from its group
        table = comm.allgather(scores, np.empty(comm.size * per))
        score = np.array([table[leader[c % groups] * per + c // groups] for c in range(len(CANDIDATES))])
        win = int(np.argmin(score))
        best = weights.get(win, np.empty(MLP(h=CANDIDATES[win][0]).size))
        comm.broadcast(best, root=leader[win % groups])

        # the reference: every candidate trained alone on the whole training set
        ref = [train(MLP(h=h), None, x, y, STEPS, lr, seed=c)[0] for c, (h, lr) in enumerate(CANDIDATES)]
        ref_score = np.array([MLP(h=h).loss(w, vx, vy) for (h, _), w in zip(CANDIDATES, ref)])
        ref_win = int(np.argmin(ref_score))
        diff = max(np.max(np.abs(score - ref_score)), np.max(np.abs(best - ref[win])))
        bad = comm.allreduce(np.array([diff, win != ref_win]), op=ibcomm.MAX)
        ok = bad[0] <= TOL and not bad[1]
        if comm.rank == 0:
            for c, (h, lr) in enumerate(CANDIDATES):
                print("nas: candidate %d (%2d hidden units, lr %.1f) trained by group %d (ranks %s): "
                      "validation loss %.4f" % (c, h, lr, c % groups,
                                                [r for r in range(comm.size) if group_of[r] == c % groups],
                                                score[c]))
            print("nas: winner %d from rank %d, alone %d; max |score - alone|, |w - w_alone| = %.3g "
                  "(tolerance %g): %s" % (win, leader[win % groups], ref_win, bad[0], TOL,
                                          "OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
