//! ARM PrimeCell UART (PL011, r1p5) model: the guest console.
//!
//! The guest finds it through the DSDT (`ARMH0011`, driven by Linux's
//! `sbsa-uart` half of drivers/tty/serial/amba-pl011.c) and the SPCR
//! (earlycon). Offsets are relative to the 4 KiB window; the register map
//! and reset values are those of the PL011 TRM (ARM DDI 0183G) section 3.
//!
//! Implemented:
//! - DR, RSR/ECR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR,
//!   DMACR, and the PeriphID0-3 / PCellID0-3 identification registers that
//!   identify a pl011 r1p5 (what `amba_device` probing reads);
//! - transmit: a byte written to DR goes straight to the output sink
//!   (flushed per byte, so prompts without a newline show up), or into the
//!   RX FIFO when CR.LBE (loopback) is set. The TX "FIFO" drains instantly:
//!   FR.TXFE = 1, TXFF = BUSY = 0;
//! - receive: [`Pl011::queue_input`] fills a 32-entry RX FIFO; overflow drops
//!   the byte, sets RSR.OE, RIS.OEIS and the OE flag (DR bit 11) of the
//!   newest queued character;
//! - interrupts, level-high on [`IrqLine::Uart`]: the line is asserted while
//!   `RIS & IMSC != 0`, recomputed after every access and input, and driven
//!   only on change. RXIS follows the FIFO level against IFLS (one character
//!   when LCR_H.FEN is clear), RTIS is set while the FIFO is not empty until
//!   ICR.RTIC (and again on the next character), TXIS is set while CR.TXE is
//!   set except between an ICR.TXIC and the next DR write, OEIS latches until
//!   ICR.OEIC.
//!
//! Why TXIS is like that: Linux's `pl011_tx_chars()` writes characters while
//! FR.TXFF is clear and enables TXIM only when the FIFO filled up; its
//! interrupt handler never acks TXIS (it masks TXIS/RXIS/RTIS out of the ICR
//! write) and relies on the FIFO level to drop it. A TX FIFO that is always
//! empty therefore keeps TXIS up, so a driver that unmasks TXIM and waits is
//! always called back, and `pl011_stop_tx()` masking TXIM is what lowers
//! the line.
//!
//! Deliberately not implemented: baud-rate timing (IBRD/FBRD/LCR_H are
//! stored only), FIFO disable shrinking the RX FIFO to one entry (the
//! `sbsa-uart` driver never sets LCR_H.FEN and no firmware runs before the
//! kernel, so the FIFO stays 32 deep; only the RX interrupt level follows
//! FEN), CR.UARTEN/RXE gating (with no firmware, `sbsa-uart` would otherwise
//! never see an enabled UART), modem lines (FR.CTS/DSR/DCD/RI read 0,
//! their interrupts never rise), framing/parity/break errors, IrDA, DMA
//! (DMACR is stored only). Accesses wider than 4 bytes or crossing a 32-bit
//! register read as zero and are ignored.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use vm_device::MutDeviceMmio;
use vm_device::bus::{MmioAddress, MmioAddressOffset};

use crate::irq::{InterruptSink, IrqLine};
use crate::regs::{Access, Field, Register, extract_read, merge_write};

/// Log target of this model's trace points.
const LOG_TARGET: &str = "pl011";

/// Data register: received / transmitted character + receive error flags.
pub const DR: Register = Register::r32(0x000, "UARTDR", Access::Rw, 0xff);
/// Receive status (read) / error clear (write).
pub const RSR_ECR: Register = Register::r32(0x004, "UARTRSR_ECR", Access::Rw, 0);
/// Flag register.
pub const FR: Register = Register::r32(0x018, "UARTFR", Access::Ro, 0);
/// IrDA low-power counter.
pub const ILPR: Register = Register::r32(0x020, "UARTILPR", Access::Rw, 0xff);
/// Integer baud rate divisor.
pub const IBRD: Register = Register::r32(0x024, "UARTIBRD", Access::Rw, 0xffff);
/// Fractional baud rate divisor.
pub const FBRD: Register = Register::r32(0x028, "UARTFBRD", Access::Rw, 0x3f);
/// Line control.
pub const LCR_H: Register = Register::r32(0x02c, "UARTLCR_H", Access::Rw, 0xff);
/// Control: bits 6:3 are reserved.
pub const CR: Register = Register::r32(0x030, "UARTCR", Access::Rw, 0xff87);
/// Interrupt FIFO level select.
pub const IFLS: Register = Register::r32(0x034, "UARTIFLS", Access::Rw, 0x3f);
/// Interrupt mask set/clear (1 = enabled).
pub const IMSC: Register = Register::r32(0x038, "UARTIMSC", Access::Rw, INT_ALL);
/// Raw interrupt status.
pub const RIS: Register = Register::r32(0x03c, "UARTRIS", Access::Ro, 0);
/// Masked interrupt status.
pub const MIS: Register = Register::r32(0x040, "UARTMIS", Access::Ro, 0);
/// Interrupt clear (write 1 to clear).
pub const ICR: Register = Register::r32(0x044, "UARTICR", Access::Rw, INT_ALL);
/// DMA control.
pub const DMACR: Register = Register::r32(0x048, "UARTDMACR", Access::Rw, 0x7);
/// First identification register (PeriphID0); PeriphID0-3 and PCellID0-3
/// follow at 4-byte steps.
pub const ID_BASE: u64 = 0xfe0;

