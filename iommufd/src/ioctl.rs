//! The ioctl kinds the backend issues: the names its call counters and
//! its errors carry.

/// Every ioctl kind the backend issues, for the call counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ioctl {
    Destroy,
    IoasAlloc,
    IoasMap,
    HwptAlloc,
    GetHwInfo,
    HwptInvalidate,
    ViommuAlloc,
    VdeviceAlloc,
    VeventqAlloc,
    HwQueueAlloc,
    /// `IOMMU_TEST_CMD` (the selftest mock's device ops).
    TestCmd,
}

impl Ioctl {
    /// Every kind, in counter order.
    pub const ALL: [Ioctl; 11] = [
        Ioctl::Destroy,
        Ioctl::IoasAlloc,
        Ioctl::IoasMap,
        Ioctl::HwptAlloc,
        Ioctl::GetHwInfo,
        Ioctl::HwptInvalidate,
        Ioctl::ViommuAlloc,
        Ioctl::VdeviceAlloc,
        Ioctl::VeventqAlloc,
        Ioctl::HwQueueAlloc,
        Ioctl::TestCmd,
    ];

    /// The uAPI name.
    pub fn name(self) -> &'static str {
        match self {
            Ioctl::Destroy => "IOMMU_DESTROY",
            Ioctl::IoasAlloc => "IOMMU_IOAS_ALLOC",
            Ioctl::IoasMap => "IOMMU_IOAS_MAP",
            Ioctl::HwptAlloc => "IOMMU_HWPT_ALLOC",
            Ioctl::GetHwInfo => "IOMMU_GET_HW_INFO",
            Ioctl::HwptInvalidate => "IOMMU_HWPT_INVALIDATE",
            Ioctl::ViommuAlloc => "IOMMU_VIOMMU_ALLOC",
            Ioctl::VdeviceAlloc => "IOMMU_VDEVICE_ALLOC",
            Ioctl::VeventqAlloc => "IOMMU_VEVENTQ_ALLOC",
            Ioctl::HwQueueAlloc => "IOMMU_HW_QUEUE_ALLOC",
            Ioctl::TestCmd => "IOMMU_TEST_CMD",
        }
    }
}
