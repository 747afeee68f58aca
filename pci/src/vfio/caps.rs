//! The capability list of a passthrough function and the two capabilities
//! the VMM virtualises: MSI (PCI 3.0 6.8.1) and MSI-X (6.8.2).
//!
//! Everything else in configuration space goes to the device (vfio-pci
//! virtualises what the host must keep, e.g. the power management state).
//! MSI and MSI-X are the VMM's because the guest programs guest MSI
//! addresses and data, which only mean something to the VM's ITS: the host
//! side is enabled through `VFIO_DEVICE_SET_IRQS` and each vector reaches the
//! guest through an irqfd and an MSI route (see `interrupts.rs`).

/// Capability IDs (PCI Code and ID Assignment spec, 2).
const CAP_ID_MSI: u8 = 0x05;
const CAP_ID_MSIX: u8 = 0x11;
/// Status bit 4: the function has a capability list.
const STATUS_CAP_LIST: u16 = 1 << 4;
/// Offset of the capabilities pointer.
const CAP_POINTER: u16 = 0x34;
/// A list longer than this loops (48 capabilities of 4 bytes fill 0x40..0x100).
const MAX_CAPS: usize = 48;

/// Read `len` (1, 2 or 4) bytes of the device's configuration space.
pub type ConfigReader<'a> = &'a dyn Fn(u16, usize) -> u32;

/// Where the function's capabilities are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The MSI capability.
    pub msi: Option<MsiCap>,
    /// The MSI-X capability.
    pub msix: Option<MsixCap>,
}

/// Walk the capability list with `read` (a device register reader).
/// A malformed list (pointer into the header, a loop) ends the walk; what
/// was found before it is kept.
pub fn walk(read: ConfigReader<'_>) -> Capabilities {
    let mut caps = Capabilities::default();
    if read(0x06, 2) as u16 & STATUS_CAP_LIST == 0 {
        return caps;
    }
    let mut next = read(CAP_POINTER, 1) as u16 & 0xfc;
    for _ in 0..MAX_CAPS {
        if next < 0x40 {
            break;
        }
        let header = read(next, 2);
        match header as u8 {
            CAP_ID_MSI => caps.msi = Some(MsiCap::parse(next, read(next + 2, 2) as u16)),
            CAP_ID_MSIX => {
                caps.msix = Some(MsixCap::parse(
                    next,
                    read(next + 2, 2) as u16,
                    read(next + 4, 4),
                    read(next + 8, 4),
                ))
            }
            _ => {}
        }
        next = (header >> 8) as u16 & 0xfc;
    }
    caps
}

/// MSI-X Message Control bits.
const MSIX_ENABLE: u16 = 1 << 15;
const MSIX_FUNCTION_MASK: u16 = 1 << 14;
const MSIX_TABLE_SIZE: u16 = 0x7ff;
/// Bytes per MSI-X table entry; the entry's Vector Control mask bit.
pub const MSIX_ENTRY_SIZE: u64 = 16;
const MSIX_ENTRY_MASKED: u32 = 1;

/// The MSI-X capability: where its table and PBA live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsixCap {
    /// Offset of the capability in configuration space.
    pub offset: u16,
    /// Table entries.
    pub table_size: u16,
    /// BAR holding the table, and the table's offset in it.
    pub table_bar: u8,
    /// Offset of the table in its BAR.
    pub table_offset: u64,
    /// BAR holding the PBA.
    pub pba_bar: u8,
    /// Offset of the PBA in its BAR.
    pub pba_offset: u64,
}

impl MsixCap {
    fn parse(offset: u16, control: u16, table: u32, pba: u32) -> Self {
        MsixCap {
            offset,
            table_size: (control & MSIX_TABLE_SIZE) + 1,
            table_bar: (table & 7) as u8,
            table_offset: u64::from(table & !7),
            pba_bar: (pba & 7) as u8,
            pba_offset: u64::from(pba & !7),
        }
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        u64::from(self.table_size) * MSIX_ENTRY_SIZE
    }

    /// Bytes of the PBA (one bit per vector, in qwords).
    pub fn pba_len(&self) -> u64 {
        u64::from(self.table_size).div_ceil(64) * 8
    }
}

