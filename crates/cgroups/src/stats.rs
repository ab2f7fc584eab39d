//! Resource usage of a cgroup, for `docker stats`.

use serde::Serialize;

use std::collections::BTreeMap;
use std::path::Path;

use crate::{flat_keyed, Cgroup, CgroupError, Result};

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
    /// Every counter of `memory.stat` as the kernel names it (v1: `total_inactive_file`,
    /// ...; v2: `inactive_file`, ...), for `docker stats`' usage-minus-cache figure.
    pub stat: BTreeMap<String, u64>,
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
    /// CPU time per CPU in nanoseconds (v1 `cpuacct.usage_percpu`; empty on v2).
    pub percpu_ns: Vec<u64>,
}

/// Process counts.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PidsStats {
    /// Number of tasks now.
    pub current: u64,
    /// Limit (0 when unlimited).
    pub limit: u64,
}

/// One per-device block I/O counter (Docker's `io_service_bytes_recursive` entry).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BlkioEntry {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// `read` or `write`.
    pub op: String,
    /// Bytes.
    pub value: u64,
}

/// Block I/O totals over all devices.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BlkioStats {
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// The bytes read and written per device (a `read` and a `write` entry per device).
    pub entries: Vec<BlkioEntry>,
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

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    parse_limit(std::fs::read_to_string(dir.join(file)).ok()?.trim())
}

/// A single-value file: a number, or `max`/`-1` for unlimited (`u64::MAX`).
pub(crate) fn parse_limit(s: &str) -> Option<u64> {
    match s {
        "max" | "-1" => Some(u64::MAX),
        s => s.parse().ok(),
    }
}

fn keyed(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// All `key value` pairs of a flat-keyed file with numeric values.
pub(crate) fn parse_flat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let k = it.next()?;
            let v = it.next()?.parse().ok()?;
            Some((k.to_string(), v))
        })
        .collect()
}

/// `MAJOR:MINOR` of a device.
fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The per-device `Read`/`Write` entries of a v1 `blkio.*io_service_bytes*` file.
pub(crate) fn blkio_v1_entries(text: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [dev, op, v] = f[..] {
            let op = match op {
                "Read" => "read",
                "Write" => "write",
                _ => continue,
            };
            if let (Some((major, minor)), Ok(value)) = (parse_dev(dev), v.parse()) {
                out.push(BlkioEntry {
                    major,
                    minor,
                    op: op.to_string(),
                    value,
                });
            }
        }
    }
    out
}

/// The per-device `rbytes`/`wbytes` of a v2 `io.stat` file, as `read`/`write` entries.
pub(crate) fn io_stat_entries(text: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((major, minor)) = it.next().and_then(parse_dev) else {
            continue;
        };
        for kv in it {
            if let Some((k, v)) = kv.split_once('=') {
                let op = match k {
                    "rbytes" => "read",
                    "wbytes" => "write",
                    _ => continue,
                };
                out.push(BlkioEntry {
                    major,
                    minor,
                    op: op.to_string(),
                    value: v.parse().unwrap_or(0),
                });
            }
        }
    }
    out
}

/// Read and write totals of per-device entries.
fn totals(entries: &[BlkioEntry]) -> (u64, u64) {
    entries
        .iter()
        .fold((0, 0), |(r, w), e| match e.op.as_str() {
            "read" => (r + e.value, w),
            "write" => (r, w + e.value),
            _ => (r, w),
        })
}

/// Sum of `Read`/`Write` over the devices of a v1 `blkio.*io_service_bytes*` file.
pub(crate) fn parse_blkio_v1(text: &str) -> (u64, u64) {
    totals(&blkio_v1_entries(text))
}

/// Sum of `rbytes`/`wbytes` over the devices of a v2 `io.stat` file.
#[cfg(test)]
pub(crate) fn parse_io_stat(text: &str) -> (u64, u64) {
    totals(&io_stat_entries(text))
}

/// Nanoseconds per `USER_HZ` tick (100 Hz on every Linux ABI in use).
const NS_PER_TICK: u64 = 10_000_000;

