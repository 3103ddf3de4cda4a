/*
 * The shared-memory transport: lib/transport.h through rings in /dev/shm (layout: shm.h).
 *
 * A put copies the chunk into the next free slot of the ring this rank owns in the
 * receiver's segment, fills the slot's descriptor and publishes it by moving head with a
 * release store; get() sees head with an acquire load and hands out the slot in place;
 * release() moves tail, which is the writer's credit. Head and tail live on their own cache
 * lines, each written by one side only.
 *
 * Waiting: every put into a segment and every release of a slot rings the bell (a futex word)
 * of the rank that will care (the receiver; the writer), and wakes it with FUTEX_WAKE only
 * when it announced that it sleeps. wait() returns as soon as the bell moved since it last
 * returned; before sleeping it polls the bell for IBC_SHM_SPIN_US (yielding the core after the
 * first few hundred looks), then sleeps on the futex in
 * slices of IBC_SHM_SLICE_MS, looking at liveness between slices: failure notices of the
 * bootstrap (as the TCP transport) and, for peers in our pid namespace, whether the process
 * still exists. Idle, a rank wakes 10 times a second and costs no CPU otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "shm_int.h"

static const char *chan_name(int chan)
{
	return chan == IBC_CHAN_COLL ? "coll" : "p2p";
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static long futex(atomic_uint *w, int op, unsigned val, const struct timespec *ts)
{
	return syscall(SYS_futex, (unsigned *)w, op, val, ts, NULL, 0);
}

/* Async-signal-safe (interrupt() uses it): an atomic add, a load and maybe one system call. */
void ibc_shm_bell_ring(struct ibc_shm_live *l, int bell_fd)
{
	unsigned how;

	atomic_fetch_add(&l->bell, 1);
	how = atomic_load(&l->sleeping);
	if (how) {
		int saved = errno;
		char b = 1;

		/* a full pipe (EAGAIN) already wakes the sleeper; every mapper holds a read end, so
		 * no write ever raises SIGPIPE */
		if (how == SHM_SLEEP_FD && bell_fd >= 0)
			(void)!write(bell_fd, &b, 1);
		else
			futex(&l->bell, FUTEX_WAKE, INT_MAX, NULL);
		errno = saved;
	}
}

static bool aborted(const struct shm *s)
{
	return atomic_load(&s->comm->aborted) != 0;
}

static ibcomm_status_t abort_err(struct shm *s, const char *what)
{
	return ibc_err(s->comm, IBCOMM_ERR_ABORTED, "rank %d: shared-memory %s interrupted: the communicator was aborted",
		       s->comm->rank, what);
}

static void mark_dead(struct shm_peer *p, ibcomm_status_t st, const char *why)
{
	if (p->dead)
		return;
	p->dead = true;
	p->dead_st = st;
	snprintf(p->why, sizeof(p->why), "%s", why);
}

static void mark_notice(void *arg, int r)
{
	mark_dead(&((struct shm *)arg)->peers[r], IBCOMM_ERR_PEER, "died (the rendezvous server reported it)");
}

/* Failure notices of the bootstrap (ibc_notices_poll): every call fails naming the dead. */
static ibcomm_status_t notices_check(struct shm *s, bool readable)
{
	if (!ibc_notices_poll(s->comm, &s->notes, readable, mark_notice, s))
		return IBCOMM_OK;
	return ibc_err(s->comm, IBCOMM_ERR_PEER, "rank %d: %s", s->comm->rank, s->notes.why);
}

bool ibc_shm_pid_gone(pid_t pid)
{
	char path[40], buf[128], *rp;
	ssize_t n;
	int fd;

	if (kill(pid, 0))
		return errno == ESRCH;
	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	rp = strrchr(buf, ')'); /* "pid (comm) S ...": the name may hold anything */
	return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/*
 * The slow path between sleeps: bootstrap notices (an error), and peers whose process is
 * gone (true: the callers retry and fail on that peer, while others may still finish).
 */
static bool liveness(struct shm *s, ibcomm_status_t *st)
{
	int fd = s->comm->boot ? ibc_boot_fd(s->comm->boot) : -1;
	bool readable = false, news = false;

	if (fd >= 0) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };

		readable = poll(&pf, 1, 0) > 0;
	}
	*st = notices_check(s, readable);
	if (*st)
		return true;
	for (int r = 0; r < s->comm->size; r++) {
		struct shm_peer *p = &s->peers[r];
		char why[80];

		if (p->dead || p->pid <= 0 || !ibc_shm_pid_gone(p->pid))
			continue;
		snprintf(why, sizeof(why), "exited or died (its process %ld is gone)", (long)p->pid);
		mark_dead(p, IBCOMM_ERR_PEER, why);
		news = true;
	}
	return news;
}

