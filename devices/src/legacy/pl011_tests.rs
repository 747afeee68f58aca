use std::io;
use std::sync::Mutex;

use super::*;

/// Records every level change of every line.
#[derive(Default)]
struct Levels(Mutex<Vec<(IrqLine, bool)>>);

impl InterruptSink for Levels {
    fn trigger(&self, line: IrqLine) {
        panic!("{} is level-triggered, got an edge", line.name());
    }
    fn set_level(&self, line: IrqLine, asserted: bool) {
        self.0.lock().unwrap().push((line, asserted));
    }
    fn msi(&self, _addr: u64, _data: u32) {
        panic!("no MSI from a PL011");
    }
}

/// Output sink that records bytes and flushes.
#[derive(Clone, Default)]
struct Out {
    bytes: Arc<Mutex<Vec<u8>>>,
    flushes: Arc<Mutex<usize>>,
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        *self.flushes.lock().unwrap() += 1;
        Ok(())
    }
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("gone"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Err(io::Error::other("gone"))
    }
}

struct Rig {
    uart: Pl011,
    out: Out,
    levels: Arc<Levels>,
}

fn rig() -> Rig {
    let out = Out::default();
    let levels = Arc::new(Levels::default());
    let uart = Pl011::new(Box::new(out.clone()), levels.clone());
    Rig { uart, out, levels }
}

impl Rig {
    fn r32(&mut self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.uart.read(offset, &mut b);
        u32::from_le_bytes(b)
    }
    fn w32(&mut self, offset: u64, value: u32) {
        self.uart.write(offset, &value.to_le_bytes());
    }
    fn line(&self) -> Option<bool> {
        self.levels.0.lock().unwrap().last().map(|(_, l)| *l)
    }
    fn level_changes(&self) -> usize {
        self.levels.0.lock().unwrap().len()
    }
}

const TXIM: u32 = 1 << 5;
const RXIM: u32 = 1 << 4;
const RTIM: u32 = 1 << 6;
const OEIM: u32 = 1 << 10;
const FEN: u32 = 1 << 4;

#[test]
fn reset_values_match_the_trm() {
    let mut r = rig();
    assert_eq!(r.r32(CR.offset), 0x0300);
    assert_eq!(r.r32(IFLS.offset), 0x12);
    assert_eq!(r.r32(FR.offset), 0x90, "TXFE | RXFE");
    for reg in [RSR_ECR, ILPR, IBRD, FBRD, LCR_H, IMSC, MIS, DMACR] {
        assert_eq!(r.r32(reg.offset), 0, "{}", reg.name);
    }
    // TX is enabled at reset, so TXIS is raw-pending but masked.
    assert_eq!(r.r32(RIS.offset), TXIM);
    assert_eq!(r.line(), None, "line never driven while masked");
}

