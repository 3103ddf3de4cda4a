/*
 * Socket helpers (sock.h): written once for the rendezvous, the TCP transport and the tools.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sock.h"

/* ---- "host:port" ---- */

int ibc_root_parse(const char *root, char *host, size_t hostlen, char *port, size_t portlen, const char **why)
{
	const char *h, *colon, *ps;
	size_t hn;
	char *end;
	long v;

	if (!root || !*root) {
		*why = "it is empty";
		return -1;
	}
	if (root[0] == '[') {
		const char *close = strchr(root, ']');

		if (!close) {
			*why = "'[' without ']' (write an IPv6 address as [addr]:port)";
			return -1;
		}
		h = root + 1;
		hn = (size_t)(close - h);
		if (!hn) {
			*why = "the address between [ and ] is empty";
			return -1;
		}
		for (size_t i = 0; i < hn; i++) {
			unsigned char ch = (unsigned char)h[i];
			if (!isxdigit(ch) && ch != ':' && ch != '.' && ch != '%' && !isalnum(ch)) {
				*why = "the IPv6 address holds a character that is not hex, ':', '.' or a %zone";
				return -1;
			}
		}
		if (!memchr(h, ':', hn)) {
			*why = "the address between [ and ] is not IPv6 (brackets are for IPv6 only)";
			return -1;
		}
		if (close[1] != ':') {
			*why = "no ':port' after ']'";
			return -1;
		}
		colon = close + 1;
	} else {
		colon = strrchr(root, ':');
		if (!colon) {
			*why = "no ':port' (expected host:port, ipv4:port or [ipv6]:port)";
			return -1;
		}
		if (memchr(root, ':', (size_t)(colon - root))) {
			*why = "more than one ':' (write an IPv6 address as [addr]:port)";
			return -1;
		}
		h = root;
		hn = (size_t)(colon - root);
		if (!hn) {
			*why = "the host before ':' is empty";
			return -1;
		}
		for (size_t i = 0; i < hn; i++) {
			unsigned char ch = (unsigned char)h[i];
			if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_') {
				*why = "the host holds a character that is not a letter, digit, '.', '-' or '_'";
				return -1;
			}
		}
	}
	ps = colon + 1;
	if (!isdigit((unsigned char)*ps)) {
		*why = "the port is not a number";
		return -1;
	}
	errno = 0;
	v = strtol(ps, &end, 10);
	if (*end) {
		*why = "the port is not a number";
		return -1;
	}
	if (errno || v < 1 || v > 65535) {
		*why = "the port is out of range (1..65535)";
		return -1;
	}
	if (hn + 1 > hostlen || strlen(ps) + 1 > portlen) {
		*why = "it is too long";
		return -1;
	}
	memcpy(host, h, hn);
	host[hn] = '\0';
	snprintf(port, portlen, "%ld", v);
	return 0;
}

/* ---- listening ---- */

ibcomm_status_t ibc_sock_listen(const char *host, const char *port, int *fds, int max, int *n, char *why,
				size_t whylen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE };
	struct addrinfo *res, *ai;
	bool has_v4 = false;
	int rc, last_errno = 0;

	*n = 0;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		snprintf(why, whylen, "cannot resolve '%s': %s", host, gai_strerror(rc));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	for (ai = res; ai; ai = ai->ai_next)
		if (ai->ai_family == AF_INET)
			has_v4 = true;
	for (ai = res; ai && *n < max; ai = ai->ai_next) {
		int one = 1, fd;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6 && has_v4) /* "::" and "0.0.0.0" both bound: keep them apart */
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, SOMAXCONN)) {
			last_errno = errno;
			close(fd);
			if (last_errno == EADDRINUSE) {
				while (*n)
					close(fds[--*n]);
				freeaddrinfo(res);
				snprintf(why, whylen, "port %s is taken (EADDRINUSE) by another process", port);
				return IBCOMM_ERR_RENDEZVOUS;
			}
			continue;
		}
		fds[(*n)++] = fd;
	}
	freeaddrinfo(res);
	if (!*n) {
		if (last_errno == EADDRNOTAVAIL)
			snprintf(why, whylen, "'%s' is not an address of this host", host);
		else
			snprintf(why, whylen, "%s", strerror(last_errno));
		return IBCOMM_ERR_RENDEZVOUS;
	}
	return IBCOMM_OK;
}

int ibc_sock_listen_addr(const struct sockaddr *sa, socklen_t sl)
{
	return ibc_sock_listen_opt(sa, sl, 0);
}

int ibc_sock_listen_opt(const struct sockaddr *sa, socklen_t sl, unsigned opts)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	if (opts & IBC_SOCK_REUSEADDR)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, sa, sl) || listen(fd, SOMAXCONN)) {
		int e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

bool ibc_sock_is_listening(int fd)
{
	int v = 0, type = 0;
	socklen_t sl = sizeof(v);

	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &sl) || !v)
		return false;
	sl = sizeof(type);
	return !getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &sl) && type == SOCK_STREAM;
}

