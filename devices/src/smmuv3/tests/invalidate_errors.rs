//! Failed `IOMMU_HWPT_INVALIDATE` calls as the kernel reports them
//! (`arm_vsmmu_cache_invalidate`: host chunks of 63 commands, `entry_num`
//! on the refused command, or on the last command of a chunk whose host
//! CMD_SYNC timed out), and what the guest's CONS / CONS.ERR then say.

use super::*;
use crate::smmuv3::cmd::cerror;

/// A rig with a 256-entry command queue, ATS on, and device 8 behind it.
fn big_queue_rig() -> Rig {
    let mut rig = rig_with(VsmmuConfig {
        ats: crate::smmuv3::idr::HostChoice::On,
        ..VsmmuConfig::default()
    });
    rig.cmdq_log2size = 8;
    rig.device(8);
    rig.enable();
    rig
}

fn tlbis(n: u64) -> Vec<Command> {
    (0..n)
        .map(|i| cmd(Opcode::TlbiNhVa, 1 << 16, 0x1000 * i))
        .collect()
}

/// Acknowledge the command queue error as Linux does (GERRORN = GERROR).
fn acknowledge(rig: &mut Rig) {
    let gerror = rig.reg(Reg::Gerror);
    rig.set(Reg::Gerrorn, gerror);
}

#[test]
fn a_command_refused_in_the_second_host_chunk_stops_the_queue_on_it() {
    let mut rig = big_queue_rig();
    rig.device_lost_by_host(9);
    let mut batch = tlbis(70);
    batch[65] = cmd(Opcode::CfgiCd, 9, 0);
    batch.push(sync());
    rig.submit(&batch);
    // Chunk 0..63 ran; 63 and 64 were converted, not issued: sent again.
    assert_eq!(
        rig.calls(),
        [
            "invalidate entries=70 ok=65 issued=63 err=EIO",
            "invalidate entries=2 ok=2"
        ]
    );
    assert_eq!(rig.cons(), (65, u64::from(cerror::ILL)));
    assert_eq!(rig.irqs(), ["gerror"]);
}

#[test]
fn an_atc_sync_timeout_stops_on_the_guests_cmd_sync_with_atc_inv_sync() {
    let mut rig = big_queue_rig();
    rig.backend.set_atc_unresponsive(8, true);
    let mut batch = tlbis(100);
    batch[10] = cmd(Opcode::AtcInv, 8, 0);
    batch.push(sync());
    rig.submit(&batch);
    // entry_num = 62 names the first chunk's last command, not the ATC_INV
    // at 10: nothing in the batch is refused, the 37 commands after the
    // chunk still go to the host, and the CMD_SYNC (entry 100) that waits
    // for the ATC invalidation reports it, as the hardware would.
    assert_eq!(
        rig.calls(),
        [
            "invalidate entries=100 ok=62 issued=63 err=ETIMEDOUT",
            "invalidate entries=37 ok=37"
        ]
    );
    assert_eq!(rig.cons(), (100, u64::from(cerror::ATC_INV_SYNC)));
    assert_eq!(rig.irqs(), ["gerror"]);
    // Linux's arm_smmu_cmdq_skip_err leaves an ATC_INV_SYNC entry alone
    // and acknowledges: the CMD_SYNC runs again and completes.
    rig.backend.set_atc_unresponsive(8, false);
    acknowledge(&mut rig);
    assert!(!rig.cmdq_err_active());
    assert_eq!(rig.cons(), (101, u64::from(cerror::NONE)));
    assert!(rig.calls().is_empty(), "nothing is sent twice");
}

#[test]
fn a_timeout_in_a_consume_without_cmd_sync_is_reported_by_the_next_one() {
    let mut rig = big_queue_rig();
    rig.backend.set_atc_unresponsive(8, true);
    rig.submit(&[cmd(Opcode::AtcInv, 8, 0), cmd(Opcode::TlbiNhAll, 0, 0)]);
    assert_eq!(
        rig.calls(),
        ["invalidate entries=2 ok=1 issued=2 err=ETIMEDOUT"],
        "one short chunk, issued whole"
    );
    assert_eq!(rig.cons(), (2, u64::from(cerror::NONE)), "no CMD_SYNC yet");
    rig.backend.set_atc_unresponsive(8, false);
    rig.submit(&[sync()]);
    assert_eq!(rig.cons(), (2, u64::from(cerror::ATC_INV_SYNC)));
    acknowledge(&mut rig);
    assert_eq!(rig.cons(), (3, u64::from(cerror::NONE)));
}

#[test]
fn a_refused_command_after_a_timed_out_chunk_stops_there_and_the_timeout_waits() {
    let mut rig = big_queue_rig();
    rig.device_lost_by_host(9);
    rig.backend.set_atc_unresponsive(8, true);
    let mut batch = tlbis(70);
    batch[0] = cmd(Opcode::AtcInv, 8, 0);
    batch[66] = cmd(Opcode::CfgiCd, 9, 0);
    batch.push(sync());
    rig.submit(&batch);
    assert_eq!(
        rig.calls(),
        [
            "invalidate entries=70 ok=62 issued=63 err=ETIMEDOUT",
            "invalidate entries=7 ok=3 issued=0 err=EIO",
            "invalidate entries=3 ok=3"
        ]
    );
    assert_eq!(
        rig.cons(),
        (66, u64::from(cerror::ILL)),
        "the refusal first"
    );
    // The guest replaces the refused entry with a CMD_SYNC (Linux's
    // skip_err): that CMD_SYNC waits for the timed-out ATC invalidation.
    rig.backend.set_atc_unresponsive(8, false);
    rig.mem
        .write_obj(sync().0[0], GuestAddress(CMDQ + 66 * 16))
        .unwrap();
    acknowledge(&mut rig);
    assert_eq!(rig.cons(), (66, u64::from(cerror::ATC_INV_SYNC)));
    acknowledge(&mut rig);
    assert_eq!(rig.cons(), (71, u64::from(cerror::NONE)));
    assert_eq!(rig.calls(), ["invalidate entries=3 ok=3"]);
}

#[test]
fn other_host_errors_stop_the_queue_where_the_kernel_stopped() {
    use crate::backend::{BackendError, Errno};
    use crate::smmuv3::{InvalidateError, InvalidateOutcome};
    let efault = InvalidateError {
        done: 0,
        error: BackendError::new(Errno::Fault, "cannot copy the array"),
    };
    assert_eq!(efault.outcome(5), InvalidateOutcome::Failed { at: 0 });
    let past_the_end = InvalidateError {
        done: 9,
        error: BackendError::new(Errno::TimedOut, "sync"),
    };
    assert_eq!(
        past_the_end.outcome(5),
        InvalidateOutcome::SyncTimedOut { last: 4 },
        "a backend claiming more than it was given stopped on the last"
    );
}