#[test]
fn identification_registers_say_pl011_r1p5_primecell() {
    let mut r = rig();
    let ids: Vec<u32> = (0..8).map(|i| r.r32(0xfe0 + 4 * i)).collect();
    assert_eq!(ids, [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    r.w32(0xfe0, 0xff);
    assert_eq!(r.r32(0xfe0), 0x11, "ID registers are read-only");
}

#[test]
fn writable_registers_keep_only_their_writable_bits() {
    let mut r = rig();
    for (reg, mask) in [
        (ILPR, 0xff),
        (IBRD, 0xffff),
        (FBRD, 0x3f),
        (LCR_H, 0xff),
        (CR, 0xff87),
        (IFLS, 0x3f),
        (IMSC, 0x7ff),
        (DMACR, 0x7),
    ] {
        r.w32(reg.offset, u32::MAX);
        assert_eq!(r.r32(reg.offset), mask, "{}", reg.name);
        r.w32(reg.offset, 0);
        assert_eq!(r.r32(reg.offset), 0, "{}", reg.name);
    }
}

#[test]
fn status_registers_ignore_writes() {
    let mut r = rig();
    r.w32(FR.offset, 0);
    r.w32(RIS.offset, 0);
    r.w32(MIS.offset, 0xffff);
    assert_eq!(r.r32(FR.offset), 0x90);
    assert_eq!(r.r32(RIS.offset), TXIM);
    assert_eq!(r.r32(MIS.offset), 0);
    assert_eq!(r.r32(ICR.offset), 0, "ICR is write-only");
}

#[test]
fn characters_written_to_dr_reach_the_sink_flushed_each() {
    let mut r = rig();
    for &b in b"ok\n" {
        r.w32(DR.offset, u32::from(b) | 0xff00);
    }
    assert_eq!(r.out.bytes.lock().unwrap().as_slice(), b"ok\n");
    assert_eq!(*r.out.flushes.lock().unwrap(), 3);
    assert_eq!(r.r32(FR.offset) & 0xa8, 0x80, "TXFE, never TXFF or BUSY");
}

#[test]
fn byte_and_halfword_accesses_hit_the_right_lanes() {
    let mut r = rig();
    r.uart.write(DR.offset, b"A");
    r.uart.write(DR.offset + 1, b"B");
    assert_eq!(
        r.out.bytes.lock().unwrap().as_slice(),
        b"A",
        "only DR's low byte transmits"
    );
    r.w32(IBRD.offset, 0x1234);
    let mut b = [0u8; 1];
    r.uart.read(IBRD.offset + 1, &mut b);
    assert_eq!(b, [0x12]);
    r.uart.write(CR.offset + 1, &[0x01]);
    assert_eq!(r.r32(CR.offset), 0x0100, "merged into the upper byte only");
    let mut h = [0u8; 2];
    r.uart.read(CR.offset, &mut h);
    assert_eq!(u16::from_le_bytes(h), 0x0100);
}

#[test]
fn unknown_offsets_and_bad_sizes_read_zero_and_ignore_writes() {
    let mut r = rig();
    r.queue_and_check(b"x");
    for offset in [0x008, 0x01c, 0x04c, 0x100, 0xfdc, 0x1000, u64::MAX] {
        assert_eq!(r.r32(offset), 0, "{offset:#x}");
        r.w32(offset, u32::MAX);
    }
    let mut wide = [0xaau8; 8];
    r.uart.read(DR.offset, &mut wide);
    assert_eq!(wide, [0; 8]);
    let mut straddle = [0xaau8; 4];
    r.uart.read(CR.offset + 2, &mut straddle);
    assert_eq!(straddle, [0; 4]);
    r.uart.write(CR.offset + 2, &[0xff; 4]);
    assert_eq!(r.r32(CR.offset), 0x0300);
    assert_eq!(r.uart.rx_free(), RX_FIFO_DEPTH - 1, "bad reads pop nothing");
    assert_eq!(r.r32(DR.offset), u32::from(b'x'));
}

impl Rig {
    fn queue_and_check(&mut self, bytes: &[u8]) {
        assert_eq!(self.uart.queue_input(bytes), bytes.len());
    }
}

#[test]
fn received_characters_come_out_of_dr_in_order() {
    let mut r = rig();
    r.queue_and_check(b"hi");
    assert_eq!(r.r32(FR.offset) & 0x50, 0, "neither RXFE nor RXFF");
    assert_eq!(r.r32(DR.offset), u32::from(b'h'));
    assert_eq!(r.r32(DR.offset), u32::from(b'i'));
    assert_eq!(r.r32(FR.offset) & 0x10, 0x10, "RXFE");
    assert_eq!(r.r32(DR.offset), 0, "empty FIFO reads 0");
}

#[test]
fn rx_fifo_holds_32_then_overruns_with_oe_everywhere() {
    let mut r = rig();
    r.w32(IMSC.offset, OEIM);
    let input: Vec<u8> = (0..40).collect();
    assert_eq!(r.uart.queue_input(&input), 32);
    assert_eq!(r.uart.rx_free(), 0);
    assert_eq!(r.r32(FR.offset) & 0x40, 0x40, "RXFF");
    assert_eq!(r.r32(RSR_ECR.offset), 0x8, "RSR.OE");
    assert_eq!(r.r32(RIS.offset) & OEIM, OEIM);
    assert_eq!(r.line(), Some(true));
    for expected in 0..31u32 {
        assert_eq!(r.r32(DR.offset), expected);
    }
    assert_eq!(
        r.r32(DR.offset),
        31 | 1 << 11,
        "newest kept char carries OE"
    );
    r.w32(RSR_ECR.offset, 0);
    assert_eq!(r.r32(RSR_ECR.offset), 0, "ECR write clears RSR");
    assert_eq!(r.line(), Some(true), "OEIS latched until ICR");
    r.w32(ICR.offset, OEIM);
    assert_eq!(r.r32(RIS.offset) & OEIM, 0);
    assert_eq!(r.line(), Some(false));
}

#[test]
fn rx_interrupt_follows_fifo_level_and_timeout() {
    let mut r = rig();
    r.w32(IMSC.offset, RXIM | RTIM);
    // FIFOs off: one character is enough for RXIS.
    r.queue_and_check(b"a");
    assert_eq!(r.r32(RIS.offset) & (RXIM | RTIM), RXIM | RTIM);
    assert_eq!(r.line(), Some(true));
    r.r32(DR.offset);
    assert_eq!(r.line(), Some(false), "draining lowers the line");

    // FIFOs on, RX level 1/8 (4 characters).
    r.w32(LCR_H.offset, FEN);
    r.w32(IFLS.offset, 0);
    r.queue_and_check(b"abc");
    assert_eq!(
        r.r32(RIS.offset) & (RXIM | RTIM),
        RTIM,
        "below level: timeout only"
    );
    r.w32(ICR.offset, RTIM);
    assert_eq!(r.line(), Some(false), "RTIC acks the timeout");
    r.queue_and_check(b"d");
    assert_eq!(r.r32(RIS.offset) & (RXIM | RTIM), RXIM | RTIM);
    assert_eq!(r.line(), Some(true));
    r.w32(ICR.offset, RXIM | RTIM);
    assert_eq!(r.r32(RIS.offset) & RXIM, RXIM, "RXIS stays while at level");
    for _ in 0..4 {
        r.r32(DR.offset);
    }
    assert_eq!(r.line(), Some(false));
}

#[test]
fn rx_trigger_levels_follow_ifls() {
    let mut r = rig();
    r.w32(LCR_H.offset, FEN);
    for (sel, level) in [(0u32, 4usize), (1, 8), (2, 16), (3, 24), (4, 28), (7, 16)] {
        r.w32(IFLS.offset, sel << 3);
        assert_eq!(r.uart.rx_trigger(), level, "RXIFLSEL {sel}");
    }
}

#[test]
fn tx_interrupt_is_up_while_tx_is_enabled_until_acked_then_back_on_write() {
    let mut r = rig();
    r.w32(IMSC.offset, TXIM);
    assert_eq!(r.line(), Some(true), "an empty TX FIFO asks for data");
    r.w32(ICR.offset, TXIM);
    assert_eq!(r.line(), Some(false));
    r.w32(DR.offset, u32::from(b'x'));
    assert_eq!(r.line(), Some(true), "the next character re-arms TXIS");
    r.w32(CR.offset, 0x0200);
    assert_eq!(r.r32(RIS.offset) & TXIM, 0, "no TXIS with TXE clear");
    assert_eq!(r.line(), Some(false));
}

#[test]
fn linux_tx_path_never_stalls() {
    // pl011_start_tx_pio(): write while !TXFF, then enable TXIM only if
    // characters remain; the IRQ handler never writes ICR.TXIC.
    let mut r = rig();
    r.w32(CR.offset, 0x0301);
    let mut pending: Vec<u8> = b"a long line of console output\n".to_vec();
    while !pending.is_empty() && r.r32(FR.offset) & 0x20 == 0 {
        r.w32(DR.offset, u32::from(pending.remove(0)));
    }
    assert!(pending.is_empty(), "TXFF never stops the driver");
    // Even if a driver unmasks TXIM and waits, the line is up.
    r.w32(IMSC.offset, TXIM | RXIM | RTIM);
    assert_eq!(r.line(), Some(true));
    // pl011_int() acks everything except TX/RX/RT; TXIS must survive.
    r.w32(ICR.offset, 0x7ff & !(TXIM | RXIM | RTIM));
    assert_eq!(r.r32(MIS.offset), TXIM);
    // pl011_stop_tx() masks TXIM: that is what lowers the line.
    r.w32(IMSC.offset, RXIM | RTIM);
    assert_eq!(r.line(), Some(false));
}

#[test]
fn line_is_driven_only_on_changes() {
    let mut r = rig();
    r.w32(IMSC.offset, TXIM);
    r.w32(DR.offset, u32::from(b'a'));
    r.w32(DR.offset, u32::from(b'b'));
    r.r32(RIS.offset);
    assert_eq!(r.level_changes(), 1);
    r.w32(IMSC.offset, 0);
    r.w32(IMSC.offset, 0);
    assert_eq!(r.level_changes(), 2);
    assert!(
        r.levels
            .0
            .lock()
            .unwrap()
            .iter()
            .all(|(line, _)| *line == IrqLine::Uart)
    );
}

#[test]
fn loopback_turns_transmitted_characters_into_received_ones() {
    let mut r = rig();
    r.w32(CR.offset, 0x0381);
    r.w32(DR.offset, u32::from(b'z'));
    assert!(r.out.bytes.lock().unwrap().is_empty());
    assert_eq!(r.r32(DR.offset), u32::from(b'z'));
}

#[test]
fn a_failing_sink_drops_output_without_panicking() {
    let mut uart = Pl011::new(Box::new(Broken), Arc::new(Levels::default()));
    uart.write(DR.offset, b"a");
    uart.write(DR.offset, b"b");
    let mut fr = [0u8; 4];
    uart.read(FR.offset, &mut fr);
    assert_eq!(u32::from_le_bytes(fr), 0x90);
}

#[test]
fn mmio_trait_uses_offsets_within_the_window() {
    let mut r = rig();
    r.uart
        .mmio_write(MmioAddress(0x0900_0000), DR.offset, &[b'q', 0, 0, 0]);
    let mut id = [0u8; 4];
    r.uart.mmio_read(MmioAddress(0x0900_0000), 0xff0, &mut id);
    assert_eq!(id[0], 0x0d);
    assert_eq!(r.out.bytes.lock().unwrap().as_slice(), b"q");
}
