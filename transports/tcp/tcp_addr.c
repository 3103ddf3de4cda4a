/* The TCP transport's choice of listening address (see tcp_addr.h). */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rendezvous.h"
#include "tcp_addr.h"

static bool root_is_loopback(const char *root, bool *v6)
{
	char host[256], port[16];
	const char *why;

	*v6 = false;
	if (!root || ibc_root_parse(root, host, sizeof(host), port, sizeof(port), &why))
		return false;
	if (!strcmp(host, "::1")) {
		*v6 = true;
		return true;
	}
	return !strncmp(host, "127.", 4) || !strcasecmp(host, "localhost");
}

static void loopback(ibc_tcp_addr_choice_t *c, bool v6)
{
	snprintf(c->ifname, sizeof(c->ifname), "lo");
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&c->ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		c->sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&c->ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		c->sl = sizeof(*a);
	}
}

ibcomm_status_t ibc_tcp_choose_addr(const char *ifname, const char *root, const struct ifaddrs *ifa,
				    ibc_tcp_addr_choice_t *c, char *why, size_t whylen)
{
	const struct ifaddrs *i, *v4 = NULL, *v6 = NULL;
	bool lo6, named = false;
	char names[256] = "";

	memset(c, 0, sizeof(*c));
	if (ifname && !ifname[0])
		ifname = NULL;
	if (!ifname && root_is_loopback(root, &lo6)) {
		loopback(c, lo6);
		return IBCOMM_OK;
	}
	for (i = ifa; i; i = i->ifa_next) {
		if (ifname) {
			if (strcmp(i->ifa_name, ifname)) {
				if (!strstr(names, i->ifa_name) && strlen(names) + strlen(i->ifa_name) + 2 < sizeof(names)) {
					strcat(names, " ");
					strcat(names, i->ifa_name);
				}
				continue;
			}
			named = true;
		} else if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) {
			continue;
		}
		if (!i->ifa_addr)
			continue;
		if (i->ifa_addr->sa_family == AF_INET && !v4)
			v4 = i;
		else if (i->ifa_addr->sa_family == AF_INET6 && !v6 && ifname)
			v6 = i;
	}
	if (!v4 && !v6) {
		if (ifname && !named) {
			snprintf(why, whylen, "IBCOMM_IFNAME=%s: no such interface (have:%s)", ifname, names);
			return IBCOMM_ERR_INVALID;
		}
		if (ifname) {
			snprintf(why, whylen, "IBCOMM_IFNAME=%s: the interface has no IPv4 or IPv6 address", ifname);
			return IBCOMM_ERR_INVALID;
		}
		loopback(c, false);
		c->fallback = true;
		return IBCOMM_OK;
	}
	i = v4 ? v4 : v6;
	snprintf(c->ifname, sizeof(c->ifname), "%s", i->ifa_name);
	if (i->ifa_addr->sa_family == AF_INET) {
		memcpy(&c->ss, i->ifa_addr, sizeof(struct sockaddr_in));
		c->sl = sizeof(struct sockaddr_in);
	} else {
		memcpy(&c->ss, i->ifa_addr, sizeof(struct sockaddr_in6));
		c->sl = sizeof(struct sockaddr_in6);
	}
	return IBCOMM_OK;
}
