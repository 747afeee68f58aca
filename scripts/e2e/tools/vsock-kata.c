// SPDX-License-Identifier: Apache-2.0
// vsock-kata: both ends of e2e case kata (static aarch64; busybox has no
// AF_VSOCK). The guest end stands in for Kata's agent; the host end talks
// to it as Kata's runtime does, through cloud-hypervisor's hybrid vsock
// socket (CONNECT <port>\n, then OK <host port>\n, then the bytes).
//
//   vsock-kata listen PORT                 (L2) accept one connection on
//       AF_VSOCK PORT, read to EOF, check it is pattern 1 (NBYTES from the
//       peer's count), answer with pattern 2 of the same length, close.
//   vsock-kata connect SOCKET PORT NBYTES  (L1) CONNECT, expect OK, send
//       pattern 1 (NBYTES), half-close, read to EOF, check pattern 2.
//   vsock-kata line SOCKET TEXT            (L1) send TEXT and a newline,
//       print the one line answered (an error line is expected).
//
// Every result is one E2E-VSOCK: line with byte counts and FNV-1a sums.
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>
#include <unistd.h>

static uint8_t pattern(int which, size_t i)
{
	return (uint8_t)(i * (which == 1 ? 31 : 57) + i / 251 + which);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static void die(const char *who, const char *what)
{
	printf("E2E-VSOCK: %s failed: %s: %s\n", who, what, strerror(errno));
	fflush(stdout);
	exit(1);
}

static void send_pattern(int fd, int which, size_t n, const char *who)
{
	uint8_t buf[16384];
	size_t sent = 0;
	uint64_t h = 0xcbf29ce484222325ull;
	while (sent < n) {
		size_t len = n - sent < sizeof(buf) ? n - sent : sizeof(buf);
		for (size_t i = 0; i < len; i++)
			buf[i] = pattern(which, sent + i);
		h = fnv(h, buf, len);
		size_t off = 0;
		while (off < len) {
			ssize_t w = write(fd, buf + off, len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				die(who, "write");
			off += (size_t)w;
		}
		sent += len;
	}
	printf("E2E-VSOCK: %s sent %zu bytes fnv=%016llx\n", who, sent, (unsigned long long)h);
}

// Read to EOF; return the count, print whether it was pattern WHICH.
static size_t recv_pattern(int fd, int which, const char *who)
{
	uint8_t buf[16384];
	size_t got = 0, bad = 0;
	uint64_t h = 0xcbf29ce484222325ull;
	for (;;) {
		ssize_t r = read(fd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die(who, "read");
		if (r == 0)
			break;
		for (ssize_t i = 0; i < r; i++)
			bad += buf[i] != pattern(which, got + (size_t)i);
		h = fnv(h, buf, (size_t)r);
		got += (size_t)r;
	}
	printf("E2E-VSOCK: %s received %zu bytes fnv=%016llx pattern%d %s\n", who, got,
	       (unsigned long long)h, which, bad ? "MISMATCH" : "ok");
	return got;
}

static int listen_guest(unsigned port)
{
	int s = socket(AF_VSOCK, SOCK_STREAM, 0);
	if (s < 0)
		die("guest", "socket(AF_VSOCK)");
	struct sockaddr_vm a = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port };
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) || listen(s, 1))
		die("guest", "bind/listen");
	printf("E2E-VSOCK: guest listening on port %u\n", port);
	fflush(stdout);
	struct sockaddr_vm peer;
	socklen_t len = sizeof(peer);
	int c = accept(s, (struct sockaddr *)&peer, &len);
	if (c < 0)
		die("guest", "accept");
	struct sockaddr_vm self;
	len = sizeof(self);
	if (getsockname(c, (struct sockaddr *)&self, &len))
		die("guest", "getsockname");
	printf("E2E-VSOCK: guest accepted cid %u port %u on cid %u port %u\n", peer.svm_cid,
	       peer.svm_port, self.svm_cid, self.svm_port);
	size_t n = recv_pattern(c, 1, "guest");
	send_pattern(c, 2, n, "guest");
	close(c);
	close(s);
	return 0;
}

static int unix_connect(const char *path, const char *who)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0)
		die(who, "socket(AF_UNIX)");
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)))
		die(who, "connect");
	return s;
}

// One line, byte by byte (what follows it is the peer's data).
static void read_line(int fd, char *line, size_t cap)
{
	size_t n = 0;
	while (n + 1 < cap) {
		ssize_t r = read(fd, line + n, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = 0;
}

static int connect_host(const char *path, unsigned port, size_t nbytes)
{
	int s = unix_connect(path, "host");
	char cmd[64], line[256];
	int n = snprintf(cmd, sizeof(cmd), "CONNECT %u\n", port);
	if (write(s, cmd, (size_t)n) != n)
		die("host", "write CONNECT");
	read_line(s, line, sizeof(line));
	printf("E2E-VSOCK: host handshake '%s'\n", line);
	fflush(stdout);
	if (strncmp(line, "OK ", 3))
		return 2;
	send_pattern(s, 1, nbytes, "host");
	shutdown(s, SHUT_WR);
	size_t got = recv_pattern(s, 2, "host");
	close(s);
	return got == nbytes ? 0 : 1;
}

static int line_host(const char *path, const char *text)
{
	int s = unix_connect(path, "line");
	char line[256];
	if (write(s, text, strlen(text)) < 0 || write(s, "\n", 1) != 1)
		die("line", "write");
	read_line(s, line, sizeof(line));
	printf("E2E-VSOCK: line '%s' answered '%s'\n", text, line);
	close(s);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "listen"))
		return listen_guest((unsigned)strtoul(argv[2], NULL, 0));
	if (argc == 5 && !strcmp(argv[1], "connect"))
		return connect_host(argv[2], (unsigned)strtoul(argv[3], NULL, 0),
				    (size_t)strtoull(argv[4], NULL, 0));
	if (argc == 4 && !strcmp(argv[1], "line"))
		return line_host(argv[2], argv[3]);
	fprintf(stderr, "usage: vsock-kata listen PORT | connect SOCKET PORT NBYTES | line SOCKET TEXT\n");
	return 64;
}