/* ---- addresses ---- */

void ibc_sock_format(const struct sockaddr *sa, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN], scope[IF_NAMESIZE + 1] = "";

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		snprintf(buf, cap, "%s:%u", host, ntohs(a->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		if (a->sin6_scope_id && if_indextoname(a->sin6_scope_id, scope + 1))
			scope[0] = '%';
		snprintf(buf, cap, "[%s%s]:%u", host, scope, ntohs(a->sin6_port));
	} else {
		snprintf(buf, cap, "?");
	}
}

int ibc_sock_bound(int fd, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -1;
	ibc_sock_format((struct sockaddr *)&ss, buf, cap);
	return 0;
}

int ibc_sock_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &sl))
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	errno = EAFNOSUPPORT;
	return -1;
}

/* ---- connecting ---- */

/* Waits for fd's non-blocking connect until dl (and cap_ms when >= 0); returns 0 or an errno. */
static int connect_wait(int fd, ibc_deadline_t dl, int cap_ms, int wake_fd, const atomic_int *cancel)
{
	ibc_deadline_t until = cap_ms >= 0 ? ibc_deadline(cap_ms) : 0;

	if (dl && (!until || dl < until))
		until = dl;
	for (;;) {
		struct pollfd pfd[2] = { { .fd = fd, .events = POLLOUT }, { .fd = wake_fd, .events = POLLIN } };
		int rc, err = 0;
		socklen_t sl = sizeof(err);

		if (cancel && atomic_load(cancel))
			return ECANCELED;
		rc = poll(pfd, wake_fd >= 0 ? 2 : 1, ibc_deadline_left(until));
		if (rc < 0 && errno != EINTR)
			return errno;
		if (rc > 0 && wake_fd >= 0 && pfd[1].revents) {
			char buf[64];

			while (read(wake_fd, buf, sizeof(buf)) > 0)
				;
			continue;
		}
		if (rc > 0 && pfd[0].revents) {
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl))
				return errno;
			return err;
		}
		if (rc == 0 && ibc_deadline_left(until) == 0)
			return ETIMEDOUT;
	}
}

int ibc_sock_connect(const char *host, const char *port, bool numeric, ibc_deadline_t dl, int wake_fd,
		     const atomic_int *cancel, const char **why)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = numeric ? AI_NUMERICHOST | AI_NUMERICSERV : 0 };
	struct addrinfo *res, *ai;
	int rc, last = ECONNREFUSED;

	rc = getaddrinfo(host, port, &hints, &res);
	if (rc) {
		*why = gai_strerror(rc);
		errno = rc == EAI_AGAIN ? EAGAIN : EHOSTUNREACH;
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		int one = 1;

		if (fd < 0) {
			last = errno;
			continue;
		}
		rc = connect(fd, ai->ai_addr, ai->ai_addrlen) ? errno : 0;
		if (rc == EINPROGRESS || rc == EINTR)
			rc = connect_wait(fd, dl, ai->ai_next ? 5000 : -1, wake_fd, cancel);
		if (rc) {
			last = rc;
			close(fd);
			if (rc == ECANCELED || (dl && ibc_deadline_left(dl) == 0))
				break;
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		freeaddrinfo(res);
		return fd;
	}
	freeaddrinfo(res);
	errno = last;
	return -1;
}

void ibc_sock_keepalive(int fd)
{
	int one = 1, idle = IBC_KEEPALIVE_IDLE_S, intvl = IBC_KEEPALIVE_INTVL_S, cnt = IBC_KEEPALIVE_CNT;
	/* the same bound while data waits for its ACK (a notice sent to a rank on a lost host) */
	unsigned user_ms = (IBC_KEEPALIVE_IDLE_S + IBC_KEEPALIVE_CNT * IBC_KEEPALIVE_INTVL_S) * 1000;

	/* best effort: without it a lost host is found by the deadlines, as before */
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof(user_ms));
}

/* ---- finding a free port ---- */

int ibc_sock_free_port(const char *host, char *out, size_t outlen, char *why, size_t whylen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	int err = getaddrinfo(host, "0", &hints, &res);
	int port = -1;

	if (err) {
		snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(err));
		return -1;
	}
	for (ai = res; ai && port < 0; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

		if (fd < 0) {
			err = errno;
			continue;
		}
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			port = ibc_sock_port(fd);
		if (port < 0)
			err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	if (port < 0) {
		snprintf(why, whylen, "cannot bind a port on %s: %s", host, err ? strerror(err) : "no usable address");
		return -1;
	}
	if (strchr(host, ':') && host[0] != '[')
		snprintf(out, outlen, "[%s]:%d", host, port);
	else
		snprintf(out, outlen, "%s:%d", host, port);
	return 0;
}
