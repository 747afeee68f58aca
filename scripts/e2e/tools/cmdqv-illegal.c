// SPDX-License-Identifier: Apache-2.0
// cmdqv-illegal: the L2 guest's illegal VCMDQ command for e2e case
// cmdqv-host (static aarch64, run in the L2 initramfs as root).
//
//   cmdqv-illegal PAGE0 LVCMDQ RING LOG2SIZE SID
//
// PAGE0: the guest's VINTF0 page0 (GPA), LVCMDQ: the queue (its registers
// at PAGE0 + 0x80 * LVCMDQ: CONS +0, PROD +4), RING: the queue's ring
// (GPA, outside the kernel's RAM so /dev/mem maps it), LOG2SIZE: its BASE
// LOG2SIZE. At CONS it writes CFGI_STE(SID) (not allowed on a guest-owned
// VINTF) and CMD_SYNC, publishes them with one PROD write through the
// mapped page0, and at once makes the refused entry a CMD_SYNC: the
// hardware stops at the CFGI_STE (CONS.ERR) during the PROD write; the
// guest driver's acknowledgement then resumes on the CMD_SYNC, so the
// error happens once. (The driver's own recovery rewrites the entry in
// its own ring, not in this one: without the rewrite here every
// acknowledgement would hit the CFGI_STE again.) Prints the registers.
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static void *map(int fd, uint64_t pa, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)pa);

	if (p == MAP_FAILED) {
		perror("mmap /dev/mem");
		exit(1);
	}
	return p;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: %s PAGE0 LVCMDQ RING LOG2SIZE SID\n", argv[0]);
		return 2;
	}
	uint64_t page0 = strtoull(argv[1], NULL, 0);
	unsigned int lvcmdq = strtoul(argv[2], NULL, 0);
	uint64_t ring_pa = strtoull(argv[3], NULL, 0);
	unsigned int log2size = strtoul(argv[4], NULL, 0);
	uint32_t sid = strtoul(argv[5], NULL, 0);
	uint32_t size = 1u << log2size, mask = size - 1;
	int fd = open("/dev/mem", O_RDWR | O_SYNC);

	if (fd < 0) {
		perror("/dev/mem");
		return 1;
	}
	volatile uint32_t *q = (volatile uint32_t *)((char *)map(fd, page0, 0x10000) + 0x80 * lvcmdq);
	volatile uint64_t *ring = map(fd, ring_pa, (size_t)size * 16);
	uint32_t cons = q[0], prod = q[1];
	uint32_t idx = cons & mask, wrap = cons & size;
	uint32_t next = (idx + 1) & mask, end = (idx + 2) & mask;
	uint32_t new_prod = end | (end < idx ? wrap ^ size : wrap);

	ring[2 * idx] = 0x03 | ((uint64_t)sid << 32);	/* CFGI_STE */
	ring[2 * idx + 1] = 1;				/* leaf */
	ring[2 * next] = 0x46;				/* CMD_SYNC, CS=NONE */
	ring[2 * next + 1] = 0;
	__asm__ volatile("dsb sy" ::: "memory");
	q[1] = new_prod;
	__asm__ volatile("dsb sy" ::: "memory");
	ring[2 * idx] = 0x46;				/* the refused entry: CMD_SYNC */
	ring[2 * idx + 1] = 0;
	__asm__ volatile("dsb sy" ::: "memory");
	uint32_t after = q[0];

	printf("E2E-L2: illegal lvcmdq%u ring=0x%llx log2size=%u cons=0x%x prod=0x%x new-prod=0x%x\n",
	       lvcmdq, (unsigned long long)ring_pa, log2size, cons, prod, new_prod);
	printf("E2E-L2: illegal after-prod cons=0x%x err=%u gerror=0x%x gerrorn=0x%x\n",
	       after, (after >> 24) & 0x7f, q[4], q[5]);
	printf("E2E-L2: illegal expect prod=0x%x\n", new_prod);
	return 0;
}
