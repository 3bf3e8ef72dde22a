// Does this kernel forward a TCP connection between two sockets in two network namespaces with a
// sockhash + sk_skb verdict program (no user-space copy), and what does it cost?
//
// probe MODE PORT_PUBLIC NETNS_PATH PORT_TENANT
//   accepts on 127.0.0.1:PORT_PUBLIC (host netns), connects to 127.0.0.1:PORT_TENANT inside
//   NETNS_PATH, then forwards: MODE=bpf by the kernel (sockhash keyed by the peer's cookie),
//   MODE=splice by a splice loop (two threads), as the worker does today.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int bpf(int cmd, union bpf_attr *a) { return syscall(__NR_bpf, cmd, a, sizeof(*a)); }

#define INSN(c, d, s, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (s), .off = (o), .imm = (i)})

static int load_verdict(int map) {
  struct bpf_insn p[] = {
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0),               // r6 = ctx
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_socket_cookie), // r0 = cookie(skb->sk)
      INSN(BPF_STX | BPF_MEM | BPF_DW, 10, 0, -8, 0),              // *(fp-8) = r0
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0),               // r1 = ctx
      INSN(BPF_LD | BPF_DW | BPF_IMM, 2, BPF_PSEUDO_MAP_FD, 0, map), // r2 = map
      INSN(0, 0, 0, 0, 0),
      INSN(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0),              // r3 = fp
      INSN(BPF_ALU64 | BPF_ADD | BPF_K, 3, 0, 0, -8),              // r3 -= 8
      INSN(BPF_ALU64 | BPF_MOV | BPF_K, 4, 0, 0, 0),               // r4 = 0 (egress)
      INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_sk_redirect_hash),
      INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
  };
  static char log[65536];
  union bpf_attr a = {0};
  a.prog_type = BPF_PROG_TYPE_SK_SKB;
  a.insns = (uint64_t)(uintptr_t)p;
  a.insn_cnt = sizeof(p) / sizeof(p[0]);
  a.license = (uint64_t)(uintptr_t) "GPL";
  a.log_buf = (uint64_t)(uintptr_t)log;
  a.log_size = sizeof(log);
  a.log_level = 1;
  int fd = bpf(BPF_PROG_LOAD, &a);
  if (fd < 0) fprintf(stderr, "prog load: %s\n%s\n", strerror(errno), log);
  return fd;
}

static uint64_t cookie(int s) {
  uint64_t c = 0;
  socklen_t l = sizeof(c);
  if (getsockopt(s, SOL_SOCKET, SO_COOKIE, &c, &l) < 0) perror("SO_COOKIE");
  return c;
}

static int map_put(int map, uint64_t key, int sock) {
  union bpf_attr a = {0};
  uint32_t v = sock;
  a.map_fd = map;
  a.key = (uint64_t)(uintptr_t)&key;
  a.value = (uint64_t)(uintptr_t)&v;
  a.flags = BPF_ANY;
  return bpf(BPF_MAP_UPDATE_ELEM, &a);
}

struct pair { int from, to; };
static void *splice_loop(void *arg) {
  struct pair *p = arg;
  int pipefd[2];
  if (pipe(pipefd) < 0) return NULL;
  for (;;) {
    ssize_t n = splice(p->from, NULL, pipefd[1], NULL, 1 << 16, SPLICE_F_MOVE);
    if (n <= 0) break;
    while (n > 0) {
      ssize_t m = splice(pipefd[0], NULL, p->to, NULL, n, SPLICE_F_MOVE);
      if (m <= 0) return NULL;
      n -= m;
    }
  }
  shutdown(p->to, SHUT_WR);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 5) { fprintf(stderr, "usage: probe bpf|splice PORT NETNS PORT\n"); return 2; }
  int bpf_mode = strcmp(argv[1], "bpf") == 0;
  int host = open("/proc/self/ns/net", O_RDONLY), tenant = open(argv[3], O_RDONLY);
  if (host < 0 || tenant < 0) { perror("netns"); return 1; }
  int map = -1;
  if (bpf_mode) {
    union bpf_attr a = {0};
    a.map_type = BPF_MAP_TYPE_SOCKHASH;
    a.key_size = 8;
    a.value_size = 4;
    a.max_entries = 65536;
    map = bpf(BPF_MAP_CREATE, &a);
    if (map < 0) { perror("map create"); return 1; }
    int prog = load_verdict(map);
    if (prog < 0) return 1;
    union bpf_attr at = {0};
    at.target_fd = map;
    at.attach_bpf_fd = prog;
    at.attach_type = BPF_SK_SKB_VERDICT;
    if (bpf(BPF_PROG_ATTACH, &at) < 0) { perror("attach verdict"); return 1; }
  }
  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in pub = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(l, (void *)&pub, sizeof(pub)) < 0 || listen(l, 128) < 0) { perror("listen"); return 1; }
  fprintf(stderr, "listening\n");
  for (;;) {
    int c = accept(l, NULL, NULL);
    if (c < 0) continue;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (setns(tenant, CLONE_NEWNET) < 0) { perror("setns"); return 1; }
    int t = socket(AF_INET, SOCK_STREAM, 0);
    if (setns(host, CLONE_NEWNET) < 0) { perror("setns back"); abort(); }
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4])), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(t, (void *)&to, sizeof(to)) < 0) { perror("connect tenant"); close(c); close(t); continue; }
    setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bpf_mode) {
      // The client's first bytes (its request, held) by hand; then both sockets in the map, each
      // under the other's cookie (a socket in the map has its arrivals judged by the program);
      // then the request to the tenant, whose answer comes back through the kernel.
      char buf[65536];
      ssize_t n = recv(c, buf, sizeof(buf), 0);
      if (map_put(map, cookie(c), t) < 0 || map_put(map, cookie(t), c) < 0) { perror("map put"); return 1; }
      if (n > 0) send(t, buf, n, 0);
      // Closing our descriptors would not close the connections the map holds; a real worker
      // would watch them (sock_ops or tcp_info) and delete both entries on close. Here: leak.
    } else {
      struct pair *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
      *a = (struct pair){c, t};
      *b = (struct pair){t, c};
      pthread_t x, y;
      pthread_create(&x, NULL, splice_loop, a);
      pthread_create(&y, NULL, splice_loop, b);
      pthread_detach(x);
      pthread_detach(y);
    }
  }
}
