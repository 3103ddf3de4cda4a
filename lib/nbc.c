/*
 * Nonblocking calls: requests, the queues of a communicator, and its progress thread.
 *
 * The transports are single-threaded (one caller at a time), so a communicator's progress
 * thread, started by its first nonblocking call, is the one thread that touches the transport
 * while requests are pending; a blocking call made then is queued like a request and waited
 * for (ibc_nbc_busy), and one made while nothing is pending runs in the caller's thread as
 * before, the progress thread being asleep on its condition variable.
 *
 * Collectives run one after the other in issue order, each by the blocking implementation
 * (coll.c), so every rank runs them in the same order. Sends and receives are tried without
 * blocking (p2p.c's resumable send and receive try) before and after each collective, and
 * while no collective is queued the thread sleeps in the transport's wait() until a chunk or
 * a credit arrives, the caller queues something (interrupt()), or the nearest p2p deadline.
 * So a receive whose message never comes holds up nothing, and sends and receives progress
 * between collectives. What the thread cannot do is move p2p traffic while a collective
 * runs: a send or receive waits for the collective in progress to end.
 *
 * A failed request keeps the detail its call wrote into comm's last error; test and wait
 * give it back (ibc_err_set), in the caller's thread too.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "ibc.h"

enum req_kind { REQ_COLL, REQ_SEND, REQ_RECV, REQ_FN };

struct ibcomm_request {
	struct ibc_nbc *nbc;
	struct ibcomm_request *qprev, *qnext; /* in its queue while pending */
	struct ibcomm_request *aprev, *anext; /* every request not freed, for ibcomm_destroy */
	enum req_kind kind;
	bool blocking; /* a blocking call queued behind requests (a receive from itself needs the send first) */
	enum ibc_coll coll;
	ibcomm_status_t (*fn)(struct ibcomm *comm, void *arg); /* REQ_FN: run in the collectives' order */
	void *arg;
	const void *sendbuf;
	void *recvbuf; /* p2p: the buffer (sends too) */
	size_t count;
	ibcomm_dtype_t dtype;
	ibcomm_op_t op;
	int root, peer;
	uint32_t tag;
	ibc_deadline_t dl; /* p2p: from the issue */
	bool started;      /* send: header sent */
	size_t off;        /* send: payload bytes sent */
	bool done;
	ibcomm_status_t st;
	char err[IBC_ERRLEN];
};

struct req_queue {
	struct ibcomm_request *head, *tail;
};

struct ibc_nbc {
	struct ibcomm *comm;
	pthread_t thread;
	pthread_mutex_t lock; /* everything below, and the requests' queue links and outcomes */
	pthread_cond_t wake;  /* the thread: a request queued, or stop */
	pthread_cond_t done;  /* waiters: a request completed */
	struct req_queue coll, p2p;
	struct ibcomm_request *all;
	unsigned npending;
	bool stop;
	bool in_tp_wait; /* the thread sleeps in the transport: interrupt() wakes it */
};

static void q_append(struct req_queue *q, struct ibcomm_request *r)
{
	r->qnext = NULL;
	r->qprev = q->tail;
	if (q->tail)
		q->tail->qnext = r;
	else
		q->head = r;
	q->tail = r;
}

static void q_unlink(struct req_queue *q, struct ibcomm_request *r)
{
	if (r->qprev)
		r->qprev->qnext = r->qnext;
	else
		q->head = r->qnext;
	if (r->qnext)
		r->qnext->qprev = r->qprev;
	else
		q->tail = r->qprev;
	r->qprev = r->qnext = NULL;
}

static struct req_queue *queue_of(struct ibc_nbc *n, const struct ibcomm_request *r)
{
	return r->kind == REQ_COLL || r->kind == REQ_FN ? &n->coll : &n->p2p;
}

/* Records r's outcome and wakes its waiters. Lock held. */
static void complete(struct ibc_nbc *n, struct ibcomm_request *r, ibcomm_status_t st)
{
	q_unlink(queue_of(n, r), r);
	n->npending--;
	if (st && r->kind == REQ_RECV)
		ibc_p2p_forget(n->comm, r);
	r->st = st;
	if (st)
		memcpy(r->err, n->comm->err, sizeof(r->err));
	r->done = true;
	pthread_cond_broadcast(&n->done);
}

/*
 * Whether an earlier pending request must go first: a send to the same peer (the chunks of a
 * message are consecutive on the channel), a receive from the same peer with the same tag
 * (matching in order). Lock held.
 */
static bool held_back(struct ibc_nbc *n, const struct ibcomm_request *r)
{
	for (const struct ibcomm_request *e = n->p2p.head; e && e != r; e = e->qnext)
		if (e->kind == r->kind && e->peer == r->peer && (r->kind == REQ_SEND || e->tag == r->tag))
			return true;
	return false;
}

