/*
 * Socket helpers shared by the rendezvous, the TCP transport and the tools: "host:port"
 * parsing, listening, connecting with a deadline, the bound address of a socket, the
 * interface to listen on, a free port. Every socket is non-blocking and close-on-exec unless
 * said otherwise. Errors come back as a short reason in why (the caller adds its context).
 */
#ifndef IBC_SOCK_H
#define IBC_SOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "ibc.h"

/*
 * Splits "host:port", "ipv4:port" or "[ipv6]:port". host gets the host without brackets,
 * port the decimal port (1..65535). Returns 0, or -1 with a reason in why.
 */
IBC_HIDDEN int ibc_root_parse(const char *root, char *host, size_t hostlen, char *port, size_t portlen,
			      const char **why);

/*
 * Listens (SOMAXCONN) on every address of host:port (at most max sockets; port "0": the
 * system picks one). Returns IBCOMM_OK with *n >= 1, or IBCOMM_ERR_RENDEZVOUS with why: the
 * host does not resolve, the port is taken (EADDRINUSE on any address), the host is not an
 * address of this machine.
 */
IBC_HIDDEN ibcomm_status_t ibc_sock_listen(const char *host, const char *port, int *fds, int max, int *n,
					   char *why, size_t whylen);
/* Listens on one address (its port may be 0). Returns the socket, or -1 with errno set. */
IBC_HIDDEN int ibc_sock_listen_addr(const struct sockaddr *sa, socklen_t sl);
/* The same with options: */
#define IBC_SOCK_REUSEADDR 1u /* SO_REUSEADDR: a fixed port that a previous run's connections still hold */
IBC_HIDDEN int ibc_sock_listen_opt(const struct sockaddr *sa, socklen_t sl, unsigned opts);
/* Whether fd is a listening stream socket (a socket handed over by a launcher). */
IBC_HIDDEN bool ibc_sock_is_listening(int fd);

/* "host:port" or "[v6%scope]:port" of a socket address. */
IBC_HIDDEN void ibc_sock_format(const struct sockaddr *sa, char *buf, size_t cap);
/* The address fd is bound to, as "host:port" (getsockname). Returns 0, or -1 with errno set. */
IBC_HIDDEN int ibc_sock_bound(int fd, char *buf, size_t cap);
/* The port fd is bound to, or -1 with errno set. */
IBC_HIDDEN int ibc_sock_port(int fd);

/*
 * Connects to one of the addresses of host:port (numeric only when `numeric`), each attempt
 * bounded by dl and, when more addresses follow, by 5 s (then the next one). A byte on wake_fd (>= 0) makes it check
 * *cancel (may be NULL): when set it returns -1 with errno ECANCELED. Returns the connected
 * socket (TCP_NODELAY set), or -1 with errno (ETIMEDOUT once dl has passed) and, for a name
 * that does not resolve, why set (errno EHOSTUNREACH).
 */
IBC_HIDDEN int ibc_sock_connect(const char *host, const char *port, bool numeric, ibc_deadline_t dl, int wake_fd,
				const atomic_int *cancel, const char **why);

/*
 * Turns on TCP keep-alive probes on fd so that a peer whose whole host is gone (powered off,
 * cut off: no FIN or RST ever comes) shows as a failed connection (ETIMEDOUT) after
 * IBC_KEEPALIVE_IDLE_S of silence plus IBC_KEEPALIVE_CNT unanswered probes IBC_KEEPALIVE_INTVL_S
 * apart: at most 7 s, well before an RC QP's retries run out (about 16 s), so the rendezvous
 * names the lost ranks before a survivor's own error makes it leave (and be named instead).
 * Probes are answered by the peer's kernel, so a busy peer process never fails them. Data that
 * waits for its ACK (a notice sent to a rank of a lost host) is bounded the same (TCP_USER_TIMEOUT).
 */
#define IBC_KEEPALIVE_IDLE_S 2
#define IBC_KEEPALIVE_INTVL_S 1
#define IBC_KEEPALIVE_CNT 5
IBC_HIDDEN void ibc_sock_keepalive(int fd);

/*
 * A free port on host: binds host:0, reads the port, releases it (the launcher's way; the
 * caller retries on EADDRINUSE). Writes "host:port" ("[v6]:port") to out. Returns 0, or -1
 * with why.
 */
IBC_HIDDEN int ibc_sock_free_port(const char *host, char *out, size_t outlen, char *why, size_t whylen);

#endif
