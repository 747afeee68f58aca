// SPDX-License-Identifier: Apache-2.0
// ch-libvirt: libvirt's ch driver, reduced to what it does to the VMM when a
// domain starts and stops (e2e case libvirt, in L1; static aarch64). The
// steps and their order follow libvirt's src/ch (ch_conf.c, ch_monitor.c,
// ch_process.c, ch_events.c, ch_driver.c); the vm.create body is the file
// the case wrote, byte for byte what virCHMonitorBuildVMJson builds.
//
//   ch-libvirt VMM STATEDIR NAME CREATE_JSON PTY_UNTIL
//
//  1. `VMM --version`, parsed as libvirt does ("cloud-hypervisor v" N.M.P;
//     no domain below 22, the payload form from 28).
//  2. STATEDIR/NAME-socket bound and listening (listen backlog 1), and the
//     FIFO STATEDIR/NAME-event-monitor-fifo (mkfifo 0600), both before the
//     VMM starts; the VMM runs as `VMM --api-socket fd=N --event-monitor
//     path=FIFO`, umask 002, stdin /dev/null, stdout+stderr to
//     STATEDIR/NAME.log, its own session; the parent closes its copy of N.
//  3. The FIFO's read end opened O_RDONLY, blocking, after the VMM started
//     (it returns once the VMM has the write end).
//  4. PUT vm.create (libcurl's headers: Host, Accept, Content-Type,
//     Content-Length); a connection for vm.add-net that sends nothing (a
//     domain without <interface>); PUT vm.boot (an empty upload,
//     Content-Length: 0).
//  5. /proc/PID/task/*/comm read for the vCPU threads (vcpuN), GET vm.info
//     read for config.console.file and config.serial.file.
//  6. The serial pty opened and the guest's console read through it until a
//     line holds PTY_UNTIL.
//  7. PUT vm.shutdown (virsh shutdown), then the FIFO read until
//     {"source":"vm","event":"shutdown"}; PUT vmm.shutdown (virsh destroy's
//     first request), then the FIFO read until {"source":"vmm","event":
//     "shutdown"} and end-of-file; the VMM reaped (SIGTERM first if it is
//     still there after 10 s, as virProcessAbort).
//
// Output: "E2E-LIBVIRT: ..." per step, "E2E-PTY: <line>" per console line,
// "E2E-EVENT step=NAME <json>" per event (the harness's event format).
// Exit 0 when every step got what libvirt needs; 1 otherwise.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STEP "E2E-LIBVIRT: "

static const char *socket_path;
static const char *domain_name;
static pid_t vmm_pid;
static int event_fd = -1;
static char event_buf[65536];
static size_t event_fill;
static int seen_vm_shutdown, seen_vmm_shutdown, event_eof;

static void fail(const char *what)
{
	printf(STEP "FAILED %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
	fflush(stdout);
	// virCHProcessStop: the VMM does not outlive a failed start.
	if (vmm_pid > 0) {
		kill(vmm_pid, SIGTERM);
		waitpid(vmm_pid, NULL, 0);
	}
	exit(1);
}

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

// One event per line; libvirt's parser counts braces, and so does this one
// for the two events it acts on.
static void take_events(void)
{
	for (;;) {
		ssize_t n = read(event_fd, event_buf + event_fill, sizeof(event_buf) - 1 - event_fill);

		if (n == 0) {
			event_eof = 1;
			break;
		}
		if (n < 0)
			break;
		event_fill += n;
		char *line = event_buf, *nl;

		event_buf[event_fill] = 0;
		while ((nl = strchr(line, '\n'))) {
			*nl = 0;
			printf("E2E-EVENT step=%s %s\n", domain_name, line);
			if (strstr(line, "\"source\":\"vm\",\"event\":\"shutdown\""))
				seen_vm_shutdown = 1;
			if (strstr(line, "\"source\":\"vmm\",\"event\":\"shutdown\""))
				seen_vmm_shutdown = 1;
			line = nl + 1;
		}
		event_fill -= line - event_buf;
		memmove(event_buf, line, event_fill);
	}
	fflush(stdout);
}

// Read events until *flag is set (or the stream ends), at most `secs`.
static int await_event(int *flag, double secs)
{
	double end = now() + secs;

	while (!*flag && !event_eof && now() < end) {
		struct pollfd p = { .fd = event_fd, .events = POLLIN };

		poll(&p, 1, 200);
		take_events();
	}
	return *flag;
}

static int connect_api(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	if (fd < 0)
		fail("socket");
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)))
		fail("connect to the API socket");
	return fd;
}