static int p2p_try(struct ibcomm *comm, struct ibcomm_request *r)
{
	if (r->kind == REQ_SEND)
		return ibc_p2p_send_step(comm, r->recvbuf, r->count, r->dtype, r->peer, r->tag, r->dl, &r->started,
					 &r->off, false);
	return ibc_p2p_recv_try(comm, r->recvbuf, r->count, r->dtype, r->peer, r->tag, r->dl,
				r->blocking && r->peer == comm->rank, r);
}

/* Tries every pending send and receive once, in issue order; whether any completed. */
static bool p2p_pass(struct ibc_nbc *n)
{
	struct ibcomm_request *r, *next;
	bool progressed = false, skip;
	int rc;

	pthread_mutex_lock(&n->lock);
	r = n->p2p.head;
	for (; r; r = next) {
		skip = held_back(n, r);
		pthread_mutex_unlock(&n->lock);
		rc = skip ? IBC_AGAIN : p2p_try(n->comm, r);
		pthread_mutex_lock(&n->lock);
		next = r->qnext;
		if (rc != IBC_AGAIN) {
			complete(n, r, rc);
			progressed = true;
		}
	}
	pthread_mutex_unlock(&n->lock);
	return progressed;
}

/* The nearest deadline of the pending sends and receives; 0: none. Lock held. */
static ibc_deadline_t p2p_deadline(struct ibc_nbc *n)
{
	ibc_deadline_t dl = 0;

	for (struct ibcomm_request *r = n->p2p.head; r; r = r->qnext)
		if (r->dl && (!dl || r->dl < dl))
			dl = r->dl;
	return dl;
}

/* The transport failed to wait (a peer died, the communicator was aborted) and no try moved: the p2p requests fail with it. */
static void p2p_fail_all(struct ibc_nbc *n, ibcomm_status_t st)
{
	pthread_mutex_lock(&n->lock);
	while (n->p2p.head)
		complete(n, n->p2p.head, st);
	pthread_mutex_unlock(&n->lock);
}

static void *progress_thread(void *arg)
{
	struct ibc_nbc *n = arg;
	struct ibcomm *comm = n->comm;
	struct ibcomm_request *c;
	ibcomm_status_t st;
	ibc_deadline_t dl;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		if (!n->npending) {
			if (n->stop)
				break;
			pthread_cond_wait(&n->wake, &n->lock);
			continue;
		}
		pthread_mutex_unlock(&n->lock);
		bool progressed = p2p_pass(n);

		pthread_mutex_lock(&n->lock);
		c = n->coll.head;
		if (c) {
			pthread_mutex_unlock(&n->lock);
			st = c->kind == REQ_FN ? c->fn(comm, c->arg) :
						 ibc_coll_run(comm, c->coll, c->sendbuf, c->recvbuf, c->count, c->dtype,
							      c->op, c->root);
			pthread_mutex_lock(&n->lock);
			complete(n, c, st);
			continue;
		}
		if (!n->p2p.head || progressed)
			continue;
		/* sleep until a chunk or a credit comes, something is queued, or a deadline passes */
		n->in_tp_wait = true;
		dl = p2p_deadline(n);
		pthread_mutex_unlock(&n->lock);
		st = ibc_wait(comm->tp, dl);
		pthread_mutex_lock(&n->lock);
		n->in_tp_wait = false;
		if (st && st != IBCOMM_ERR_TIMEOUT) {
			pthread_mutex_unlock(&n->lock);
			if (!p2p_pass(n))
				p2p_fail_all(n, st);
			pthread_mutex_lock(&n->lock);
		}
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

/* comm's request state, with its progress thread started on first use. */
static ibcomm_status_t nbc_get(struct ibcomm *comm, const char *fn, struct ibc_nbc **np)
{
	struct ibc_nbc *n = comm->nbc;
	sigset_t all, old;
	int rc;

	if (n) {
		*np = n;
		return IBCOMM_OK;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return ibc_err(comm, IBCOMM_ERR_NOMEM, "%s on rank %d: out of memory", fn, comm->rank);
	n->comm = comm;
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->wake, NULL);
	pthread_cond_init(&n->done, NULL);
	/* the application's signals go to its own threads */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&n->thread, NULL, progress_thread, n);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		pthread_cond_destroy(&n->done);
		pthread_cond_destroy(&n->wake);
		pthread_mutex_destroy(&n->lock);
		free(n);
		return ibc_err(comm, IBCOMM_ERR_SYSTEM, "%s on rank %d: cannot start the progress thread: %s", fn,
			       comm->rank, strerror(rc));
	}
	comm->nbc = *np = n;
	return IBCOMM_OK;
}