/// One MSI message as the guest programmed it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Doorbell address (the ITS's GITS_TRANSLATER for a Linux guest).
    pub addr: u64,
    /// Payload (the EventID for the ITS).
    pub data: u32,
}

/// The guest's view of the MSI-X capability and table.
#[derive(Clone, Debug)]
pub struct MsixState {
    /// Where the capability and table are.
    pub cap: MsixCap,
    control: u16,
    /// Per entry: address low, address high, data, vector control.
    table: Vec<[u32; 4]>,
}

impl MsixState {
    /// Reset state: disabled, every entry masked (PCI 3.0 6.8.2.9).
    pub fn new(cap: MsixCap) -> Self {
        MsixState {
            cap,
            control: 0,
            table: vec![[0, 0, 0, MSIX_ENTRY_MASKED]; usize::from(cap.table_size)],
        }
    }

    /// MSI-X Enable.
    pub fn enabled(&self) -> bool {
        self.control & MSIX_ENABLE != 0
    }

    /// The message vector `i` should deliver now: `None` while MSI-X is
    /// off, the function is masked or the entry is masked.
    pub fn message(&self, i: usize) -> Option<MsiMessage> {
        let e = self.table.get(i)?;
        if !self.enabled()
            || self.control & MSIX_FUNCTION_MASK != 0
            || e[3] & MSIX_ENTRY_MASKED != 0
        {
            return None;
        }
        Some(MsiMessage {
            addr: u64::from(e[0]) | u64::from(e[1]) << 32,
            data: e[2],
        })
    }

    /// Number of vectors.
    pub fn vectors(&self) -> usize {
        self.table.len()
    }

    /// Is `reg..reg+len` inside the capability's Message Control word?
    pub fn is_control(&self, reg: u16, len: usize) -> bool {
        let c = self.cap.offset + 2;
        reg < c + 2 && reg + len as u16 > c
    }

    /// The Message Control bytes as the guest sees them, merged over
    /// `device` (the device's own word: table size).
    pub fn control(&self, device: u16) -> u16 {
        (device & MSIX_TABLE_SIZE) | (self.control & (MSIX_ENABLE | MSIX_FUNCTION_MASK))
    }

    /// A guest write of `data` at `reg` overlapping Message Control: only
    /// Enable and Function Mask are writable.
    pub fn write_control(&mut self, reg: u16, data: &[u8]) {
        let mut word = self.control.to_le_bytes();
        let c = self.cap.offset + 2;
        for (i, byte) in data.iter().enumerate() {
            let at = reg + i as u16;
            if at >= c && at < c + 2 {
                word[usize::from(at - c)] = *byte;
            }
        }
        self.control = u16::from_le_bytes(word) & (MSIX_ENABLE | MSIX_FUNCTION_MASK);
    }

    /// Is `offset` (in BAR `bar`) inside the table?
    pub fn in_table(&self, bar: u8, offset: u64) -> bool {
        bar == self.cap.table_bar
            && offset >= self.cap.table_offset
            && offset - self.cap.table_offset < self.cap.table_len()
    }

