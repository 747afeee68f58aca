//! uAPI conformance: every struct size, field offset, constant and ioctl
//! number the backend uses, compared with the kernel's own headers.
//!
//! One table below pairs each value as this crate sees it (iommufd-bindings
//! and our selftest constants) with the C expression that names it; the
//! test writes a C program from the table, compiles it against sid's
//! linux-libc-dev 7.2 (`linux/iommufd.h`) and the 7.2 tree's
//! `drivers/iommu/iommufd/iommufd_test.h`, runs it and compares. A layout
//! change on either side fails here.
//!
//! Headers: $IOMMUFD_UAPI_INCLUDE (the dir holding linux/iommufd.h) and
//! $IOMMUFD_TEST_H (the path of iommufd_test.h); scripts/test.sh sets both
//! from scripts/uapi-headers.sh and scripts/iommufd-mock/build-kernel.sh.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use iommufd::selftest;
use iommufd_bindings::iommufd::*;

/// (name, our value, C expression).
type Row = (&'static str, u64, &'static str);

macro_rules! size {
    ($t:ident) => {
        (
            concat!("sizeof ", stringify!($t)),
            size_of::<$t>() as u64,
            concat!("sizeof(struct ", stringify!($t), ")"),
        )
    };
}

macro_rules! field {
    ($t:ident, $rust:tt, $c:literal) => {
        (
            concat!("offsetof ", stringify!($t), ".", $c),
            offset_of!($t, $rust) as u64,
            concat!("offsetof(struct ", stringify!($t), ", ", $c, ")"),
        )
    };
}

macro_rules! value {
    ($name:literal, $rust:expr, $c:literal) => {
        ($name, ($rust) as u64, $c)
    };
}

/// `_IO(';', nr)` as the bindings define it.
fn io(nr: u32) -> u64 {
    (u64::from(IOMMUFD_TYPE) << 8) | u64::from(nr)
}