bool ibc_nbc_busy(struct ibcomm *comm)
{
	struct ibc_nbc *n = comm->nbc;
	bool busy;

	if (!n || pthread_equal(pthread_self(), n->thread))
		return false;
	pthread_mutex_lock(&n->lock);
	busy = n->npending > 0;
	pthread_mutex_unlock(&n->lock);
	return busy;
}

static void req_unlink_free(struct ibc_nbc *n, struct ibcomm_request *r)
{
	if (r->aprev)
		r->aprev->anext = r->anext;
	else
		n->all = r->anext;
	if (r->anext)
		r->anext->aprev = r->aprev;
	free(r);
}

/* Waits for r, gives its status and detail back, frees it. */
static ibcomm_status_t req_wait(struct ibcomm_request *r)
{
	struct ibc_nbc *n = r->nbc;
	ibcomm_status_t st;

	pthread_mutex_lock(&n->lock);
	while (!r->done)
		pthread_cond_wait(&n->done, &n->lock);
	st = r->st;
	if (st)
		ibc_err_set(n->comm, r->err);
	req_unlink_free(n, r);
	pthread_mutex_unlock(&n->lock);
	return st;
}

/* Queues r (checked already); a blocking call waits for it, an i-call hands it out. */
static ibcomm_status_t submit(struct ibcomm *comm, struct ibcomm_request *r, const char *fn, ibcomm_request_t **req)
{
	struct ibc_nbc *n;
	ibcomm_status_t st = nbc_get(comm, fn, &n);

	if (st) {
		free(r);
		return st;
	}
	r->nbc = n;
	r->blocking = !req;
	pthread_mutex_lock(&n->lock);
	q_append(queue_of(n, r), r);
	r->anext = n->all;
	if (n->all)
		n->all->aprev = r;
	n->all = r;
	n->npending++;
	if (n->in_tp_wait)
		comm->tp->ops->interrupt(comm->tp);
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
	if (!req)
		return req_wait(r);
	*req = r;
	return IBCOMM_OK;
}

static struct ibcomm_request *req_new(struct ibcomm *comm, const char *fn)
{
	struct ibcomm_request *r = calloc(1, sizeof(*r));

	if (!r)
		ibc_err(comm, IBCOMM_ERR_NOMEM, "%s on rank %d: no memory for a request", fn, comm->rank);
	return r;
}

ibcomm_status_t ibc_nbc_coll(struct ibcomm *comm, const char *fn, enum ibc_coll coll, const void *sendbuf,
			     void *recvbuf, size_t count, ibcomm_dtype_t dtype, ibcomm_op_t op, int root,
			     ibcomm_request_t **req)
{
	struct ibcomm_request *r;
	ibcomm_status_t st;

	if ((st = ibc_coll_check(comm, fn, coll, sendbuf, recvbuf, count, dtype, op, root)))
		return st;
	if (!fn)
		fn = "a blocking collective";
	if (!(r = req_new(comm, fn)))
		return IBCOMM_ERR_NOMEM;
	r->kind = REQ_COLL;
	r->coll = coll;
	r->sendbuf = sendbuf;
	r->recvbuf = recvbuf;
	r->count = count;
	r->dtype = dtype;
	r->op = op;
	r->root = root;
	return submit(comm, r, fn, req);
}

ibcomm_status_t ibc_nbc_p2p(struct ibcomm *comm, bool send, void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
			    uint32_t tag, ibcomm_request_t **req)
{
	const char *fn = send ? (req ? "ibcomm_isend" : "ibcomm_send") : req ? "ibcomm_irecv" : "ibcomm_recv";
	struct ibcomm_request *r;
	size_t bytes;
	ibcomm_status_t st;

	if ((st = ibc_p2p_check(comm, fn, buf, count, dtype, peer, &bytes)))
		return st;
	if (!(r = req_new(comm, fn)))
		return IBCOMM_ERR_NOMEM;
	r->kind = send ? REQ_SEND : REQ_RECV;
	r->recvbuf = buf;
	r->count = count;
	r->dtype = dtype;
	r->peer = peer;
	r->tag = tag;
	r->dl = ibc_call_deadline(comm);
	return submit(comm, r, fn, req);
}

ibcomm_status_t ibc_nbc_call(struct ibcomm *comm, const char *what,
			     ibcomm_status_t (*fn)(struct ibcomm *comm, void *arg), void *arg)
{
	struct ibcomm_request *r;

	if (!ibc_nbc_busy(comm))
		return fn(comm, arg);
	if (!(r = req_new(comm, what)))
		return IBCOMM_ERR_NOMEM;
	r->kind = REQ_FN;
	r->fn = fn;
	r->arg = arg;
	return submit(comm, r, what, NULL);
}