// One request on its own connection, as libcurl sends it for libvirt;
// returns the status, the body in `body`.
static int request(const char *method, const char *endpoint, const char *json, int json_headers,
		   char *body, size_t body_len)
{
	static char out[70000], in[70000];
	int fd = connect_api(), n, status = 0;
	size_t got = 0;

	n = snprintf(out, sizeof(out), "%s /api/v1/%s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n",
		     method, endpoint);
	if (json_headers)
		n += snprintf(out + n, sizeof(out) - n, "Content-Type: application/json\r\n");
	if (json)
		n += snprintf(out + n, sizeof(out) - n, "Content-Length: %zu\r\n\r\n%s", strlen(json), json);
	else if (!strcmp(method, "PUT"))
		n += snprintf(out + n, sizeof(out) - n, "Content-Length: 0\r\n\r\n");
	else
		n += snprintf(out + n, sizeof(out) - n, "\r\n");
	if (write(fd, out, n) != n)
		fail("write the request");
	// As libcurl: the head, then the body its Content-Length gives (the
	// server may keep the connection open for another request).
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;
		char *end;

		in[got] = 0;
		if ((end = strstr(in, "\r\n\r\n"))) {
			const char *cl = strcasestr(in, "\r\nContent-Length:");
			size_t want = (end - in) + 4 + (cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0);

			if (got >= want)
				break;
		}
		if (poll(&p, 1, 30000) <= 0)
			fail("no answer within 30 s");
		r = read(fd, in + got, sizeof(in) - 1 - got);
		if (r <= 0)
			break;
		got += r;
	}
	close(fd);
	in[got] = 0;
	sscanf(in, "HTTP/1.%*d %d", &status);
	char *start = strstr(in, "\r\n\r\n");

	snprintf(body, body_len, "%s", start ? start + 4 : "");
	printf(STEP "%s %s -> %d %s\n", method, endpoint, status, body);
	fflush(stdout);
	errno = 0;
	return status;
}

// The string value of "key" inside the object that follows "\"object\":".
static int json_string(const char *json, const char *object, const char *key, char *out, size_t len)
{
	char needle[64];
	const char *at;

	snprintf(needle, sizeof(needle), "\"%s\":{", object);
	at = strstr(json, needle);
	if (!at)
		return 0;
	const char *end = strchr(at, '}');

	snprintf(needle, sizeof(needle), "\"%s\":\"", key);
	at = strstr(at, needle);
	if (!at || (end && at > end))
		return 0;
	at += strlen(needle);
	const char *quote = strchr(at, '"');

	if (!quote || (size_t)(quote - at) >= len)
		return 0;
	memcpy(out, at, quote - at);
	out[quote - at] = 0;
	return 1;
}

static void version(const char *vmm)
{
	char cmd[512], line[256] = "";
	unsigned major = 0, minor = 0, micro = 0;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s --version", vmm);
	p = popen(cmd, "r");
	if (!p || !fgets(line, sizeof(line), p))
		fail("cloud-hypervisor --version");
	pclose(p);
	line[strcspn(line, "\n")] = 0;
	const char *at = strstr(line, "cloud-hypervisor v");

	if (!at || sscanf(at + 18, "%u.%u.%u", &major, &minor, &micro) != 3)
		fail("--version is not libvirt's 'cloud-hypervisor vN.M.P'");
	printf(STEP "version '%s' -> %u.%u.%u start=%s payload=%s\n", line, major, minor, micro,
	       major >= 22 ? "yes" : "no", major >= 28 ? "yes" : "no");
	if (major < 28)
		fail("a version libvirt would not send the payload form to");
}

static pid_t start_vmm(const char *vmm, const char *statedir, const char *name, char *fifo, size_t fifo_len)
{
	static char sock[108], logpath[512], fdarg[32], monarg[600];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int fd;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/%s-socket", statedir, name);
	socket_path = sock;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", sock);
	if (unlink(sock) && errno != ENOENT)
		fail("unlink the old socket");
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) || listen(fd, 1))
		fail("bind/listen the API socket");
	chmod(sock, 0664);
	snprintf(fifo, fifo_len, "%s/%s-event-monitor-fifo", statedir, name);
	unlink(fifo);
	if (mkfifo(fifo, S_IWUSR | S_IRUSR))
		fail("mkfifo");
	snprintf(logpath, sizeof(logpath), "%s/%s.log", statedir, name);
	snprintf(fdarg, sizeof(fdarg), "fd=%d", fd);
	snprintf(monarg, sizeof(monarg), "path=%s", fifo);
	printf(STEP "start %s --api-socket %s --event-monitor %s\n", vmm, fdarg, monarg);
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		fail("fork");
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(null, 0);
		dup2(log, 1);
		dup2(log, 2);
		setsid();
		umask(002);
		execl(vmm, vmm, "--api-socket", fdarg, "--event-monitor", monarg, (char *)NULL);
		_exit(127);
	}
	close(fd);
	vmm_pid = pid;
	// libvirt: the reader end, blocking, after the VMM has started.
	while ((event_fd = open(fifo, O_RDONLY)) < 0)
		if (errno != EINTR)
			fail("open the event monitor FIFO");
	fcntl(event_fd, F_SETFL, fcntl(event_fd, F_GETFL) | O_NONBLOCK);
	printf(STEP "pid %d, event monitor FIFO open\n", pid);
	return pid;
}

