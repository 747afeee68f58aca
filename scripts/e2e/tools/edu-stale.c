// SPDX-License-Identifier: Apache-2.0
// edu-stale: the stale-TLB check of e2e case cmdqv-host, in the L2 guest
// (static aarch64, root). The edu function (bound to vfio-pci, cdev CDEV)
// DMAs through an iommufd IOAS on the L2's vSMMU; its TLBIs go to the
// L2's VCMDQ LVCMDQ0, which runs in L0 (the CMD-QV model).
//
//   edu-stale CDEV PAGE0
//
// IOVA X -> page A, DMA reads A. LVCMDQ0 disabled through the mapped page0
// (PAGE0 + 8 = CONFIG): unmap X (its TLBI + CMD_SYNC wait in the ring; the
// driver's CMD_SYNC times out), map X -> B, DMA reads A again (stale
// IOTLB in L0). LVCMDQ0 re-enabled: the pending TLBI runs; DMA reads B.
#include <errno.h>
#include <fcntl.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define IOVA_X 0x100000ull
#define IOVA_C 0x200000ull
#define EDU_BUF 0x40000ull

static int iommufd, dev;
static uint32_t ioas;
static volatile uint8_t *bar;

static void die(const char *what)
{
	printf("E2E-L2: edu-stale failed: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void map(void *va, uint64_t iova)
{
	struct iommu_ioas_map m = {
		.size = sizeof(m),
		.flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
		.ioas_id = ioas, .user_va = (uintptr_t)va, .length = 4096, .iova = iova,
	};
	if (ioctl(iommufd, IOMMU_IOAS_MAP, &m))
		die("IOMMU_IOAS_MAP");
}

static void unmap(uint64_t iova)
{
	struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova, .length = 4096 };
	if (ioctl(iommufd, IOMMU_IOAS_UNMAP, &u))
		die("IOMMU_IOAS_UNMAP");
}

static void w64(uint64_t off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }
static uint32_t r32(uint64_t off) { return *(volatile uint32_t *)(bar + off); }

static void dma(uint64_t src, uint64_t dst, uint64_t cmd)
{
	w64(0x80, src);
	w64(0x88, dst);
	w64(0x90, 4);
	w64(0x98, cmd);
	for (int i = 0; i < 500 && (r32(0x98) & 1); i++)
		usleep(10000);
}

/* What IOVA X reads as, through edu: X -> edu buffer -> C. */
static uint32_t read_x(volatile uint32_t *c)
{
	*c = 0;
	dma(IOVA_X, EDU_BUF, 1);
	dma(EDU_BUF, IOVA_C, 3);
	return *c;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s CDEV PAGE0\n", argv[0]);
		return 2;
	}
	uint64_t page0 = strtoull(argv[2], NULL, 0);
	iommufd = open("/dev/iommu", O_RDWR);
	dev = open(argv[1], O_RDWR);
	if (iommufd < 0 || dev < 0)
		die("open");
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind), .iommufd = iommufd };
	if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		die("VFIO_DEVICE_BIND_IOMMUFD");
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	if (ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOMMU_IOAS_ALLOC");
	ioas = alloc.out_ioas_id;
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach), .pt_id = ioas };
	if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach))
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
	struct vfio_region_info bar0 = { .argsz = sizeof(bar0), .index = VFIO_PCI_BAR0_REGION_INDEX };
	struct vfio_region_info cfg = { .argsz = sizeof(cfg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	if (ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &bar0) || ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cfg))
		die("VFIO_DEVICE_GET_REGION_INFO");
	bar = mmap(NULL, bar0.size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, bar0.offset);
	if (bar == MAP_FAILED)
		die("mmap BAR0");
	uint16_t command;
	if (pread(dev, &command, 2, cfg.offset + 4) != 2)
		die("config read");
	command |= 0x6;
	if (pwrite(dev, &command, 2, cfg.offset + 4) != 2)
		die("config write");
	uint32_t *a = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (a == MAP_FAILED)
		die("mmap pages");
	uint32_t *b = a + 1024, *c = a + 2048;
	a[0] = 0xaaaaaaaa;
	b[0] = 0xbbbbbbbb;
	map(a, IOVA_X);
	map(c, IOVA_C);
	int memfd = open("/dev/mem", O_RDWR | O_SYNC);
	if (memfd < 0)
		die("/dev/mem");
	volatile uint32_t *q0 = mmap(NULL, 0x10000, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, (off_t)page0);
	if (q0 == MAP_FAILED)
		die("mmap page0");
	printf("E2E-L2: edu-stale id=0x%08x before x=0x%08x\n", r32(0), read_x(c));
	fflush(stdout);
	q0[2] = 0;	/* LVCMDQ0 CONFIG.EN = 0: its commands wait */
	for (int i = 0; i < 100 && (q0[3] & 1); i++)
		usleep(10000);
	uint32_t cons0 = q0[0];
	unmap(IOVA_X);
	map(b, IOVA_X);
	uint32_t prod1 = q0[1];
	printf("E2E-L2: edu-stale remapped-no-tlbi x=0x%08x lvcmdq0 status=%u cons=0x%x prod=0x%x\n",
	       read_x(c), q0[3], cons0, prod1);
	fflush(stdout);
	q0[2] = 1;	/* the pending TLBI + CMD_SYNC run now */
	for (int i = 0; i < 100 && !(q0[3] & 1); i++)
		usleep(10000);
	for (int i = 0; i < 100 && (q0[0] & 0xfffff) != (q0[1] & 0xfffff); i++)
		usleep(10000);
	printf("E2E-L2: edu-stale after-tlbi x=0x%08x lvcmdq0 cons=0x%x prod=0x%x\n", read_x(c), q0[0], q0[1]);
	return 0;
}