void ibc_nbc_destroy(struct ibcomm *comm)
{
	struct ibc_nbc *n = comm->nbc;
	bool pending;

	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	pending = n->npending > 0;
	pthread_mutex_unlock(&n->lock);
	if (pending) /* they fail with IBCOMM_ERR_ABORTED, the one in progress too */
		ibcomm_abort(comm);
	pthread_mutex_lock(&n->lock);
	n->stop = true;
	pthread_cond_signal(&n->wake);
	pthread_mutex_unlock(&n->lock);
	pthread_join(n->thread, NULL);
	while (n->all)
		req_unlink_free(n, n->all);
	pthread_cond_destroy(&n->done);
	pthread_cond_destroy(&n->wake);
	pthread_mutex_destroy(&n->lock);
	free(n);
	comm->nbc = NULL;
}

/* ---- the public calls ---- */

static ibcomm_status_t check_req(struct ibcomm *comm, const char *fn, ibcomm_request_t **req)
{
	if (!comm)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "%s: comm is NULL", fn);
	if (!req)
		return ibc_err(comm, IBCOMM_ERR_INVALID, "%s on rank %d: req (the output argument) is NULL", fn,
			       comm->rank);
	return IBCOMM_OK;
}

ibcomm_status_t ibcomm_iallreduce(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t count,
				  ibcomm_dtype_t dtype, ibcomm_op_t op, ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_iallreduce", req);

	return st ? st : ibc_nbc_coll(comm, "ibcomm_iallreduce", IBC_COLL_ALLREDUCE, sendbuf, recvbuf, count, dtype, op, -1, req);
}

ibcomm_status_t ibcomm_ibroadcast(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int root,
				  ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_ibroadcast", req);

	return st ? st : ibc_nbc_coll(comm, "ibcomm_ibroadcast", IBC_COLL_BROADCAST, NULL, buf, count, dtype, IBCOMM_SUM, root, req);
}

ibcomm_status_t ibcomm_iallgather(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t sendcount,
				  ibcomm_dtype_t dtype, ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_iallgather", req);

	return st ? st : ibc_nbc_coll(comm, "ibcomm_iallgather", IBC_COLL_ALLGATHER, sendbuf, recvbuf, sendcount, dtype, IBCOMM_SUM, -1, req);
}

ibcomm_status_t ibcomm_ireduce_scatter(ibcomm_t *comm, const void *sendbuf, void *recvbuf, size_t recvcount,
				       ibcomm_dtype_t dtype, ibcomm_op_t op, ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_ireduce_scatter", req);

	return st ? st : ibc_nbc_coll(comm, "ibcomm_ireduce_scatter", IBC_COLL_REDUCE_SCATTER, sendbuf, recvbuf, recvcount, dtype, op, -1, req);
}

ibcomm_status_t ibcomm_isend(ibcomm_t *comm, const void *buf, size_t count, ibcomm_dtype_t dtype, int peer,
			     uint32_t tag, ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_isend", req);

	return st ? st : ibc_nbc_p2p(comm, true, (void *)buf, count, dtype, peer, tag, req);
}

ibcomm_status_t ibcomm_irecv(ibcomm_t *comm, void *buf, size_t count, ibcomm_dtype_t dtype, int peer, uint32_t tag,
			     ibcomm_request_t **req)
{
	ibcomm_status_t st = check_req(comm, "ibcomm_irecv", req);

	return st ? st : ibc_nbc_p2p(comm, false, buf, count, dtype, peer, tag, req);
}

ibcomm_status_t ibcomm_test(ibcomm_request_t *req, int *done)
{
	struct ibc_nbc *n;
	ibcomm_status_t st = IBCOMM_OK;
	bool d;

	if (!req || !done)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_test: %s is NULL", req ? "done" : "req");
	n = req->nbc;
	pthread_mutex_lock(&n->lock);
	d = req->done;
	if (d && (st = req->st))
		ibc_err_set(n->comm, req->err);
	pthread_mutex_unlock(&n->lock);
	*done = d;
	return st;
}

ibcomm_status_t ibcomm_wait(ibcomm_request_t *req)
{
	if (!req)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_wait: req is NULL");
	return req_wait(req);
}

ibcomm_status_t ibcomm_request_free(ibcomm_request_t *req)
{
	struct ibc_nbc *n;

	if (!req)
		return ibc_err_thread(IBCOMM_ERR_INVALID, "ibcomm_request_free: req is NULL");
	n = req->nbc;
	pthread_mutex_lock(&n->lock);
	if (!req->done) {
		pthread_mutex_unlock(&n->lock);
		return ibc_err(n->comm, IBCOMM_ERR_INVALID, "ibcomm_request_free on rank %d: the request is still in "
			       "flight: wait for it (ibcomm_wait) or test it until done", n->comm->rank);
	}
	req_unlink_free(n, req);
	pthread_mutex_unlock(&n->lock);
	return IBCOMM_OK;
}