static ibcomm_status_t dead_err(struct shm *s, int peer, const char *op, int chan)
{
	struct shm_peer *p = &s->peers[peer];
	ibcomm_status_t st;

	/* a notice of the rendezvous may say more (killed; rank 0, the server): prefer it */
	if (p->dead_st == IBCOMM_ERR_PEER && liveness(s, &st) && st)
		return st;
	return ibc_err(s->comm, p->dead_st, "rank %d: peer rank %d %s during %s on channel %s (shared memory)",
		       s->comm->rank, peer, p->why, op, chan_name(chan));
}

/* A peer broke the ring's rules: it is unusable from now on. */
static ibcomm_status_t proto_err(struct shm *s, int peer, const char *what, unsigned long long a, unsigned long long b)
{
	char why[160];

	snprintf(why, sizeof(why), "broke the shared-memory protocol (%s: %llu, %llu)", what, a, b);
	mark_dead(&s->peers[peer], IBCOMM_ERR_TRANSPORT, why);
	return ibc_err(s->comm, IBCOMM_ERR_TRANSPORT, "rank %d: shared-memory protocol error from peer rank %d: %s: %llu, %llu",
		       s->comm->rank, peer, what, a, b);
}

/*
 * Waits until our bell moves (something arrived, a credit came back, interrupt()), a peer's
 * process is found gone, or dl passes (IBCOMM_ERR_TIMEOUT, message left to the caller).
 */
static ibcomm_status_t block(struct shm *s, ibc_deadline_t dl)
{
	struct ibc_shm_live *l = s->mine.live;
	uint64_t spin_until = 0;
	ibcomm_status_t st;
	unsigned cur;

	for (unsigned i = 0;; i++) {
		cur = atomic_load_explicit(&l->bell, memory_order_acquire);
		if (cur != s->seen)
			goto moved;
		if (aborted(s))
			return abort_err(s, "wait");
		if (!(i & 15)) {
			uint64_t now = now_us();

			if (!spin_until)
				spin_until = now + IBC_SHM_SPIN_US;
			else if (now >= spin_until)
				break;
		}
		/* the first looks are cheap; then yield the core, which the peer may be waiting for
		 * when ranks outnumber cores */
		if (i < 256)
			ibc_cpu_relax();
		else
			sched_yield();
	}
	for (;;) {
		int left = ibc_deadline_left(dl);
		unsigned slice = IBC_SHM_SLICE_MS;

		if (left == 0)
			return IBCOMM_ERR_TIMEOUT;
		if (left > 0 && (unsigned)left < slice)
			slice = (unsigned)left;
		/* Dekker with ibc_shm_bell_ring(): we store sleeping then load bell, it adds to bell
		 * then loads sleeping (both sequentially consistent): one of us sees the other. */
		atomic_store(&l->sleeping, SHM_SLEEP_FUTEX);
		cur = atomic_load(&l->bell);
		if (cur == s->seen && !aborted(s)) {
			struct timespec ts = { .tv_sec = slice / 1000, .tv_nsec = (long)(slice % 1000) * 1000000L };

			futex(&l->bell, FUTEX_WAIT, cur, &ts);
		}
		atomic_store(&l->sleeping, 0);
		cur = atomic_load_explicit(&l->bell, memory_order_acquire);
		if (cur != s->seen)
			goto moved;
		if (aborted(s))
			return abort_err(s, "wait");
		if (liveness(s, &st))
			return st;
	}
moved:
	s->seen = cur;
	return IBCOMM_OK;
}

static ibcomm_status_t check_args(struct shm *s, const char *op, int peer, int chan)
{
	if (peer < 0 || peer >= s->comm->size || chan < 0 || chan >= IBC_NCHAN)
		return ibc_err(s->comm, IBCOMM_ERR_INVALID, "rank %d: bad shared-memory %s (peer %d, channel %d)",
			       s->comm->rank, op, peer, chan);
	if (s->peers[peer].ring < 0)
		return ibc_err(s->comm, IBCOMM_ERR_INVALID,
			       "rank %d: shared-memory %s to peer rank %d, which is on another host (this rank's shared memory serves its host only)",
			       s->comm->rank, op, peer);
	if (aborted(s))
		return abort_err(s, op);
	return notices_check(s, false);
}

