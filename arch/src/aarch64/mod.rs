//! What only an aarch64 KVM host needs: vCPU register identifiers and the
//! boot-time register state.

pub mod regs;
