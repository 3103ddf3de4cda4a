/*
 * Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/) with the
 * library's own encoders: a few valid messages of every kind and a few invalid ones.
 * Run by `tests/fuzz/run-fuzz --regen-corpus`; the output is committed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "id.h"
#include "rdma_proto.h"
#include "rendezvous.h"
#include "tcp.h"

static const char *g_dir;
static int g_failed;

static void put(const char *target, const char *name, const void *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", g_dir, target);
	if (mkdir(path, 0755) && errno != EEXIST)
		g_failed = 1;
	snprintf(path, sizeof(path), "%s/%s/%s", g_dir, target, name);
	f = fopen(path, "wb");
	if (!f || (len && fwrite(buf, 1, len, f) != len) || fclose(f)) {
		fprintf(stderr, "gen_corpus: cannot write %s\n", path);
		g_failed = 1;
	}
}

static void rdv(const char *name, const struct ibc_rdv_msg *m)
{
	static uint8_t buf[IBC_RDV_MAX_FRAME];
	size_t n = ibc_rdv_encode(m, buf, sizeof(buf));

	if (!n) {
		fprintf(stderr, "gen_corpus: cannot encode %s\n", name);
		g_failed = 1;
		return;
	}
	put("fuzz_rdv", name, buf, n);
}

static void gen_rdv(void)
{
	static const uint8_t nonce[IBC_RDV_NONCE_LEN] = { 1, 2, 3, 4 }, proof[IBC_RDV_PROOF_LEN] = { 5, 6, 7, 8 };
	uint8_t buf[64];

	rdv("join", &(struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .req = 1, .rank = 3, .size = 8 });
	rdv("joined", &(struct ibc_rdv_msg){ .type = IBC_RDV_JOINED, .req = 1, .size = 8 });
	rdv("put", &(struct ibc_rdv_msg){ .type = IBC_RDV_PUT, .req = 2, .key = "0/tcp/3", .keylen = 7,
					  .val = "10.0.0.3:41234", .vallen = 14 });
	rdv("put_ok", &(struct ibc_rdv_msg){ .type = IBC_RDV_PUT_OK, .req = 2 });
	rdv("get", &(struct ibc_rdv_msg){ .type = IBC_RDV_GET, .req = 3, .key = "0/tcp/1", .keylen = 7 });
	rdv("value", &(struct ibc_rdv_msg){ .type = IBC_RDV_VALUE, .req = 3, .val = "10.0.0.1:5000", .vallen = 13 });
	rdv("error", &(struct ibc_rdv_msg){ .type = IBC_RDV_ERROR, .req = 1, .text = "rank 1 has already joined",
					    .textlen = 25 });
	rdv("leave", &(struct ibc_rdv_msg){ .type = IBC_RDV_LEAVE });
	rdv("dead", &(struct ibc_rdv_msg){ .type = IBC_RDV_DEAD, .rank = 2 });
	rdv("bye", &(struct ibc_rdv_msg){ .type = IBC_RDV_BYE });
	rdv("drop", &(struct ibc_rdv_msg){ .type = IBC_RDV_DROP, .key = "0.3.1/", .keylen = 6, .size = 4 });
	rdv("auth_hello", &(struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_HELLO, .req = 1, .rank = 2, .size = 4,
						 .nonce = nonce });
	rdv("auth_challenge", &(struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_CHALLENGE, .req = 1, .nonce = nonce,
						     .proof = proof });
	rdv("auth_proof", &(struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_PROOF, .req = 2, .proof = proof });
	rdv("auth_ok", &(struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_OK, .req = 2 });
	rdv("auth_failed", &(struct ibc_rdv_msg){ .type = IBC_RDV_AUTH_FAILED, .req = 2,
						  .text = "the job key does not match", .textlen = 27 });
	/* invalid: garbage, a header announcing a huge body, a truncated JOIN */
	put("fuzz_rdv", "bad_http", "GET / HTTP/1.1\r\n\r\n", 18);
	memset(buf, 0, sizeof(buf));
	memcpy(buf, "IBCR\x01\x03\x00\x00\x01\x00\x00\x00\xff\xff\xff\x7f", 16);
	put("fuzz_rdv", "bad_huge", buf, 16);
	ibc_rdv_encode(&(struct ibc_rdv_msg){ .type = IBC_RDV_JOIN, .req = 1, .rank = 0, .size = 2 }, buf, sizeof(buf));
	put("fuzz_rdv", "bad_short_join", buf, IBC_RDV_HDR_LEN + 4);
}