fn table() -> Vec<Row> {
    vec![
        size!(iommu_destroy),
        size!(iommu_ioas_alloc),
        size!(iommu_ioas_map),
        field!(iommu_ioas_map, user_va, "user_va"),
        field!(iommu_ioas_map, iova, "iova"),
        size!(iommu_hw_info),
        field!(iommu_hw_info, data_uptr, "data_uptr"),
        field!(iommu_hw_info, __bindgen_anon_1, "in_data_type"),
        field!(iommu_hw_info, __bindgen_anon_1, "out_data_type"),
        field!(iommu_hw_info, out_capabilities, "out_capabilities"),
        size!(iommu_hw_info_arm_smmuv3),
        field!(iommu_hw_info_arm_smmuv3, idr, "idr"),
        field!(iommu_hw_info_arm_smmuv3, iidr, "iidr"),
        field!(iommu_hw_info_arm_smmuv3, aidr, "aidr"),
        size!(iommu_hw_info_tegra241_cmdqv),
        field!(iommu_hw_info_tegra241_cmdqv, version, "version"),
        field!(iommu_hw_info_tegra241_cmdqv, log2vcmdqs, "log2vcmdqs"),
        field!(iommu_hw_info_tegra241_cmdqv, log2vsids, "log2vsids"),
        size!(iommu_hwpt_alloc),
        field!(iommu_hwpt_alloc, pt_id, "pt_id"),
        field!(iommu_hwpt_alloc, out_hwpt_id, "out_hwpt_id"),
        field!(iommu_hwpt_alloc, data_type, "data_type"),
        field!(iommu_hwpt_alloc, data_uptr, "data_uptr"),
        size!(iommu_hwpt_arm_smmuv3),
        size!(iommu_viommu_alloc),
        field!(iommu_viommu_alloc, type_, "type"),
        field!(iommu_viommu_alloc, hwpt_id, "hwpt_id"),
        field!(iommu_viommu_alloc, out_viommu_id, "out_viommu_id"),
        field!(iommu_viommu_alloc, data_len, "data_len"),
        field!(iommu_viommu_alloc, data_uptr, "data_uptr"),
        size!(iommu_viommu_tegra241_cmdqv),
        field!(
            iommu_viommu_tegra241_cmdqv,
            out_vintf_mmap_length,
            "out_vintf_mmap_length"
        ),
        size!(iommu_vdevice_alloc),
        field!(iommu_vdevice_alloc, out_vdevice_id, "out_vdevice_id"),
        field!(iommu_vdevice_alloc, virt_id, "virt_id"),
        size!(iommu_hwpt_invalidate),
        field!(iommu_hwpt_invalidate, data_uptr, "data_uptr"),
        field!(iommu_hwpt_invalidate, data_type, "data_type"),
        field!(iommu_hwpt_invalidate, entry_len, "entry_len"),
        field!(iommu_hwpt_invalidate, entry_num, "entry_num"),
        size!(iommu_viommu_arm_smmuv3_invalidate),
        size!(iommu_veventq_alloc),
        field!(iommu_veventq_alloc, veventq_depth, "veventq_depth"),
        field!(iommu_veventq_alloc, out_veventq_id, "out_veventq_id"),
        field!(iommu_veventq_alloc, out_veventq_fd, "out_veventq_fd"),
        size!(iommufd_vevent_header),
        field!(iommufd_vevent_header, sequence, "sequence"),
        size!(iommu_vevent_arm_smmuv3),
        size!(iommu_vevent_tegra241_cmdqv),
        size!(iommu_hw_queue_alloc),
        field!(iommu_hw_queue_alloc, index, "index"),
        field!(iommu_hw_queue_alloc, out_hw_queue_id, "out_hw_queue_id"),
        field!(
            iommu_hw_queue_alloc,
            nesting_parent_iova,
            "nesting_parent_iova"
        ),
        field!(iommu_hw_queue_alloc, length, "length"),
        value!("IOMMU_DESTROY", io(IOMMUFD_CMD_DESTROY), "IOMMU_DESTROY"),
        value!(
            "IOMMU_IOAS_ALLOC",
            io(IOMMUFD_CMD_IOAS_ALLOC),
            "IOMMU_IOAS_ALLOC"
        ),
        value!("IOMMU_IOAS_MAP", io(IOMMUFD_CMD_IOAS_MAP), "IOMMU_IOAS_MAP"),
        value!(
            "IOMMU_IOAS_UNMAP",
            io(IOMMUFD_CMD_IOAS_UNMAP),
            "IOMMU_IOAS_UNMAP"
        ),
        value!(
            "IOMMU_HWPT_ALLOC",
            io(IOMMUFD_CMD_HWPT_ALLOC),
            "IOMMU_HWPT_ALLOC"
        ),
        value!(
            "IOMMU_GET_HW_INFO",
            io(IOMMUFD_CMD_GET_HW_INFO),
            "IOMMU_GET_HW_INFO"
        ),
        value!(
            "IOMMU_HWPT_INVALIDATE",
            io(IOMMUFD_CMD_HWPT_INVALIDATE),
            "IOMMU_HWPT_INVALIDATE"
        ),
        value!(
            "IOMMU_VIOMMU_ALLOC",
            io(IOMMUFD_CMD_VIOMMU_ALLOC),
            "IOMMU_VIOMMU_ALLOC"
        ),
        value!(
            "IOMMU_VDEVICE_ALLOC",
            io(IOMMUFD_CMD_VDEVICE_ALLOC),
            "IOMMU_VDEVICE_ALLOC"
        ),
        value!(
            "IOMMU_VEVENTQ_ALLOC",
            io(IOMMUFD_CMD_VEVENTQ_ALLOC),
            "IOMMU_VEVENTQ_ALLOC"
        ),
        value!(
            "IOMMU_HW_QUEUE_ALLOC",
            io(IOMMUFD_CMD_HW_QUEUE_ALLOC),
            "IOMMU_HW_QUEUE_ALLOC"
        ),
        value!(
            "NEST_PARENT",
            iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT,
            "IOMMU_HWPT_ALLOC_NEST_PARENT"
        ),
        value!(
            "MAP_FIXED_IOVA",
            iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
            "IOMMU_IOAS_MAP_FIXED_IOVA"
        ),
        value!(
            "MAP_READABLE",
            iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE,
            "IOMMU_IOAS_MAP_READABLE"
        ),
        value!(
            "MAP_WRITEABLE",
            iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
            "IOMMU_IOAS_MAP_WRITEABLE"
        ),
        value!(
            "HW_INFO_FLAG_INPUT_TYPE",
            iommufd_hw_info_flags_IOMMU_HW_INFO_FLAG_INPUT_TYPE,
            "IOMMU_HW_INFO_FLAG_INPUT_TYPE"
        ),
        value!(
            "HW_INFO_TYPE_ARM_SMMUV3",
            iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
            "IOMMU_HW_INFO_TYPE_ARM_SMMUV3"
        ),
        value!(
            "HW_INFO_TYPE_TEGRA241_CMDQV",
            iommu_hw_info_type_IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV,
            "IOMMU_HW_INFO_TYPE_TEGRA241_CMDQV"
        ),
        value!(
            "HWPT_DATA_ARM_SMMUV3",
            iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3,
            "IOMMU_HWPT_DATA_ARM_SMMUV3"
        ),
        value!(
            "VIOMMU_TYPE_ARM_SMMUV3",
            iommu_viommu_type_IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
            "IOMMU_VIOMMU_TYPE_ARM_SMMUV3"
        ),
        value!(
            "VIOMMU_TYPE_TEGRA241_CMDQV",
            iommu_viommu_type_IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV,
            "IOMMU_VIOMMU_TYPE_TEGRA241_CMDQV"
        ),
        value!(
            "INVALIDATE_DATA_ARM_SMMUV3",
            iommu_hwpt_invalidate_data_type_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3,
            "IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3"
        ),
        value!(
            "VEVENTQ_TYPE_ARM_SMMUV3",
            iommu_veventq_type_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
            "IOMMU_VEVENTQ_TYPE_ARM_SMMUV3"
        ),
        value!(
            "VEVENTQ_TYPE_TEGRA241_CMDQV",
            iommu_veventq_type_IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV,
            "IOMMU_VEVENTQ_TYPE_TEGRA241_CMDQV"
        ),
        value!(
            "VEVENTQ_FLAG_LOST_EVENTS",
            iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
            "IOMMU_VEVENTQ_FLAG_LOST_EVENTS"
        ),
        value!(
            "HW_QUEUE_TYPE_TEGRA241_CMDQV",
            iommu_hw_queue_type_IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV,
            "IOMMU_HW_QUEUE_TYPE_TEGRA241_CMDQV"
        ),
        // The selftest mock (iommufd_test.h, kernel-internal).
        value!("IOMMU_TEST_CMD", 0x3ba0u64, "IOMMU_TEST_CMD"),
        value!(
            "sizeof iommu_test_cmd",
            selftest::TEST_CMD_SIZE,
            "sizeof(struct iommu_test_cmd)"
        ),
        value!(
            "test_cmd.mock_domain",
            selftest::UNION,
            "offsetof(struct iommu_test_cmd, mock_domain.out_stdev_id)"
        ),
        value!(
            "test_cmd.out_hwpt_id",
            selftest::UNION + 4,
            "offsetof(struct iommu_test_cmd, mock_domain.out_hwpt_id)"
        ),
        value!(
            "test_cmd.out_idev_id",
            selftest::UNION + 8,
            "offsetof(struct iommu_test_cmd, mock_domain.out_idev_id)"
        ),
        value!(
            "test_cmd.replace.pt_id",
            selftest::UNION,
            "offsetof(struct iommu_test_cmd, mock_domain_replace.pt_id)"
        ),
        value!(
            "test_cmd.check_map.iova",
            selftest::UNION,
            "offsetof(struct iommu_test_cmd, check_map.iova)"
        ),
        value!(
            "test_cmd.check_map.length",
            selftest::UNION + 8,
            "offsetof(struct iommu_test_cmd, check_map.length)"
        ),
        value!(
            "test_cmd.check_map.uptr",
            selftest::UNION + 16,
            "offsetof(struct iommu_test_cmd, check_map.uptr)"
        ),
        value!(
            "test_cmd.check_dev_cache.id",
            selftest::UNION,
            "offsetof(struct iommu_test_cmd, check_dev_cache.id)"
        ),
        value!(
            "test_cmd.check_dev_cache.cache",
            selftest::UNION + 4,
            "offsetof(struct iommu_test_cmd, check_dev_cache.cache)"
        ),
        value!(
            "test_cmd.trigger_vevent.dev_id",
            selftest::UNION,
            "offsetof(struct iommu_test_cmd, trigger_vevent.dev_id)"
        ),
        value!(
            "OP_MOCK_DOMAIN",
            selftest::op::MOCK_DOMAIN,
            "IOMMU_TEST_OP_MOCK_DOMAIN"
        ),
        value!(
            "OP_MD_CHECK_MAP",
            selftest::op::MD_CHECK_MAP,
            "IOMMU_TEST_OP_MD_CHECK_MAP"
        ),
        value!(
            "OP_MOCK_DOMAIN_REPLACE",
            selftest::op::MOCK_DOMAIN_REPLACE,
            "IOMMU_TEST_OP_MOCK_DOMAIN_REPLACE"
        ),
        value!(
            "OP_DEV_CHECK_CACHE",
            selftest::op::DEV_CHECK_CACHE,
            "IOMMU_TEST_OP_DEV_CHECK_CACHE"
        ),
        value!(
            "OP_TRIGGER_VEVENT",
            selftest::op::TRIGGER_VEVENT,
            "IOMMU_TEST_OP_TRIGGER_VEVENT"
        ),
        value!(
            "HW_INFO_TYPE_SELFTEST",
            selftest::HW_INFO_TYPE_SELFTEST,
            "IOMMU_HW_INFO_TYPE_SELFTEST"
        ),
        value!(
            "HW_INFO_SELFTEST_REGVAL",
            selftest::HW_INFO_SELFTEST_REGVAL,
            "IOMMU_HW_INFO_SELFTEST_REGVAL"
        ),
        value!(
            "HWPT_DATA_SELFTEST",
            selftest::HWPT_DATA_SELFTEST,
            "IOMMU_HWPT_DATA_SELFTEST"
        ),
        value!(
            "sizeof iommu_hwpt_selftest",
            8,
            "sizeof(struct iommu_hwpt_selftest)"
        ),
        value!(
            "VIOMMU_TYPE_SELFTEST",
            selftest::VIOMMU_TYPE_SELFTEST,
            "IOMMU_VIOMMU_TYPE_SELFTEST"
        ),
        value!(
            "sizeof iommu_viommu_selftest",
            24,
            "sizeof(struct iommu_viommu_selftest)"
        ),
        value!(
            "viommu_selftest.out_mmap_offset",
            8,
            "offsetof(struct iommu_viommu_selftest, out_mmap_offset)"
        ),
        value!(
            "viommu_selftest.out_mmap_length",
            16,
            "offsetof(struct iommu_viommu_selftest, out_mmap_length)"
        ),
        value!(
            "VIOMMU_INVALIDATE_DATA_SELFTEST",
            selftest::VIOMMU_INVALIDATE_DATA_SELFTEST,
            "IOMMU_VIOMMU_INVALIDATE_DATA_SELFTEST"
        ),
        value!(
            "sizeof iommu_viommu_invalidate_selftest",
            selftest::VIOMMU_INVALIDATE_ENTRY,
            "sizeof(struct iommu_viommu_invalidate_selftest)"
        ),
        value!(
            "viommu_invalidate_selftest.vdev_id",
            4,
            "offsetof(struct iommu_viommu_invalidate_selftest, vdev_id)"
        ),
        value!(
            "viommu_invalidate_selftest.cache_id",
            8,
            "offsetof(struct iommu_viommu_invalidate_selftest, cache_id)"
        ),
        value!(
            "INVALIDATE_FLAG_ALL",
            selftest::INVALIDATE_FLAG_ALL,
            "IOMMU_TEST_INVALIDATE_FLAG_ALL"
        ),
        value!(
            "VEVENTQ_TYPE_SELFTEST",
            selftest::VEVENTQ_TYPE_SELFTEST,
            "IOMMU_VEVENTQ_TYPE_SELFTEST"
        ),
        value!(
            "sizeof iommu_viommu_event_selftest",
            4,
            "sizeof(struct iommu_viommu_event_selftest)"
        ),
        value!(
            "HW_QUEUE_TYPE_SELFTEST",
            selftest::HW_QUEUE_TYPE_SELFTEST,
            "IOMMU_HW_QUEUE_TYPE_SELFTEST"
        ),
        value!(
            "TEST_HW_QUEUE_MAX",
            selftest::HW_QUEUE_MAX,
            "IOMMU_TEST_HW_QUEUE_MAX"
        ),
        value!(
            "TEST_DEV_CACHE_DEFAULT",
            selftest::DEV_CACHE_DEFAULT,
            "IOMMU_TEST_DEV_CACHE_DEFAULT"
        ),
        value!(
            "MOCK_DEV_CACHE_ID_MAX",
            selftest::DEV_CACHE_ID_MAX,
            "MOCK_DEV_CACHE_ID_MAX"
        ),
        value!(
            "MOCK_APERTURE_START",
            selftest::MOCK_APERTURE.start,
            "MOCK_APERTURE_START"
        ),
        value!(
            "MOCK_APERTURE_LAST",
            selftest::MOCK_APERTURE.end - 1,
            "MOCK_APERTURE_LAST"
        ),
    ]
}