static int shm_put(ibc_tp_t *tp, int peer, int chan, uint32_t tag, const void *buf, size_t len, bool wait,
		   ibc_deadline_t dl)
{
	struct shm *s = (struct shm *)tp;
	struct shm_peer *p;
	struct ibc_shm_ring *r;
	ibcomm_status_t st;
	bool counted = false;
	uint64_t h, used;
	unsigned slot;

	if (len > tp->max_chunk || (len && !buf))
		return ibc_err(s->comm, IBCOMM_ERR_INVALID,
			       "rank %d: bad shared-memory put (peer %d, %zu bytes; largest chunk %zu)", s->comm->rank, peer,
			       len, tp->max_chunk);
	st = check_args(s, "put", peer, chan);
	if (st)
		return st;
	p = &s->peers[peer];
	if (p->dead)
		return dead_err(s, peer, "put", chan);
	r = ibc_shm_ring(&p->seg, s->peers[s->comm->rank].ring, chan);
	h = p->head[chan];
	for (;;) {
		uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);

		used = h - tail;
		if (used > tp->nslots)
			return proto_err(s, peer, "released more than was written (head, tail)", h, tail);
		if (used < tp->nslots)
			break;
		if (!counted) {
			tp->cnt.credit_waits++;
			counted = true;
		}
		if (!wait)
			return IBC_AGAIN;
		st = block(s, dl);
		if (st == IBCOMM_ERR_TIMEOUT)
			return ibc_err(s->comm, st,
				       "rank %d: timed out waiting for peer rank %d to free a slot on channel %s (it has not consumed the %u chunks already sent)",
				       s->comm->rank, peer, chan_name(chan), tp->nslots);
		if (st)
			return st;
		if (aborted(s))
			return abort_err(s, "put");
		if (p->dead)
			return dead_err(s, peer, "put", chan);
	}
	slot = (unsigned)(h % tp->nslots);
	if (len)
		memcpy((uint8_t *)r + ibc_shm_slot_off(tp->nslots, (uint32_t)tp->max_chunk, slot), buf, len);
	r->desc[slot].len = (uint32_t)len;
	r->desc[slot].tag = tag;
	atomic_store_explicit(&r->head, h + 1, memory_order_release);
	p->head[chan] = h + 1;
	ibc_shm_bell_ring(p->seg.live, p->bell_fd);
	if (used + 1 > tp->cnt.max_inflight)
		tp->cnt.max_inflight = (uint32_t)(used + 1);
	tp->cnt.puts++;
	tp->cnt.bytes_put += len;
	return IBCOMM_OK;
}

static int shm_get(ibc_tp_t *tp, int peer, int chan, ibc_chunk_t *chunk, bool wait, ibc_deadline_t dl)
{
	struct shm *s = (struct shm *)tp;
	struct shm_peer *p;
	struct ibc_shm_ring *r;
	ibcomm_status_t st;
	uint64_t g, head;
	unsigned slot;
	uint32_t len;

	if (!chunk)
		return ibc_err(s->comm, IBCOMM_ERR_INVALID, "rank %d: shared-memory get without a chunk", s->comm->rank);
	st = check_args(s, "get", peer, chan);
	if (st)
		return st;
	p = &s->peers[peer];
	r = ibc_shm_ring(&s->mine, p->ring, chan);
	g = p->got[chan];
	for (;;) {
		head = atomic_load_explicit(&r->head, memory_order_acquire);
		if (head < g || head - p->rel[chan] > tp->nslots)
			return proto_err(s, peer, "wrote into slots not yet released (head, released)", head, p->rel[chan]);
		if (head > g)
			break;
		/* what a peer wrote before it went stays readable: look at the ring first */
		if (p->dead)
			return dead_err(s, peer, "get", chan);
		if (!wait)
			return IBC_AGAIN;
		st = block(s, dl);
		if (st == IBCOMM_ERR_TIMEOUT)
			return ibc_err(s->comm, st, "rank %d: timed out waiting for data from peer rank %d on channel %s",
				       s->comm->rank, peer, chan_name(chan));
		if (st)
			return st;
		if (aborted(s))
			return abort_err(s, "get");
	}
	slot = (unsigned)(g % tp->nslots);
	len = r->desc[slot].len;
	if (len > tp->max_chunk)
		return proto_err(s, peer, "chunk longer than a slot (length, slot size)", len, tp->max_chunk);
	chunk->data = (uint8_t *)r + ibc_shm_slot_off(tp->nslots, (uint32_t)tp->max_chunk, slot);
	chunk->len = len;
	chunk->tag = r->desc[slot].tag;
	chunk->peer = peer;
	chunk->chan = chan;
	chunk->slot = slot;
	p->got[chan] = g + 1;
	tp->cnt.gets++;
	tp->cnt.bytes_got += len;
	return IBCOMM_OK;
}

