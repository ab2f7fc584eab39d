//! Resource usage of running containers for `GET /containers/{id}/stats` (`docker stats`).
//!
//! A [`Sample`] is one reading of a container: its cgroup's counters (through the
//! `cgroups` crate, so v1, v2 and hybrid hosts all work), the host's total CPU time from
//! `/proc/stat` (Docker's `system_cpu_usage`, the denominator of the CPU percentage) and
//! the per-interface counters of the container's network namespace (`/proc/<pid>/net/dev`
//! of its init). [`docker_json`] turns a sample and the one before it into Docker's
//! `StatsResponse` shape (`cpu_stats` / `precpu_stats`, `memory_stats`, `pids_stats`,
//! `blkio_stats`, `networks`); clients compute percentages from the two.
//!
//! The cgroup is the one named by `linux.cgroupsPath` in the container's bundle spec, so a
//! `--cgroup-parent` is honoured.

use crate::error::{EngineError, Result};
use crate::Engine;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// How long a non-streamed, non-one-shot request waits between its two readings (Docker's
/// collector interval), so that `precpu_stats` is filled and the CPU percentage is right.
pub const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters of one network interface (a `/proc/net/dev` line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// One reading of a running container's resource usage.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was read (RFC 3339, nanoseconds).
    pub read: String,
    /// The cgroup's counters.
    pub cgroup: cgroups::Stats,
    /// The host's total CPU time in nanoseconds (all CPUs, all states).
    pub system_ns: u64,
    /// The number of online CPUs.
    pub online_cpus: u64,
    /// Host memory in bytes (the limit shown when the cgroup has none).
    pub host_memory: u64,
    /// Interfaces of the container's network namespace but `lo` (empty for host
    /// networking, where the interfaces are the host's).
    pub networks: BTreeMap<String, NetDev>,
}

/// What a stats request is about: a container and, when it runs, where to read.
#[derive(Debug, Clone)]
pub struct StatsTarget {
    /// The full id.
    pub id: String,
    /// The name with Docker's leading `/`.
    pub name: String,
    /// The init's host pid and the resolved cgroup, when the container runs.
    running: Option<(i32, cgroups::Cgroup, bool)>,
}

impl StatsTarget {
    /// Whether the container ran when the target was resolved.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Reads one sample; `None` once the container's cgroup is gone (it stopped).
    pub fn sample(&self) -> Option<Sample> {
        let (pid, cg, host_net) = self.running.as_ref()?;
        let cgroup = cg.stats().ok()?;
        let networks = if *host_net {
            BTreeMap::new()
        } else {
            let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
            parse_net_dev(&text)
        };
        let (system_ns, online) = read_proc_stat();
        Some(Sample {
            read: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            cgroup,
            system_ns,
            online_cpus: online_cpus().unwrap_or(online),
            host_memory: host_memory(),
            networks,
        })
    }
}

impl Engine {
    /// Resolves a container for stats (`GET /containers/{id}/stats`): its id, name and,
    /// when it runs, its init pid and cgroup.
    pub fn stats_target(&self, name: &str) -> Result<StatsTarget> {
        let rec = self.record(name)?;
        let mut t = StatsTarget {
            id: rec.id.clone(),
            name: format!("/{}", rec.name),
            running: None,
        };
        if !rec.state.status.is_running() || rec.state.pid <= 0 {
            return Ok(t);
        }
        let spec_path = self.bundle(&rec.id).join("config.json");
        let cg_path = std::fs::read(&spec_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string));
        let cg = cgroups::Cgroup::new(cg_path.as_deref(), &rec.id, false).map_err(|e| {
            EngineError::Runtime(format!("resolve the cgroup of container {}: {e}", rec.id))
        })?;
        let host_net = rec.host_config.network_mode == "host";
        t.running = Some((rec.state.pid, cg, host_net));
        Ok(t)
    }
}

/// The interfaces of a `/proc/net/dev` text, without `lo`.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, NetDev> {
    let mut out = BTreeMap::new();
    for l in text.lines().skip(2) {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" || name.is_empty() {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            NetDev {
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            },
        );
    }
    out
}

/// Nanoseconds per `USER_HZ` tick of `/proc/stat` (100 Hz on every Linux ABI in use).
const NS_PER_TICK: u64 = 10_000_000;

/// The host's total CPU time (ns) from `/proc/stat`'s `cpu` line, as Docker sums it (user,
/// nice, system, idle, iowait, irq, softirq, steal), and the number of `cpuN` lines.
fn read_proc_stat() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse_proc_stat(&t))
        .unwrap_or((0, 1))
}

/// See [`read_proc_stat`].
pub fn parse_proc_stat(text: &str) -> (u64, u64) {
    let mut total = 0;
    let mut cpus = 0;
    for l in text.lines() {
        let mut it = l.split_whitespace();
        match it.next() {
            Some("cpu") => {
                total = it
                    .take(8)
                    .map(|v| v.parse::<u64>().unwrap_or(0))
                    .sum::<u64>()
                    * NS_PER_TICK;
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus.max(1))
}

/// Online CPUs of the host (`sysconf(_SC_NPROCESSORS_ONLN)`).
fn online_cpus() -> Option<u64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// `MemTotal` of `/proc/meminfo` in bytes (0 when unreadable).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let v = l.strip_prefix("MemTotal:")?;
                v.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn cpu_json(s: Option<&Sample>) -> Value {
    let Some(s) = s else {
        return json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}});
    };
    let c = &s.cgroup.cpu;
    let mut usage = json!({
        "total_usage": c.usage_total_ns,
        "usage_in_kernelmode": c.usage_system_ns,
        "usage_in_usermode": c.usage_user_ns,
    });
    if !c.percpu_ns.is_empty() {
        usage["percpu_usage"] = json!(c.percpu_ns);
    }
    json!({
        "cpu_usage": usage,
        "system_cpu_usage": s.system_ns,
        "online_cpus": s.online_cpus,
        "throttling_data": {
            "periods": c.nr_periods,
            "throttled_periods": c.nr_throttled,
            "throttled_time": c.throttled_time_ns,
        },
    })
}

