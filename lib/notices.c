/*
 * The bootstrap's failure notices as the transports see them: which members of a communicator
 * are known dead, and one text that names them all, so that an error after a host's loss lists
 * every rank lost with it, not the first one found.
 */
#include <poll.h>
#include <string.h>

#include "ibc.h"

/*
 * How long the first news of a death waits for more. The ranks of a lost host are announced
 * together: the rendezvous server, when one connection from a host times out, drops that
 * host's other silent connections at once (rdv_srv_client.c); the processes of one job killed
 * together close their connections within milliseconds. 200 ms covers those notices on a
 * loaded machine and keeps a single killed rank's error well within a second.
 */
#define NOTICE_GRACE_MS 200

void ibc_notices_init(struct ibc_notices *n)
{
	n->gen = 0;
	n->ndead = 0;
	n->first = -1;
	n->why[0] = '\0';
}

/* Reads the notices that come within NOTICE_GRACE_MS (an abort cuts it short). */
static unsigned grace(struct ibcomm *comm, unsigned gen)
{
	uint64_t until = ibc_now_ms() + NOTICE_GRACE_MS;

	for (;;) {
		struct pollfd pf = { .fd = ibc_boot_fd(comm->boot), .events = POLLIN };
		uint64_t now = ibc_now_ms();

		if (now >= until || pf.fd < 0 || atomic_load(&comm->aborted))
			return gen;
		if (poll(&pf, 1, (int)(until - now)) > 0)
			gen = ibc_boot_poll(comm->boot, true);
	}
}

static void append(char *buf, size_t cap, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + 1 >= cap)
		return;
	if (n > cap - 1 - *len)
		n = cap - 1 - *len;
	memcpy(buf + *len, s, n);
	*len += n;
	buf[*len] = '\0';
}

/*
 * n->why from the dead members: one's reason; or "ranks 2, 3 are gone: " and each reason, a
 * reason the same as the first but for its rank shortened to "rank 3 died (the same)".
 */
static void describe(struct ibcomm *comm, struct ibc_notices *n)
{
	char why[IBC_ERRLEN], tail0[IBC_ERRLEN] = "", num[16];
	size_t len = 0;
	int k = 0;

	n->why[0] = '\0';
	if (n->ndead > 1) {
		append(n->why, sizeof(n->why), &len, "ranks ");
		for (int r = ibc_dead_rank(comm, 0, why, sizeof(why)); r >= 0; r = ibc_dead_rank(comm, r + 1, why, sizeof(why))) {
			snprintf(num, sizeof(num), "%s%d", k++ ? ", " : "", r);
			append(n->why, sizeof(n->why), &len, num);
		}
		append(n->why, sizeof(n->why), &len, " are gone: ");
	}
	k = 0;
	for (int r = ibc_dead_rank(comm, 0, why, sizeof(why)); r >= 0; r = ibc_dead_rank(comm, r + 1, why, sizeof(why))) {
		char *tail = strchr(why, ':');

		if (k++)
			append(n->why, sizeof(n->why), &len, "; ");
		if (tail && tail0[0] && !strcmp(tail, tail0)) {
			*tail = '\0';
			append(n->why, sizeof(n->why), &len, why);
			append(n->why, sizeof(n->why), &len, " (the same)");
			continue;
		}
		append(n->why, sizeof(n->why), &len, why);
		if (k == 1 && tail)
			snprintf(tail0, sizeof(tail0), "%s", tail);
	}
}

int ibc_notices_poll(struct ibcomm *comm, struct ibc_notices *n, bool readable, void (*mark)(void *arg, int peer),
		     void *arg)
{
	char why[IBC_ERRLEN];
	unsigned gen;
	int ndead = 0;

	if (!comm->boot)
		return 0;
	gen = ibc_boot_poll(comm->boot, readable);
	if (gen == n->gen)
		return n->ndead;
	if (!n->ndead && ibc_dead_rank(comm, 0, why, sizeof(why)) >= 0)
		gen = grace(comm, gen); /* the first news: the rest of a lost host's ranks may follow */
	n->gen = gen;
	n->first = -1;
	for (int r = ibc_dead_rank(comm, 0, why, sizeof(why)); r >= 0; r = ibc_dead_rank(comm, r + 1, why, sizeof(why))) {
		if (n->first < 0)
			n->first = r;
		if (mark)
			mark(arg, r);
		ndead++;
	}
	n->ndead = ndead;
	if (ndead)
		describe(comm, n);
	return ndead;
}
