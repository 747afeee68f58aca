//! The virtual ARM SMMUv3 (nested mode). See the issue tracker for what is built here.

pub mod cmd;
pub mod queue;