static ibcomm_status_t shm_release(ibc_tp_t *tp, ibc_chunk_t *c)
{
	struct shm *s = (struct shm *)tp;
	struct shm_peer *p;
	uint64_t rel;

	if (!c || c->peer < 0 || c->peer >= s->comm->size || c->chan < 0 || c->chan >= IBC_NCHAN ||
	    s->peers[c->peer].ring < 0)
		return ibc_err(s->comm, IBCOMM_ERR_INVALID, "rank %d: shared-memory release of a bad chunk", s->comm->rank);
	p = &s->peers[c->peer];
	rel = p->rel[c->chan];
	if (rel == p->got[c->chan] || c->slot != rel % tp->nslots)
		return ibc_err(s->comm, IBCOMM_ERR_INVALID,
			       "rank %d: shared-memory release of slot %u from peer rank %d on channel %s out of order (oldest is %u)",
			       s->comm->rank, c->slot, c->peer, chan_name(c->chan), (unsigned)(rel % tp->nslots));
	p->rel[c->chan] = rel + 1;
	atomic_store_explicit(&ibc_shm_ring(&s->mine, p->ring, c->chan)->tail, rel + 1, memory_order_release);
	ibc_shm_bell_ring(p->seg.live, p->bell_fd);
	return IBCOMM_OK;
}

static ibcomm_status_t shm_wait(ibc_tp_t *tp, ibc_deadline_t dl)
{
	struct shm *s = (struct shm *)tp;
	ibcomm_status_t st = notices_check(s, false);

	if (st)
		return st;
	st = block(s, dl);
	if (st == IBCOMM_ERR_TIMEOUT)
		return ibc_err(s->comm, st, "rank %d: timed out waiting for data or credits from any peer (shared memory)",
			       s->comm->rank);
	return st;
}

static void shm_interrupt(ibc_tp_t *tp)
{
	struct shm *s = (struct shm *)tp;

	if (s->mine.live)
		ibc_shm_bell_ring(s->mine.live, s->bell_fd);
}

/* ---- for the per-peer composite (transports/mix/mix.c; shm.h) ---- */

bool ibc_shm_moved(ibc_tp_t *tp)
{
	struct shm *s = (struct shm *)tp;
	unsigned cur = atomic_load_explicit(&s->mine.live->bell, memory_order_acquire);

	if (cur == s->seen)
		return false;
	s->seen = cur;
	return true;
}

int ibc_shm_sleep_begin(ibc_tp_t *tp)
{
	struct shm *s = (struct shm *)tp;
	struct ibc_shm_live *l = s->mine.live;

	/* Dekker with ibc_shm_bell_ring(), as in block(): we store sleeping then load bell, a
	 * ringer adds to bell then loads sleeping; one of us sees the other */
	atomic_store(&l->sleeping, SHM_SLEEP_FD);
	if (atomic_load(&l->bell) != s->seen || aborted(s))
		return -1;
	return s->bell_fd;
}

void ibc_shm_sleep_end(ibc_tp_t *tp)
{
	struct shm *s = (struct shm *)tp;
	char buf[64];

	atomic_store(&s->mine.live->sleeping, 0);
	/* a ringer that saw us asleep wrote a byte; one that writes after this read costs one
	 * more look at the bell, never a lost wake-up (the bell moved before its write) */
	while (read(s->bell_fd, buf, sizeof(buf)) > 0)
		;
}

ibcomm_status_t ibc_shm_liveness(ibc_tp_t *tp, bool *news)
{
	ibcomm_status_t st;

	*news = liveness((struct shm *)tp, &st);
	return st;
}

/* create and destroy: shm_create.c */
IBC_HIDDEN ibcomm_status_t ibc_shm_create(struct ibcomm *comm, ibc_tp_t **tpp);
IBC_HIDDEN void ibc_shm_destroy(ibc_tp_t *tp);

const struct ibc_tp_ops ibc_shm_ops = {
	.name = "shm",
	.create = ibc_shm_create,
	.destroy = ibc_shm_destroy,
	.put = shm_put,
	.get = shm_get,
	.release = shm_release,
	.wait = shm_wait,
	.interrupt = shm_interrupt,
};