/// PeriphID0-3: part number 0x011, designer 0x41 (ARM), revision 3 (r1p5),
/// configuration 0 (TRM table 3-1).
pub const PERIPH_ID: [u8; 4] = [0x11, 0x10, 0x34, 0x00];
/// PCellID0-3: the PrimeCell identification 0xB105F00D.
pub const PCELL_ID: [u8; 4] = [0x0d, 0xf0, 0x05, 0xb1];

/// Every register with a declaration (the ID registers are handled apart).
const REGISTERS: [Register; 14] = [
    DR, RSR_ECR, FR, ILPR, IBRD, FBRD, LCR_H, CR, IFLS, IMSC, RIS, MIS, ICR, DMACR,
];

/// Interrupt bits of RIS/MIS/IMSC/ICR (TRM 3.3.13-3.3.16).
pub mod int {
    use crate::regs::Field;
    /// Receive (FIFO at or above the trigger level).
    pub const RX: Field = Field::bit(4);
    /// Transmit (FIFO at or below the trigger level).
    pub const TX: Field = Field::bit(5);
    /// Receive timeout.
    pub const RT: Field = Field::bit(6);
    /// Overrun error.
    pub const OE: Field = Field::bit(10);
}
/// All 11 interrupt bits (modem RI/CTS/DCD/DSR, RX, TX, RT, FE, PE, BE, OE).
const INT_ALL: u64 = 0x7ff;

/// FR bits (TRM 3.3.3).
pub mod flag {
    use crate::regs::Field;
    /// UART busy transmitting.
    pub const BUSY: Field = Field::bit(3);
    /// Receive FIFO empty.
    pub const RXFE: Field = Field::bit(4);
    /// Transmit FIFO full.
    pub const TXFF: Field = Field::bit(5);
    /// Receive FIFO full.
    pub const RXFF: Field = Field::bit(6);
    /// Transmit FIFO empty.
    pub const TXFE: Field = Field::bit(7);
}

/// Overrun flag in RSR (bit 3) and, shifted by 8, in DR (bit 11).
const RSR_OE: Field = Field::bit(3);
/// DR's error flags sit above the character.
const DR_FLAGS_SHIFT: u32 = 8;
/// LCR_H.FEN: FIFOs enabled.
const LCR_H_FEN: Field = Field::bit(4);
/// CR.LBE: loopback.
const CR_LBE: Field = Field::bit(7);
/// CR.TXE: transmit enable.
const CR_TXE: Field = Field::bit(8);
/// IFLS.RXIFLSEL: receive interrupt FIFO level.
const IFLS_RX: Field = Field::new(3, 3);

/// Receive FIFO depth of the PL011.
pub const RX_FIFO_DEPTH: usize = 32;
/// CR reset value: TXE and RXE set, UART disabled.
const CR_RESET: u32 = 0x0300;
/// IFLS reset value: both trigger levels at 1/2.
const IFLS_RESET: u32 = 0x12;

/// The PL011 model.
pub struct Pl011 {
    out: Box<dyn Write + Send>,
    irq: Arc<dyn InterruptSink>,
    /// Received characters: byte | error flags << 8.
    rx: VecDeque<u16>,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Interrupts latched until cleared through ICR (OE).
    latched: u32,
    /// ICR.TXIC written since the last DR write.
    tx_acked: bool,
    /// ICR.RTIC written since the last received character.
    rt_acked: bool,
    /// Level last driven on the interrupt line.
    level: bool,
    /// The sink failed once; further failures are not logged.
    out_failed: bool,
}