static void gen_tcp(void)
{
	static const uint8_t nonce[IBC_TCP_NONCE_LEN] = { 1, 2, 3 }, proof[IBC_TCP_PROOF_LEN] = { 4, 5, 6 };
	struct ibc_tcp_hello h = { .rank = 1, .size = 4, .max_chunk = IBC_TCP_DEFAULT_CHUNK,
				   .nslots = IBC_TCP_DEFAULT_SLOTS, .id = "0.1.0", .idlen = 5 };
	struct ibc_tcp_hdr d = { .version = IBC_TCP_VERSION, .type = IBC_TCP_DATA, .chan = 1, .tag = 7, .len = 5,
				 .credits = 2 };
	uint8_t buf[256];
	size_t n;

	n = ibc_tcp_hello_encode(&h, buf, sizeof(buf));
	put("fuzz_tcp_frame", "hello", buf, n);
	h.nonce = nonce;
	n = ibc_tcp_hello_encode(&h, buf, sizeof(buf));
	put("fuzz_tcp_frame", "hello_key", buf, n);
	n = ibc_tcp_auth_encode(IBC_TCP_CHALLENGE, &(struct ibc_tcp_auth){ .nonce = nonce, .proof = proof }, buf,
				sizeof(buf));
	put("fuzz_tcp_frame", "challenge", buf, n);
	n = ibc_tcp_auth_encode(IBC_TCP_PROOF, &(struct ibc_tcp_auth){ .proof = proof }, buf, sizeof(buf));
	put("fuzz_tcp_frame", "proof", buf, n);
	n = ibc_tcp_auth_encode(IBC_TCP_AUTH_FAILED,
				&(struct ibc_tcp_auth){ .text = "the job key does not match", .textlen = 26 }, buf,
				sizeof(buf));
	put("fuzz_tcp_frame", "auth_failed", buf, n);
	ibc_tcp_hdr_encode(buf, &d);
	memcpy(buf + IBC_TCP_HDR_LEN, "hello", 5);
	put("fuzz_tcp_frame", "data", buf, IBC_TCP_HDR_LEN + 5);
	d = (struct ibc_tcp_hdr){ .version = IBC_TCP_VERSION, .type = IBC_TCP_CREDIT, .credits = 3 };
	ibc_tcp_hdr_encode(buf, &d);
	put("fuzz_tcp_frame", "credit", buf, IBC_TCP_HDR_LEN);
	/* invalid */
	put("fuzz_tcp_frame", "bad_http", "GET / HTTP/1.1\r\n\r\n", 18);
	d = (struct ibc_tcp_hdr){ .version = IBC_TCP_VERSION, .type = IBC_TCP_HELLO, .len = 100000 };
	ibc_tcp_hdr_encode(buf, &d);
	put("fuzz_tcp_frame", "bad_hello_len", buf, IBC_TCP_HDR_LEN);
	h.nonce = NULL;
	n = ibc_tcp_hello_encode(&h, buf, sizeof(buf));
	put("fuzz_tcp_frame", "bad_hello_cut", buf, n - 3);
}

static void gen_qpinfo(void)
{
	ibc_rdma_info_t in = { .src = 0, .dst = 1, .link_layer = IBC_RDMA_LL_ETH, .mtu = 3, .lid = 0, .qpn = 0x1234,
			       .psn = 0x42, .gid = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1 },
			       .nslots = 4, .stride = 65600, .max_chunk = 65536, .ring_addr = 0x7f0000001000ull,
			       .ring_rkey = 0x99, .credit_addr = 0x7f0000002000ull, .credit_rkey = 0x98 };
	uint8_t buf[IBC_RDMA_INFO_MAX];
	size_t n;

	n = ibc_rdma_info_encode(&in, buf, sizeof(buf));
	put("fuzz_qpinfo", "roce", buf, n);
	in.link_layer = IBC_RDMA_LL_IB;
	in.lid = 7;
	memset(in.gid, 0, sizeof(in.gid));
	n = ibc_rdma_info_encode(&in, buf, sizeof(buf));
	put("fuzz_qpinfo", "ib", buf, n);
	/* invalid */
	put("fuzz_qpinfo", "bad_short", buf, n / 2);
	in.qpn = 0;
	n = ibc_rdma_info_encode(&in, buf, sizeof(buf));
	put("fuzz_qpinfo", "bad_qpn", buf, n);
	put("fuzz_qpinfo", "bad_http", "GET / HTTP/1.1\r\n\r\n", 18);
}

static void gen_pmi1(void)
{
	static const char *const lines[][2] = {
		{ "init", "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0" },
		{ "maxes", "cmd=maxes rc=0 kvsname_max=256 keylen_max=64 vallen_max=1024" },
		{ "kvsname", "cmd=my_kvsname rc=0 kvsname=kvs_4242_0" },
		{ "put", "cmd=put_result rc=0 msg=success" },
		{ "barrier", "cmd=barrier_out" },
		{ "get", "cmd=get_result rc=0 msg=success value=192.0.2.2:40757" },
		{ "get_failed", "cmd=get_result rc=-1 msg=key_ibcomm-root-0_not_found" },
		{ "bad_http", "HTTP/1.1 400 Bad Request" },
	};

	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		put("fuzz_pmi1", lines[i][0], lines[i][1], strlen(lines[i][1]));
}

static void gen_id(void)
{
	struct ibc_id d = { .family = 4, .port = 40757, .addr = { 192, 0, 2, 2 }, .pid = 4242 };
	ibcomm_id_t id;

	memset(d.key, 0x5a, sizeof(d.key));
	memset(d.boot_id, 0x11, sizeof(d.boot_id));
	ibc_id_encode(&d, &id);
	put("fuzz_id", "ipv4", id.bytes, sizeof(id.bytes));
	d.family = 6;
	memset(d.addr, 0, sizeof(d.addr));
	d.addr[0] = 0xfe;
	d.addr[1] = 0x80;
	d.addr[15] = 1;
	d.scope = 1;
	ibc_id_encode(&d, &id);
	put("fuzz_id", "ipv6_scope", id.bytes, sizeof(id.bytes));
	put("fuzz_id", "bad_short", id.bytes, 40);
}

static void gen_hostlist(void)
{
	static const char *const lists[][2] = {
		{ "plain", "login1" },
		{ "range", "node[01-04,07]" },
		{ "two_ranges", "rack[1-2]-n[08-10],gpu[1-2].example.org,x" },
		{ "bad_open", "node[1-" },
		{ "bad_reversed", "node[3-1]" },
	};

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		put("fuzz_hostlist", lists[i][0], lists[i][1], strlen(lists[i][1]));
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: gen_corpus DIR\n");
		return 2;
	}
	g_dir = argv[1];
	if (mkdir(g_dir, 0755) && errno != EEXIST) {
		perror(g_dir);
		return 1;
	}
	gen_rdv();
	gen_tcp();
	gen_qpinfo();
	gen_pmi1();
	gen_id();
	gen_hostlist();
	return g_failed;
}