pub(crate) fn collect(cg: &Cgroup) -> Result<Stats> {
    let mut st = Stats::default();
    if let Some((h, dir)) = cg.controller_dir("memory") {
        if !dir.exists() {
            return Err(CgroupError::Read {
                path: dir.to_path_buf(),
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        let m = &mut st.memory;
        if h.v2 {
            m.usage = read_u64(dir, "memory.current").unwrap_or(0);
            m.max_usage = read_u64(dir, "memory.peak").unwrap_or(0);
            m.limit = read_u64(dir, "memory.max").unwrap_or(u64::MAX);
            m.stat = keyed(dir, "memory.stat")
                .map(|t| parse_flat(&t))
                .unwrap_or_default();
            m.cache = m.stat.get("file").copied().unwrap_or(0);
        } else {
            m.usage = read_u64(dir, "memory.usage_in_bytes").unwrap_or(0);
            m.max_usage = read_u64(dir, "memory.max_usage_in_bytes").unwrap_or(0);
            m.limit = read_u64(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX);
            m.stat = keyed(dir, "memory.stat")
                .map(|t| parse_flat(&t))
                .unwrap_or_default();
            m.cache = m
                .stat
                .get("total_cache")
                .or_else(|| m.stat.get("cache"))
                .copied()
                .unwrap_or(0);
        }
    }
    let c = &mut st.cpu;
    match cg.controller_dir("cpuacct").filter(|(h, _)| !h.v2) {
        Some((_, dir)) => {
            c.usage_total_ns = read_u64(dir, "cpuacct.usage").unwrap_or(0);
            c.percpu_ns = keyed(dir, "cpuacct.usage_percpu")
                .map(|t| {
                    t.split_whitespace()
                        .filter_map(|v| v.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            match (
                read_u64(dir, "cpuacct.usage_user"),
                read_u64(dir, "cpuacct.usage_sys"),
            ) {
                (Some(u), Some(s)) => {
                    c.usage_user_ns = u;
                    c.usage_system_ns = s;
                }
                _ => {
                    if let Some(t) = keyed(dir, "cpuacct.stat") {
                        c.usage_user_ns = flat_keyed(&t, "user").unwrap_or(0) * NS_PER_TICK;
                        c.usage_system_ns = flat_keyed(&t, "system").unwrap_or(0) * NS_PER_TICK;
                    }
                }
            }
        }
        None => {
            if let Some(dir) = cg.v2_dir() {
                if let Some(t) = keyed(dir, "cpu.stat") {
                    c.usage_total_ns = flat_keyed(&t, "usage_usec").unwrap_or(0) * 1000;
                    c.usage_user_ns = flat_keyed(&t, "user_usec").unwrap_or(0) * 1000;
                    c.usage_system_ns = flat_keyed(&t, "system_usec").unwrap_or(0) * 1000;
                }
            }
        }
    }
    if let Some((h, dir)) = cg.controller_dir("cpu") {
        if let Some(t) = keyed(dir, "cpu.stat") {
            c.nr_periods = flat_keyed(&t, "nr_periods").unwrap_or(0);
            c.nr_throttled = flat_keyed(&t, "nr_throttled").unwrap_or(0);
            c.throttled_time_ns = if h.v2 {
                flat_keyed(&t, "throttled_usec").unwrap_or(0) * 1000
            } else {
                flat_keyed(&t, "throttled_time").unwrap_or(0)
            };
        }
    }
    if let Some((_, dir)) = cg.controller_dir("pids") {
        st.pids.current = read_u64(dir, "pids.current").unwrap_or(0);
        st.pids.limit = match read_u64(dir, "pids.max") {
            Some(u64::MAX) | None => 0,
            Some(n) => n,
        };
    }
    match cg.controller_dir("io").filter(|(h, _)| h.v2) {
        Some((_, dir)) => {
            if let Some(t) = keyed(dir, "io.stat") {
                st.blkio.entries = io_stat_entries(&t);
                (st.blkio.read_bytes, st.blkio.write_bytes) = totals(&st.blkio.entries);
            }
        }
        None => {
            if let Some((_, dir)) = cg.controller_dir("blkio") {
                let t = [
                    "blkio.io_service_bytes_recursive",
                    "blkio.throttle.io_service_bytes_recursive",
                    "blkio.bfq.io_service_bytes_recursive",
                ]
                .iter()
                .filter_map(|f| keyed(dir, f))
                .find(|t| parse_blkio_v1(t) != (0, 0));
                if let Some(t) = t {
                    st.blkio.entries = blkio_v1_entries(&t);
                    (st.blkio.read_bytes, st.blkio.write_bytes) = totals(&st.blkio.entries);
                }
            }
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(parse_limit("max"), Some(u64::MAX));
        assert_eq!(parse_limit("-1"), Some(u64::MAX));
        assert_eq!(parse_limit("42"), Some(42));
        assert_eq!(parse_limit("x"), None);
    }

    #[test]
    fn parses_flat_files() {
        let m = parse_flat("cache 4096\nrss 8192\nbad line x\n\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m["rss"], 8192);
    }

    #[test]
    fn parses_blkio_files() {
        let v1 = "8:0 Read 100\n8:0 Write 20\n8:0 Sync 3\n8:16 Read 1\n8:16 Write 2\nTotal 123\n";
        assert_eq!(parse_blkio_v1(v1), (101, 22));
        let v2 = "8:0 rbytes=100 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2 rios=0 wios=0\n";
        assert_eq!(parse_io_stat(v2), (101, 22));
        let e = io_stat_entries(v2);
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[2].major, e[2].minor, e[2].op.as_str(), e[2].value),
            (8, 16, "read", 1)
        );
        let e = blkio_v1_entries(v1);
        assert_eq!(e.len(), 4);
        assert_eq!(
            (e[1].major, e[1].minor, e[1].op.as_str(), e[1].value),
            (8, 0, "write", 20)
        );
    }
}