    /// A guest read of the table: dwords or a qword, naturally aligned;
    /// anything else reads all-ones.
    pub fn read_table(&self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        let rel = offset - self.cap.table_offset;
        if !matches!(data.len(), 4 | 8) || rel % data.len() as u64 != 0 {
            return;
        }
        let entry = (rel / MSIX_ENTRY_SIZE) as usize;
        let word = ((rel % MSIX_ENTRY_SIZE) / 4) as usize;
        let Some(e) = self.table.get(entry) else {
            return;
        };
        for (k, chunk) in data.chunks_mut(4).enumerate() {
            if let Some(v) = e.get(word + k) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// A guest write of the table; returns the entry it changed. Reserved
    /// Vector Control bits stay 0; a badly sized or aligned write is
    /// dropped (PCI 3.0 6.8.2: dword or qword accesses only).
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> Option<usize> {
        let rel = offset - self.cap.table_offset;
        if !matches!(data.len(), 4 | 8) || rel % data.len() as u64 != 0 {
            log::debug!(target: "vfio", "MSI-X table write of {} bytes at {rel:#x} dropped", data.len());
            return None;
        }
        let entry = (rel / MSIX_ENTRY_SIZE) as usize;
        let word = ((rel % MSIX_ENTRY_SIZE) / 4) as usize;
        let e = self.table.get_mut(entry)?;
        for (k, chunk) in data.chunks(4).enumerate() {
            let mut raw = [0u8; 4];
            raw.copy_from_slice(chunk);
            let value = u32::from_le_bytes(raw);
            match word + k {
                3 => e[3] = value & MSIX_ENTRY_MASKED,
                w @ 0..=2 => e[w] = value,
                _ => {}
            }
        }
        Some(entry)
    }
}

/// MSI Message Control bits.
const MSI_ENABLE: u16 = 1;
const MSI_64BIT: u16 = 1 << 7;
const MSI_PER_VECTOR_MASK: u16 = 1 << 8;
/// Multiple Message Capable (3:1) and Enable (6:4), as log2 of vectors.
const MSI_MMC_SHIFT: u16 = 1;
const MSI_MME_SHIFT: u16 = 4;

/// The MSI capability's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiCap {
    /// Offset of the capability in configuration space.
    pub offset: u16,
    /// 64-bit address capable.
    pub is_64: bool,
    /// Per-vector masking capable.
    pub per_vector_mask: bool,
    /// log2 of the vectors the function can use (0..=5).
    pub mmc: u8,
}

impl MsiCap {
    fn parse(offset: u16, control: u16) -> Self {
        MsiCap {
            offset,
            is_64: control & MSI_64BIT != 0,
            per_vector_mask: control & MSI_PER_VECTOR_MASK != 0,
            mmc: ((control >> MSI_MMC_SHIFT) & 7).min(5) as u8,
        }
    }

    /// Length of the capability in bytes (10..=24).
    pub fn size(&self) -> u16 {
        match (self.is_64, self.per_vector_mask) {
            (false, false) => 10,
            (true, false) => 14,
            (false, true) => 20,
            (true, true) => 24,
        }
    }

    fn data_offset(&self) -> u16 {
        if self.is_64 { 0x0c } else { 0x08 }
    }

    fn mask_offset(&self) -> u16 {
        self.data_offset() + 4
    }
}

/// The guest's view of the MSI capability (everything after the header
/// dword's first two bytes).
#[derive(Clone, Debug)]
pub struct MsiState {
    /// The capability's shape.
    pub cap: MsiCap,
    /// Capability bytes 0..len as the guest sees them (ID and next pointer
    /// included, copied from the device).
    bytes: [u8; 24],
}

impl MsiState {
    /// Reset state over the device's header (`id_next` = bytes 0-1,
    /// `control` = the device's Message Control).
    pub fn new(cap: MsiCap, id_next: u16, control: u16) -> Self {
        let mut bytes = [0u8; 24];
        bytes[0..2].copy_from_slice(&id_next.to_le_bytes());
        // Capability bits stay, Enable and MME clear.
        let control = control & !(MSI_ENABLE | 7 << MSI_MME_SHIFT);
        bytes[2..4].copy_from_slice(&control.to_le_bytes());
        MsiState { cap, bytes }
    }

    /// Does `reg..reg+len` touch the capability?
    pub fn covers(&self, reg: u16, len: usize) -> bool {
        reg < self.cap.offset + self.cap.size() && reg + len as u16 > self.cap.offset
    }

    fn control(&self) -> u16 {
        u16::from_le_bytes([self.bytes[2], self.bytes[3]])
    }

    fn dword(&self, at: u16) -> u32 {
        let i = usize::from(at);
        u32::from_le_bytes([
            self.bytes[i],
            self.bytes[i + 1],
            self.bytes[i + 2],
            self.bytes[i + 3],
        ])
    }

    /// MSI Enable.
    pub fn enabled(&self) -> bool {
        self.control() & MSI_ENABLE != 0
    }

    /// Vectors enabled (Multiple Message Enable, capped by Capable).
    pub fn vectors(&self) -> usize {
        let mme = ((self.control() >> MSI_MME_SHIFT) & 7).min(u16::from(self.cap.mmc));
        1 << mme
    }

