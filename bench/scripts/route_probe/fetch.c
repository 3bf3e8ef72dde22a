/* One HTTP/1.0 GET of /big from ADDR:PORT, read to the end with a 256 KiB buffer; prints MB/s
 * (10^6 bytes/s, connect to last byte). Exits 1 on a short answer.  fetch ADDR PORT */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  static char buf[262144];
  if (argc != 3) return 2;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) return 2;
  double t0 = now();
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 1; }
  const char *req = "GET /big HTTP/1.0\r\n\r\n";
  if (write(s, req, strlen(req)) < 0) { perror("write"); return 1; }
  long n = 0;
  ssize_t r;
  while ((r = read(s, buf, sizeof buf)) > 0) n += r;
  double t = now() - t0;
  close(s);
  printf("%.0f\n", n / t / 1e6);
  return n < 268435456;
}