fn headers() -> (PathBuf, PathBuf) {
    let include = std::env::var_os("IOMMUFD_UAPI_INCLUDE").map(PathBuf::from);
    let test_h = std::env::var_os("IOMMUFD_TEST_H").map(PathBuf::from);
    match (include, test_h) {
        (Some(include), Some(test_h)) => (include, test_h),
        _ => panic!(
            "set IOMMUFD_UAPI_INCLUDE (scripts/uapi-headers.sh prints it) and IOMMUFD_TEST_H \
             (scripts/iommufd-mock/build-kernel.sh --test-header prints it); scripts/test.sh does both"
        ),
    }
}

#[test]
fn layouts_constants_and_ioctl_numbers_match_the_kernel_headers() {
    let (include, test_h) = headers();
    let dir = std::env::temp_dir().join(format!("iommufd-uapi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut c =
        String::from("#include <stddef.h>\n#include <stdio.h>\n#include <linux/iommufd.h>\n");
    c.push_str(&format!(
        "#include \"{}\"\nint main(void)\n{{\n",
        test_h.display()
    ));
    let rows = table();
    for (name, _, expr) in &rows {
        c.push_str(&format!(
            "\tprintf(\"%s=%llu\\n\", \"{name}\", (unsigned long long)({expr}));\n"
        ));
    }
    c.push_str("\treturn 0;\n}\n");
    let source = dir.join("uapi.c");
    let binary = dir.join("uapi");
    std::fs::write(&source, c).unwrap();
    let cc = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run cc");
    assert!(
        cc.status.success(),
        "the C side does not compile against {}: {}",
        include.display(),
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = Command::new(&binary).output().expect("run the C side");
    let text = String::from_utf8(out.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut mismatches = Vec::new();
    for ((name, ours, _), line) in rows.iter().zip(text.lines()) {
        let theirs: u64 = line
            .split_once('=')
            .and_then(|(_, v)| v.parse().ok())
            .expect("a NAME=VALUE line");
        if *ours != theirs {
            mismatches.push(format!("{name}: ours {ours:#x}, kernel {theirs:#x}"));
        }
    }
    assert_eq!(text.lines().count(), rows.len(), "one line per row");
    assert!(
        mismatches.is_empty(),
        "uAPI mismatches:\n{}",
        mismatches.join("\n")
    );
}