/// Docker's `StatsResponse` for container `id` named `name` (with the leading `/`) from
/// the current sample and the previous one. With no current sample (the container is not
/// running) every counter is zero and `read` is Go's zero time, as Docker answers.
pub fn docker_json(id: &str, name: &str, cur: Option<&Sample>, pre: Option<&Sample>) -> Value {
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let mut v = json!({
        "id": id,
        "name": name,
        "read": cur.map(|s| s.read.as_str()).unwrap_or(ZERO_TIME),
        "preread": pre.map(|s| s.read.as_str()).unwrap_or(ZERO_TIME),
        "num_procs": 0,
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "storage_stats": {},
        "cpu_stats": cpu_json(cur),
        "precpu_stats": cpu_json(pre),
        "memory_stats": {},
    });
    let Some(s) = cur else {
        return v;
    };
    let st = &s.cgroup;
    v["pids_stats"] = if st.pids.limit > 0 {
        json!({"current": st.pids.current, "limit": st.pids.limit})
    } else {
        json!({"current": st.pids.current})
    };
    let entries: Vec<Value> = st
        .blkio
        .entries
        .iter()
        .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
        .collect();
    v["blkio_stats"]["io_service_bytes_recursive"] = Value::Array(entries);
    let m = &st.memory;
    // Docker reports the host's memory when the cgroup's limit is above it (unlimited).
    let limit = if s.host_memory > 0 && m.limit > s.host_memory {
        s.host_memory
    } else {
        m.limit
    };
    let mut mem = json!({"usage": m.usage, "stats": m.stat, "limit": limit});
    if m.max_usage > 0 {
        mem["max_usage"] = json!(m.max_usage);
    }
    v["memory_stats"] = mem;
    if !s.networks.is_empty() {
        let mut nets = Map::new();
        for (name, n) in &s.networks {
            nets.insert(
                name.clone(),
                json!({
                    "rx_bytes": n.rx_bytes, "rx_packets": n.rx_packets,
                    "rx_errors": n.rx_errors, "rx_dropped": n.rx_dropped,
                    "tx_bytes": n.tx_bytes, "tx_packets": n.tx_packets,
                    "tx_errors": n.tx_errors, "tx_dropped": n.tx_dropped,
                }),
            );
        }
        v["networks"] = Value::Object(nets);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0
  eth0:    1296      16    1    2    0     0          0         0      656       8    3    4    0     0       0          0
";

    #[test]
    fn parses_net_dev_without_lo() {
        let n = parse_net_dev(NET_DEV);
        assert_eq!(n.len(), 1);
        let e = &n["eth0"];
        assert_eq!(
            (e.rx_bytes, e.rx_packets, e.rx_errors, e.rx_dropped),
            (1296, 16, 1, 2)
        );
        assert_eq!(
            (e.tx_bytes, e.tx_packets, e.tx_errors, e.tx_dropped),
            (656, 8, 3, 4)
        );
    }

    #[test]
    fn parses_proc_stat() {
        let t = "cpu  10 1 5 100 2 0 1 0 7 0\ncpu0 5 0 2 50 1 0 0 0 0 0\ncpu1 5 1 3 50 1 0 1 0 0 0\nintr 1\n";
        assert_eq!(parse_proc_stat(t), (119 * NS_PER_TICK, 2));
    }

    fn sample(total: u64, system: u64) -> Sample {
        let mut cg = cgroups::Stats::default();
        cg.cpu.usage_total_ns = total;
        cg.cpu.percpu_ns = vec![total / 2, total / 2];
        cg.memory.usage = 4096;
        cg.memory.limit = u64::MAX;
        cg.pids.current = 3;
        Sample {
            read: "2026-01-01T00:00:01Z".into(),
            cgroup: cg,
            system_ns: system,
            online_cpus: 2,
            host_memory: 1 << 30,
            networks: parse_net_dev(NET_DEV),
        }
    }

    #[test]
    fn shapes_docker_json() {
        let pre = sample(1_000, 10_000);
        let cur = sample(3_000, 20_000);
        let v = docker_json("abc", "/n", Some(&cur), Some(&pre));
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 3000);
        assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 1000);
        assert_eq!(v["cpu_stats"]["cpu_usage"]["percpu_usage"][1], 1500);
        assert_eq!(v["cpu_stats"]["system_cpu_usage"], 20000);
        assert_eq!(v["cpu_stats"]["online_cpus"], 2);
        assert_eq!(
            v["memory_stats"]["limit"],
            1u64 << 30,
            "unlimited: host memory"
        );
        assert_eq!(v["pids_stats"]["current"], 3);
        assert_eq!(v["networks"]["eth0"]["tx_bytes"], 656);
        assert_eq!(v["name"], "/n");
        let z = docker_json("abc", "/n", None, None);
        assert_eq!(z["read"], "0001-01-01T00:00:00Z");
        assert_eq!(z["cpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert!(z.get("networks").is_none());
    }
}