    /// The message vector `i` delivers now (`None`: disabled or masked).
    /// Vector `i` carries the programmed data with its low bits replaced
    /// by `i` (PCI 3.0 6.8.1.6).
    pub fn message(&self, i: usize) -> Option<MsiMessage> {
        if !self.enabled() || i >= self.vectors() {
            return None;
        }
        if self.cap.per_vector_mask && self.dword(self.cap.mask_offset()) & (1 << i) != 0 {
            return None;
        }
        let addr_lo = u64::from(self.dword(4) & !3);
        let addr_hi = if self.cap.is_64 {
            u64::from(self.dword(8)) << 32
        } else {
            0
        };
        let data = self.dword(self.cap.data_offset()) & 0xffff;
        let low = self.vectors() as u32 - 1;
        Some(MsiMessage {
            addr: addr_hi | addr_lo,
            data: (data & !low) | (i as u32 & low),
        })
    }

    /// Guest read at `reg` (inside the capability).
    pub fn read(&self, reg: u16, data: &mut [u8]) {
        for (k, byte) in data.iter_mut().enumerate() {
            let at = usize::from(reg + k as u16 - self.cap.offset);
            *byte = self.bytes.get(at).copied().unwrap_or(0);
        }
    }

    /// Guest write at `reg`: Enable and MME in Message Control, the
    /// address, data and mask registers; the rest is read-only.
    pub fn write(&mut self, reg: u16, data: &[u8]) {
        let len = usize::from(self.cap.size());
        let data_at = usize::from(self.cap.data_offset());
        let mask_at = usize::from(self.cap.mask_offset());
        for (k, byte) in data.iter().enumerate() {
            let at = usize::from(reg + k as u16 - self.cap.offset);
            if at >= len {
                continue;
            }
            let writable: u8 = match at {
                2 => (MSI_ENABLE | 7 << MSI_MME_SHIFT) as u8,
                4 => 0xfc,
                5..=7 => 0xff,
                8..=11 if self.cap.is_64 => 0xff,
                a if a == data_at || a == data_at + 1 => 0xff,
                a if self.cap.per_vector_mask && (mask_at..mask_at + 4).contains(&a) => 0xff,
                _ => 0,
            };
            self.bytes[at] = (self.bytes[at] & !writable) | (byte & writable);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration space image with a capability list.
    fn space(caps: &[(u16, &[u8])]) -> Vec<u8> {
        let mut s = vec![0u8; 256];
        s[0x06] = STATUS_CAP_LIST as u8;
        s[0x34] = caps.first().map_or(0, |c| c.0 as u8);
        for (i, (at, bytes)) in caps.iter().enumerate() {
            let at = usize::from(*at);
            s[at..at + bytes.len()].copy_from_slice(bytes);
            s[at + 1] = caps.get(i + 1).map_or(0, |c| c.0 as u8);
        }
        s
    }

    fn reader(s: &[u8]) -> impl Fn(u16, usize) -> u32 + '_ {
        move |reg, len| {
            let mut v = [0u8; 4];
            v[..len].copy_from_slice(&s[usize::from(reg)..usize::from(reg) + len]);
            u32::from_le_bytes(v)
        }
    }

    #[test]
    fn walk_finds_msi_and_msix_past_other_caps_and_survives_a_loop() {
        // PM at 0x40, MSI-X (table size 3 -> 4 entries, table BAR1+0,
        // PBA BAR1+0x800) at 0x50, MSI (64-bit, per-vector mask, 8 vectors) at 0x60.
        let s = space(&[
            (0x40, &[0x01, 0, 0x03, 0]),
            (0x50, &[0x11, 0, 0x03, 0, 0x01, 0, 0, 0, 0x01, 0x08, 0, 0]),
            (0x60, &[0x05, 0, 0x86, 0x01]),
        ]);
        let caps = walk(&reader(&s));
        let msix = caps.msix.unwrap();
        assert_eq!((msix.offset, msix.table_size, msix.table_bar), (0x50, 4, 1));
        assert_eq!(
            (msix.pba_bar, msix.pba_offset, msix.pba_len()),
            (1, 0x800, 8)
        );
        let msi = caps.msi.unwrap();
        assert_eq!(
            msi,
            MsiCap {
                offset: 0x60,
                is_64: true,
                per_vector_mask: true,
                mmc: 3
            }
        );
        assert_eq!(msi.size(), 24);

        let mut looped = space(&[(0x40, &[0x01, 0, 0, 0])]);
        looped[0x41] = 0x40;
        assert_eq!(walk(&reader(&looped)), Capabilities::default());
        let mut none = space(&[(0x50, &[0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])]);
        none[0x06] = 0;
        assert_eq!(
            walk(&reader(&none)),
            Capabilities::default(),
            "status says no list"
        );
    }

    fn msix() -> MsixState {
        MsixState::new(MsixCap {
            offset: 0x50,
            table_size: 2,
            table_bar: 1,
            table_offset: 0x1000,
            pba_bar: 1,
            pba_offset: 0x2000,
        })
    }

    #[test]
    fn msix_vectors_deliver_only_when_enabled_unmasked_and_function_unmasked() {
        let mut m = msix();
        assert_eq!(
            m.write_table(0x1010, &0x0809_0040u32.to_le_bytes()),
            Some(1)
        );
        m.write_table(0x1018, &0x21u32.to_le_bytes());
        assert_eq!(m.message(1), None, "disabled, entry masked at reset");
        m.write_control(0x52, &0xffffu16.to_le_bytes());
        assert_eq!(m.control(0x0001), 0xc001, "only enable + mask are writable");
        m.write_table(0x101c, &0xffff_fffeu32.to_le_bytes());
        assert_eq!(m.message(1), None, "function mask");
        m.write_control(0x53, &[0x80]);
        let want = MsiMessage {
            addr: 0x0809_0040,
            data: 0x21,
        };
        assert_eq!(m.message(1), Some(want));
        assert_eq!(m.message(0), None, "entry 0 still masked");
        let mut ctrl = [0u8; 4];
        m.read_table(0x101c, &mut ctrl);
        assert_eq!(
            u32::from_le_bytes(ctrl),
            0,
            "reserved vector control bits read 0"
        );
        // A qword write of address low/high, a misaligned and a 2-byte one.
        m.write_table(0x1000, &0x1_0000_1000u64.to_le_bytes());
        let mut q = [0u8; 8];
        m.read_table(0x1000, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0x1_0000_1000);
        assert_eq!(m.write_table(0x1002, &[1, 2]), None);
        assert_eq!(m.write_table(0x1004, &0u64.to_le_bytes()), None);
        assert!(m.in_table(1, 0x101f) && !m.in_table(1, 0x1020) && !m.in_table(0, 0x1000));
    }

    #[test]
    fn msi_data_low_bits_carry_the_vector_and_mask_bits_mask() {
        let cap = MsiCap {
            offset: 0x60,
            is_64: true,
            per_vector_mask: true,
            mmc: 2,
        };
        let mut m = MsiState::new(cap, 0x0005, 0x0184 | 1);
        assert!(!m.enabled(), "enable cleared at reset");
        m.write(0x64, &0x0809_0043u32.to_le_bytes());
        m.write(0x68, &0u32.to_le_bytes());
        m.write(0x6c, &0x40u16.to_le_bytes());
        // Enable with MME = 3 (8 vectors): capped at MMC = 2 (4 vectors).
        m.write(0x62, &[0x31, 0x01]);
        assert_eq!(m.vectors(), 4);
        assert_eq!(
            m.message(3),
            Some(MsiMessage {
                addr: 0x0809_0040,
                data: 0x43
            })
        );
        assert_eq!(m.message(4), None);
        m.write(0x70, &0b1000u32.to_le_bytes());
        assert_eq!(m.message(3), None, "vector 3 masked");
        let mut control = [0u8; 2];
        m.read(0x62, &mut control);
        assert_eq!(u16::from_le_bytes(control), 0x01b5, "capability bits kept");
        assert!(m.covers(0x74, 4) && !m.covers(0x78, 4));
    }
}
