//! `--cpus` and the API's `cpus` object (cloud-hypervisor's CpusConfig:
//! `boot_vcpus`, `max_vcpus`, `affinity`), and the bound on host CPU
//! numbers that both the pinning rules here and `crate::affinity` use.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::options::{self, OptionError, Options};
use super::{ConfigError, null_is_default, numa};

/// Host CPU numbers a `cpu_set_t` holds.
pub const MAX_HOST_CPU: u32 = libc::CPU_SETSIZE as u32 - 1;

/// `--cpus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot.
    #[serde(rename = "boot_vcpus")]
    pub boot: u32,
    /// cloud-hypervisor's hot-plug ceiling, from the API only: at least
    /// `boot`, kept and shown back; the guest sees `boot` (vm.resize is
    /// refused). `None`: `vm.info` shows `boot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vcpus: Option<u32>,
    /// vCPU threads pinned to host CPUs (`affinity=`; the rest float).
    #[serde(
        default,
        deserialize_with = "null_is_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub affinity: Vec<CpuAffinity>,
}

/// One `affinity=` entry (cloud-hypervisor's `vcpu@[host cpus]`, the API's
/// `{"vcpu": N, "host_cpus": [...]}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuAffinity {
    /// The vCPU index.
    pub vcpu: u32,
    /// The host CPUs its thread may run on, ascending, each once.
    pub host_cpus: Vec<u32>,
}

impl Default for CpusConfig {
    fn default() -> Self {
        CpusConfig {
            boot: 1,
            max_vcpus: None,
            affinity: Vec::new(),
        }
    }
}

const AFFINITY_SYNTAX: &str = "expected a list such as [0@[0-1],1@[2]] (vCPU@[host CPUs])";

impl CpusConfig {
    /// Parse `boot=N[,affinity=[V@[CPUS],...]]`.
    pub fn parse(input: &str) -> Result<Self, OptionError> {
        let opts = Options::parse("cpus", input, &["boot", "affinity"], false)?;
        let boot = opts
            .number::<u32>("boot")?
            .ok_or_else(|| opts.invalid("boot", "", "give the number of vCPUs, e.g. boot=2"))?;
        let mut affinity = Vec::new();
        if let Some(raw) = opts.get("affinity") {
            let inner = raw
                .strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .ok_or_else(|| opts.invalid("affinity", raw, AFFINITY_SYNTAX))?;
            for item in options::split_top_level(inner) {
                let entry = item
                    .split_once('@')
                    .and_then(|(vcpu, cpus)| {
                        Some(CpuAffinity {
                            vcpu: u32::try_from(options::parse_u64(vcpu)?).ok()?,
                            host_cpus: numa::parse_cpus(cpus)?,
                        })
                    })
                    .ok_or_else(|| opts.invalid("affinity", raw, AFFINITY_SYNTAX))?;
                affinity.push(entry);
            }
        }
        Ok(CpusConfig {
            boot,
            max_vcpus: None,
            affinity,
        })
    }

    /// The hot-plug ceiling is not below the boot count; each pinned vCPU
    /// exists and is pinned once, to CPUs a host can have.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(max) = self.max_vcpus.filter(|max| *max < self.boot) {
            return Err(ConfigError::MaxVcpusBelowBoot(max));
        }
        let mut seen = BTreeSet::new();
        for entry in &self.affinity {
            if entry.vcpu >= self.boot {
                return Err(ConfigError::Affinity(format!(
                    "vCPU {} is pinned but the VM has {} (boot={}); pin vCPUs 0-{}",
                    entry.vcpu,
                    self.boot,
                    self.boot,
                    self.boot.saturating_sub(1)
                )));
            }
            if !seen.insert(entry.vcpu) {
                return Err(ConfigError::Affinity(format!(
                    "vCPU {} is pinned twice; give each vCPU one entry",
                    entry.vcpu
                )));
            }
            if entry.host_cpus.is_empty() {
                return Err(ConfigError::Affinity(format!(
                    "vCPU {} is pinned to no host CPU; list at least one",
                    entry.vcpu
                )));
            }
            if let Some(cpu) = entry.host_cpus.iter().find(|c| **c > MAX_HOST_CPU) {
                return Err(ConfigError::Affinity(format!(
                    "vCPU {} is pinned to host CPU {cpu}, beyond the {} a CPU set holds",
                    entry.vcpu,
                    MAX_HOST_CPU + 1
                )));
            }
        }
        Ok(())
    }
}
