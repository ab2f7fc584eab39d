//! Resource usage of a cgroup, for `docker stats`.

use serde::Serialize;

use crate::{Cgroup, CgroupError, Result};

/// Memory usage.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MemoryStats {
    /// Current usage in bytes.
    pub usage: u64,
    /// Peak usage in bytes (0 when the kernel does not report it).
    pub max_usage: u64,
    /// Limit in bytes (`u64::MAX` when unlimited).
    pub limit: u64,
    /// Page cache in bytes.
    pub cache: u64,
}

/// CPU usage.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct CpuStats {
    /// Total CPU time in nanoseconds.
    pub usage_total_ns: u64,
    /// User CPU time in nanoseconds.
    pub usage_user_ns: u64,
    /// System CPU time in nanoseconds.
    pub usage_system_ns: u64,
    /// Number of enforcement periods.
    pub nr_periods: u64,
    /// Number of periods in which the cgroup was throttled.
    pub nr_throttled: u64,
    /// Total time throttled in nanoseconds.
    pub throttled_time_ns: u64,
}

/// Process counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PidsStats {
    /// Number of tasks now.
    pub current: u64,
    /// Limit (0 when unlimited).
    pub limit: u64,
}

/// Block I/O totals over all devices.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BlkioStats {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
}

/// Resource usage of a cgroup.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Memory.
    pub memory: MemoryStats,
    /// CPU.
    pub cpu: CpuStats,
    /// Processes.
    pub pids: PidsStats,
    /// Block I/O.
    pub blkio: BlkioStats,
}

pub(crate) fn collect(_cg: &Cgroup) -> Result<Stats> {
    Err(CgroupError::Unsupported {
        what: "cgroup stats (not supported yet)".into(),
    })
}