static int vcpu_threads(pid_t pid)
{
	char dir[64], path[384], comm[64];
	struct dirent *e;
	int vcpus = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/task", pid);
	d = opendir(dir);
	if (!d)
		fail("opendir /proc/PID/task");
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/comm", dir, e->d_name);
		FILE *f = fopen(path, "r");

		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f)) {
			comm[strcspn(comm, "\n")] = 0;
			// virCHMonitorRefreshThreadInfo: "vcpu" + an index.
			int id;
			char *tail;

			if (!strncmp(comm, "vcpu", 4) && (id = strtol(comm + 4, &tail, 0), tail != comm + 4)) {
				printf(STEP "thread tid=%s comm=%s type=vcpu id=%d\n", e->d_name, comm, id);
				vcpus++;
			} else {
				printf(STEP "thread tid=%s comm=%s type=%s\n", e->d_name, comm,
				       strncmp(comm, "_disk", 5) && strncmp(comm, "_net", 4) && strncmp(comm, "_rng", 4) ?
					       "emulator" : "io");
			}
		}
		fclose(f);
	}
	closedir(d);
	return vcpus;
}

// Read the guest's console through the pty until a line holds `until`.
static int read_pty(const char *pty, const char *until, double secs)
{
	char buf[4096], line[4096];
	size_t fill = 0;
	double end = now() + secs;
	int fd = open(pty, O_RDWR | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		fail("open the serial pty");
	while (now() < end) {
		struct pollfd p[2] = { { .fd = fd, .events = POLLIN }, { .fd = event_fd, .events = POLLIN } };

		poll(p, 2, 500);
		take_events();
		ssize_t n = read(fd, buf, sizeof(buf));

		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\r')
				continue;
			if (buf[i] != '\n' && fill < sizeof(line) - 1) {
				line[fill++] = buf[i];
				continue;
			}
			line[fill] = 0;
			fill = 0;
			printf("E2E-PTY: %s\n", line);
			fflush(stdout);
			if (strstr(line, until)) {
				close(fd);
				return 1;
			}
		}
	}
	close(fd);
	return 0;
}

int main(int argc, char **argv)
{
	static char json[65536], body[65536], fifo[512], console[256], serial[256];
	int status = 0, ok = 1;
	pid_t pid;
	FILE *f;

	if (argc != 6) {
		fprintf(stderr, "usage: %s VMM STATEDIR NAME CREATE_JSON PTY_UNTIL\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	domain_name = argv[3];
	version(argv[1]);
	f = fopen(argv[4], "r");
	if (!f)
		fail("open CREATE_JSON");
	json[fread(json, 1, sizeof(json) - 1, f)] = 0;
	fclose(f);
	json[strcspn(json, "\n")] = 0;
	pid = start_vmm(argv[1], argv[2], argv[3], fifo, sizeof(fifo));

	if (request("PUT", "vm.create", json, 1, body, sizeof(body)) / 100 != 2)
		fail("vm.create");
	// chProcessAddNetworkDevices connects even for a domain without NICs.
	close(connect_api());
	if (request("PUT", "vm.boot", NULL, 0, body, sizeof(body)) / 100 != 2)
		fail("vm.boot");

	int vcpus = vcpu_threads(pid);

	printf(STEP "vcpu threads %d\n", vcpus);
	if (request("GET", "vm.info", NULL, 1, body, sizeof(body)) != 200)
		fail("vm.info");
	if (!json_string(body, "serial", "file", serial, sizeof(serial))) {
		errno = 0;
		fail("no config.serial.file in vm.info");
	}
	printf(STEP "serial pty %s\n", serial);
	if (strstr(json, "\"console\":{\"mode\":\"Pty\"}")) {
		if (json_string(body, "console", "file", console, sizeof(console))) {
			printf(STEP "console pty %s\n", console);
		} else {
			printf(STEP "no config.console.file in vm.info (libvirt logs an error)\n");
			ok = 0;
		}
	}
	if (!read_pty(serial, argv[5], 240)) {
		printf(STEP "'%s' did not come through the pty within 240 s\n", argv[5]);
		ok = 0;
	}

	if (request("PUT", "vm.shutdown", NULL, 0, body, sizeof(body)) / 100 != 2)
		ok = 0;
	printf(STEP "event vm:shutdown %s\n", await_event(&seen_vm_shutdown, 60) ? "read" : "missing");
	if (request("PUT", "vmm.shutdown", NULL, 0, body, sizeof(body)) / 100 != 2)
		ok = 0;
	printf(STEP "event vmm:shutdown %s\n", await_event(&seen_vmm_shutdown, 30) ? "read" : "missing");
	await_event(&event_eof, 10);
	printf(STEP "event monitor %s\n", event_eof ? "end-of-file" : "still open");
	// virProcessAbort: SIGTERM if it is still there, then reap.
	for (int i = 0; i < 100 && waitpid(pid, &status, WNOHANG) == 0; i++) {
		if (i == 99) {
			kill(pid, SIGTERM);
			waitpid(pid, &status, 0);
		}
		usleep(100000);
	}
	printf(STEP "vmm exit=%d\n", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	ok = ok && seen_vm_shutdown && seen_vmm_shutdown && vcpus > 0;
	printf(STEP "%s\n", ok ? "domain started and stopped" : "FAILED");
	return ok ? 0 : 1;
}