impl Pl011 {
    /// A UART in its reset state writing to `out` and interrupting on
    /// [`IrqLine::Uart`] of `irq`.
    pub fn new(out: Box<dyn Write + Send>, irq: Arc<dyn InterruptSink>) -> Self {
        Pl011 {
            out,
            irq,
            rx: VecDeque::with_capacity(RX_FIFO_DEPTH),
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
            latched: 0,
            tx_acked: false,
            rt_acked: false,
            level: false,
            out_failed: false,
        }
    }

    /// Free entries in the RX FIFO (for a caller that prefers to hold input
    /// back rather than overrun).
    pub fn rx_free(&self) -> usize {
        RX_FIFO_DEPTH - self.rx.len()
    }

    /// Receive `bytes` from the host side; returns how many were queued
    /// (the rest overran and were dropped).
    pub fn queue_input(&mut self, bytes: &[u8]) -> usize {
        let queued = bytes.iter().take_while(|&&b| self.receive(b)).count();
        if queued < bytes.len() {
            log::debug!(target: LOG_TARGET, "rx overrun: dropped {} bytes", bytes.len() - queued);
        }
        self.update_irq();
        queued
    }

    /// Put one character into the RX FIFO; false on overrun.
    fn receive(&mut self, byte: u8) -> bool {
        if self.rx.len() >= RX_FIFO_DEPTH {
            self.rsr |= RSR_OE.mask() as u32;
            self.latched |= int::OE.mask() as u32;
            if let Some(newest) = self.rx.back_mut() {
                *newest |= (RSR_OE.mask() << DR_FLAGS_SHIFT) as u16;
            }
            return false;
        }
        self.rx.push_back(u16::from(byte));
        self.rt_acked = false;
        true
    }

    /// The RX FIFO level at which RXIS rises (IFLS.RXIFLSEL, TRM 3.3.12).
    fn rx_trigger(&self) -> usize {
        if !LCR_H_FEN.is_set(u64::from(self.lcr_h)) {
            return 1;
        }
        match IFLS_RX.get(u64::from(self.ifls)) {
            0 => RX_FIFO_DEPTH / 8,
            1 => RX_FIFO_DEPTH / 4,
            3 => RX_FIFO_DEPTH * 3 / 4,
            4 => RX_FIFO_DEPTH * 7 / 8,
            // 2 is 1/2; 5-7 are reserved, treated as the reset value.
            _ => RX_FIFO_DEPTH / 2,
        }
    }

    /// Raw interrupt status.
    fn ris(&self) -> u32 {
        let mut ris = u64::from(self.latched);
        if self.rx.len() >= self.rx_trigger() {
            ris |= int::RX.mask();
        }
        if !self.rx.is_empty() && !self.rt_acked {
            ris |= int::RT.mask();
        }
        if CR_TXE.is_set(u64::from(self.cr)) && !self.tx_acked {
            ris |= int::TX.mask();
        }
        ris as u32
    }

    fn flags(&self) -> u32 {
        let mut fr = flag::TXFE.mask();
        if self.rx.is_empty() {
            fr |= flag::RXFE.mask();
        }
        if self.rx.len() >= RX_FIFO_DEPTH {
            fr |= flag::RXFF.mask();
        }
        fr as u32
    }

    /// Drive the line to `RIS & IMSC != 0` when that changed.
    fn update_irq(&mut self) {
        let level = self.ris() & self.imsc != 0;
        if level != self.level {
            self.level = level;
            log::trace!(target: LOG_TARGET, "irq level {}", u8::from(level));
            self.irq.set_level(IrqLine::Uart, level);
        }
    }

    fn transmit(&mut self, byte: u8) {
        self.tx_acked = false;
        if CR_LBE.is_set(u64::from(self.cr)) {
            self.receive(byte);
            return;
        }
        let result = self.out.write_all(&[byte]).and_then(|()| self.out.flush());
        if let Err(e) = result {
            if !self.out_failed {
                log::warn!(target: LOG_TARGET, "console output failed, dropping bytes: {e}");
                self.out_failed = true;
            }
        }
    }

    /// Read a register (the whole 32-bit value), with its side effects.
    fn read_reg(&mut self, reg: Register) -> u32 {
        match reg.offset {
            o if o == DR.offset => match self.rx.pop_front() {
                Some(entry) => {
                    // RSR holds the errors of the character last read; OE
                    // stays until ECR is written.
                    self.rsr |= u32::from(entry >> DR_FLAGS_SHIFT);
                    u32::from(entry)
                }
                None => 0,
            },
            o if o == RSR_ECR.offset => self.rsr,
            o if o == FR.offset => self.flags(),
            o if o == RIS.offset => self.ris(),
            o if o == MIS.offset => self.ris() & self.imsc,
            // Plain storage registers; ICR is write-only and reads 0.
            _ => self.stored(reg),
        }
    }

    /// The stored value of a plain register (0 for the others): what a read
    /// returns and what a sub-word write merges into.
    fn stored(&self, reg: Register) -> u32 {
        match reg.offset {
            o if o == ILPR.offset => self.ilpr,
            o if o == IBRD.offset => self.ibrd,
            o if o == FBRD.offset => self.fbrd,
            o if o == LCR_H.offset => self.lcr_h,
            o if o == CR.offset => self.cr,
            o if o == IFLS.offset => self.ifls,
            o if o == IMSC.offset => self.imsc,
            o if o == DMACR.offset => self.dmacr,
            _ => 0,
        }
    }

    /// Write a register (the merged 32-bit value), with its side effects.
    fn write_reg(&mut self, reg: Register, value: u32) {
        let masked = reg.apply_write(0, u64::from(value)) as u32;
        match reg.offset {
            o if o == DR.offset => self.transmit(masked as u8),
            o if o == RSR_ECR.offset => self.rsr = 0,
            o if o == ILPR.offset => self.ilpr = masked,
            o if o == IBRD.offset => self.ibrd = masked,
            o if o == FBRD.offset => self.fbrd = masked,
            o if o == LCR_H.offset => self.lcr_h = masked,
            o if o == CR.offset => self.cr = masked,
            o if o == IFLS.offset => self.ifls = masked,
            o if o == IMSC.offset => self.imsc = masked,
            o if o == ICR.offset => {
                self.latched &= !masked;
                if int::TX.is_set(u64::from(masked)) {
                    self.tx_acked = true;
                }
                if int::RT.is_set(u64::from(masked)) {
                    self.rt_acked = true;
                }
            }
            o if o == DMACR.offset => self.dmacr = masked,
            _ => {}
        }
    }

    /// Guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let word = offset & !3;
        if !fits_word(offset, data.len()) {
            log::debug!(target: LOG_TARGET, "bad read of {} bytes at {offset:#x}", data.len());
            return;
        }
        let value = if (ID_BASE..ID_BASE + 32).contains(&word) {
            let index = ((word - ID_BASE) / 4) as usize;
            let id = PERIPH_ID.iter().chain(PCELL_ID.iter()).nth(index);
            id.copied().map_or(0, u32::from)
        } else if let Some(reg) = REGISTERS.iter().find(|r| r.offset == word) {
            self.read_reg(*reg)
        } else {
            log::debug!(target: LOG_TARGET, "read of unknown offset {offset:#x}");
            return;
        };
        extract_read(u64::from(value), 4, offset - word, data);
        self.update_irq();
    }

    /// Guest write of `data` at `offset` in the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let word = offset & !3;
        let Some(reg) = REGISTERS.iter().find(|r| r.offset == word).copied() else {
            log::debug!(target: LOG_TARGET, "write to unknown offset {offset:#x} ignored");
            return;
        };
        // A character is only what lands in DR's low byte.
        if reg.access != Access::Rw || (reg == DR && offset != word) {
            return;
        }
        let Some(value) = merge_write(u64::from(self.stored(reg)), 4, offset - word, data) else {
            log::debug!(target: LOG_TARGET, "bad write of {} bytes at {offset:#x}", data.len());
            return;
        };
        log::trace!(target: LOG_TARGET, "write {} = {value:#x}", reg.name);
        self.write_reg(reg, value as u32);
        self.update_irq();
    }
}

/// True when an access of `len` bytes at `offset` stays inside one 32-bit register.
fn fits_word(offset: u64, len: usize) -> bool {
    len != 0 && (offset & 3) + len as u64 <= 4
}

impl MutDeviceMmio for Pl011 {
    fn mmio_read(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        self.read(offset, data);
    }

    fn mmio_write(&mut self, _base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        self.write(offset, data);
    }
}

#[cfg(test)]
#[path = "pl011_tests.rs"]
mod tests;
