//! Writing [`LinuxResources`] to v1 and v2 controller files.
//!
//! Each resource goes to the hierarchy owning its controller, in that hierarchy's file
//! format, so a hybrid host gets e.g. memory in v1 and hugetlb in v2. Following runc, a
//! zero value means "not set" for limits that cannot meaningfully be zero (memory limit,
//! shares, quota, period, pids limit), and `-1` means unlimited.
//!
//! The field-to-file mapping is documented on [`Cgroup::apply`].

use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
    LinuxThrottleDevice,
};

use crate::{read, write, Cgroup, CgroupError, Result};

/// Where one controller's files live for this cgroup.
#[derive(Clone, Copy)]
pub(crate) struct Target<'a> {
    pub v2: bool,
    pub dir: &'a Path,
}

impl Target<'_> {
    fn set(&self, file: &str, value: &str) -> Result<()> {
        write(&self.dir.join(file), value)
    }
    fn has(&self, file: &str) -> bool {
        self.dir.join(file).exists()
    }
}

fn invalid(what: &str, reason: impl Into<String>) -> CgroupError {
    CgroupError::InvalidValue {
        what: what.to_string(),
        reason: reason.into(),
    }
}

fn unsupported(what: impl Into<String>) -> CgroupError {
    CgroupError::Unsupported { what: what.into() }
}

impl Cgroup {
    /// The controller's location, or `None` when no hierarchy holds it (or, on v2, it is
    /// not enabled for this cgroup).
    pub(crate) fn target(&self, controller: &str) -> Option<Target<'_>> {
        let (h, dir) = self.controller_dir(controller)?;
        if h.v2 {
            // The controller must be enabled in the parent's subtree_control.
            if let Ok(list) = std::fs::read_to_string(dir.join("cgroup.controllers")) {
                if !list.split_whitespace().any(|c| c == controller) {
                    return None;
                }
            }
        }
        Some(Target { v2: h.v2, dir })
    }

    /// Like [`Cgroup::target`], but a missing controller is an error: one the host does
    /// not have, or (v2) one its hierarchy has but this cgroup's parent did not enable.
    pub(crate) fn need(&self, controller: &str) -> Result<Target<'_>> {
        if let Some(t) = self.target(controller) {
            return Ok(t);
        }
        match self.controller_dir(controller) {
            Some((h, dir)) if h.v2 => Err(CgroupError::ControllerNotEnabled {
                controller: controller.to_string(),
                dir: dir.to_path_buf(),
            }),
            _ => Err(CgroupError::ControllerMissing {
                controller: controller.to_string(),
            }),
        }
    }
}

pub(crate) fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<()> {
    if let Some(m) = r.memory() {
        memory(cg, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(cg, c)?;
    }
    if let Some(p) = r.pids() {
        if p.limit() != 0 {
            let t = cg.need("pids")?;
            let v = if p.limit() < 0 {
                "max".to_string()
            } else {
                p.limit().to_string()
            };
            t.set("pids.max", &v)?;
        }
    }
    if let Some(b) = r.block_io() {
        blkio(cg, b)?;
    }
    if let Some(h) = r.hugepage_limits() {
        for l in h {
            let size = l.page_size();
            if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(
                    "hugepageLimits.pageSize",
                    format!("{size:?} is malformed"),
                ));
            }
            let t = cg.need("hugetlb")?;
            let file = if t.v2 {
                format!("hugetlb.{size}.max")
            } else {
                format!("hugetlb.{size}.limit_in_bytes")
            };
            if !t.has(&file) {
                return Err(invalid(
                    "hugepageLimits.pageSize",
                    format!("page size {size} is not supported by this kernel"),
                ));
            }
            let v = if l.limit() < 0 {
                if t.v2 {
                    "max".to_string()
                } else {
                    "-1".to_string()
                }
            } else {
                l.limit().to_string()
            };
            t.set(&file, &v)?;
        }
    }
    if let Some(d) = r.devices() {
        devices(cg, d)?;
    }
    if let Some(n) = r.network() {
        if let Some(id) = n.class_id() {
            if let Some(t) = cg.target("net_cls").filter(|t| !t.v2) {
                t.set("net_cls.classid", &id.to_string())?;
            }
        }
        if let Some(prios) = n.priorities() {
            if let Some(t) = cg.target("net_prio").filter(|t| !t.v2) {
                for p in prios {
                    if p.name().is_empty() || p.name().contains(char::is_whitespace) {
                        return Err(invalid(
                            "network.priorities",
                            format!("interface name {:?} is malformed", p.name()),
                        ));
                    }
                    t.set(
                        "net_prio.ifpriomap",
                        &format!("{} {}", p.name(), p.priority()),
                    )?;
                }
            }
        }
    }
    if let Some(rdma) = r.rdma() {
        if !rdma.is_empty() {
            let t = cg.need("rdma")?;
            for (dev, l) in rdma {
                let mut v = dev.clone();
                if let Some(h) = l.hca_handles() {
                    v.push_str(&format!(" hca_handle={h}"));
                }
                if let Some(o) = l.hca_objects() {
                    v.push_str(&format!(" hca_object={o}"));
                }
                t.set("rdma.max", &v)?;
            }
        }
    }
    if let Some(u) = r.unified() {
        unified(cg, u)?;
    }
    Ok(())
}

fn memory(cg: &Cgroup, m: &LinuxMemory) -> Result<()> {
    let limit = m.limit().filter(|&l| l != 0);
    let reservation = m.reservation().filter(|&l| l != 0);
    let swap = m.swap().filter(|&s| s != 0);
    for (what, v) in [
        ("memory.limit", limit),
        ("memory.reservation", reservation),
        ("memory.swap", swap),
    ] {
        if let Some(v) = v {
            if v < -1 {
                return Err(invalid(what, format!("{v} is negative")));
            }
        }
    }
    if let (Some(l), Some(s)) = (limit, swap) {
        if l > 0 && s >= 0 && s < l {
            return Err(invalid(
                "memory.swap",
                format!("memory+swap limit {s} is below the memory limit {l}"),
            ));
        }
    }
    if let Some(sw) = m.swappiness() {
        if sw > 100 {
            return Err(invalid("memory.swappiness", format!("{sw} is above 100")));
        }
    }
    let wants_any = limit.is_some()
        || reservation.is_some()
        || swap.is_some()
        || m.swappiness().is_some()
        || m.disable_oom_killer() == Some(true);
    if !wants_any {
        return Ok(());
    }
    let t = cg.need("memory")?;
    if t.v2 {
        let max = |v: i64| {
            if v == -1 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(s) = swap {
            let v = match (s, limit) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l > 0 => (s - l).to_string(),
                _ => {
                    return Err(invalid(
                        "memory.swap",
                        "a swap limit needs a memory limit on cgroup v2",
                    ))
                }
            };
            if !t.has("memory.swap.max") {
                if v != "max" && v != "0" {
                    return Err(unsupported("memory swap limits (memory.swap.max)"));
                }
            } else {
                t.set("memory.swap.max", &v)?;
            }
        }
        if let Some(l) = limit {
            t.set("memory.max", &max(l))?;
        }
        if let Some(r) = reservation {
            t.set("memory.low", &max(r))?;
        }
        if m.swappiness().is_some() {
            return Err(unsupported("memory.swappiness on cgroup v2"));
        }
        return Ok(());
    }
    // v1: memory.limit_in_bytes must never exceed memory.memsw.limit_in_bytes, so the
    // order of the two writes depends on whether the limits grow or shrink.
    let has_memsw = t.has("memory.memsw.limit_in_bytes");
    let swap = match swap {
        Some(s) if !has_memsw => {
            if s == -1 || Some(s) == limit {
                None
            } else {
                return Err(unsupported(
                    "memory swap limits (memory.memsw.limit_in_bytes)",
                ));
            }
        }
        s => s,
    };
    match (limit, swap) {
        (l, Some(s)) => {
            let cur: i64 = read(&t.dir.join("memory.limit_in_bytes"))?
                .trim()
                .parse()
                .unwrap_or(i64::MAX);
            if s == -1 || s >= cur {
                t.set("memory.memsw.limit_in_bytes", &s.to_string())?;
                if let Some(l) = l {
                    t.set("memory.limit_in_bytes", &l.to_string())?;
                }
            } else {
                if let Some(l) = l {
                    t.set("memory.limit_in_bytes", &l.to_string())?;
                }
                t.set("memory.memsw.limit_in_bytes", &s.to_string())?;
            }
        }
        (Some(l), None) => {
            // Raising the limit above the current memsw limit fails: lift memsw first.
            if has_memsw && l == -1 {
                t.set("memory.memsw.limit_in_bytes", "-1")?;
            }
            t.set("memory.limit_in_bytes", &l.to_string())?;
        }
        (None, None) => {}
    }
    if let Some(r) = reservation {
        t.set("memory.soft_limit_in_bytes", &r.to_string())?;
    }
    if let Some(sw) = m.swappiness() {
        t.set("memory.swappiness", &sw.to_string())?;
    }
    if m.disable_oom_killer() == Some(true) {
        t.set("memory.oom_control", "1")?;
    }
    Ok(())
}

/// runc's conversion of v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// runc's conversion of v1 blkio weight (10..=1000) to v2 io.weight (1..=10000).
pub(crate) fn blkio_weight_to_io(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// The v2 `cpu.max` value for a quota (`-1`/None = unlimited) and period.
pub(crate) fn cpu_max(quota: Option<i64>, period: u64) -> String {
    match quota {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    }
}

fn cpu(cg: &Cgroup, c: &LinuxCpu) -> Result<()> {
    let shares = c.shares().filter(|&s| s != 0);
    let quota = c.quota().filter(|&q| q != 0);
    let period = c.period().filter(|&p| p != 0);
    if let Some(s) = shares {
        if !(2..=262_144).contains(&s) {
            return Err(invalid("cpu.shares", format!("{s} is outside 2..=262144")));
        }
    }
    if let Some(q) = quota {
        if q < -1 || (q > 0 && q < 1000) {
            return Err(invalid(
                "cpu.quota",
                format!("{q} is below the minimum of 1000"),
            ));
        }
    }
    if let Some(p) = period {
        if !(1000..=1_000_000).contains(&p) {
            return Err(invalid(
                "cpu.period",
                format!("{p} is outside 1000..=1000000"),
            ));
        }
    }
    let rt_rt = c.realtime_runtime().filter(|&v| v != 0);
    let rt_p = c.realtime_period().filter(|&v| v != 0);
    let burst = c.burst();
    let needs_cpu = shares.is_some()
        || quota.is_some()
        || period.is_some()
        || rt_rt.is_some()
        || rt_p.is_some()
        || burst.is_some()
        || c.idle().is_some();
    if needs_cpu {
        let t = cg.need("cpu")?;
        if t.v2 {
            if let Some(s) = shares {
                t.set("cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if quota.is_some() || period.is_some() {
                let period = match period {
                    Some(p) => p,
                    None => read(&t.dir.join("cpu.max"))?
                        .split_whitespace()
                        .nth(1)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(100_000),
                };
                t.set("cpu.max", &cpu_max(quota, period))?;
            }
            if let Some(b) = burst {
                t.set("cpu.max.burst", &b.to_string())?;
            }
            if rt_rt.is_some() || rt_p.is_some() {
                return Err(unsupported("realtime cpu scheduling limits on cgroup v2"));
            }
        } else {
            if let Some(s) = shares {
                t.set("cpu.shares", &s.to_string())?;
            }
            if let Some(p) = period {
                t.set("cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = quota {
                t.set("cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(b) = burst {
                if !t.has("cpu.cfs_burst_us") {
                    return Err(unsupported("cpu burst (cpu.cfs_burst_us)"));
                }
                t.set("cpu.cfs_burst_us", &b.to_string())?;
            }
            if let Some(p) = rt_p {
                t.set("cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = rt_rt {
                t.set("cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        if let Some(i) = c.idle() {
            if !t.has("cpu.idle") {
                return Err(unsupported("cpu.idle"));
            }
            t.set("cpu.idle", &i.to_string())?;
        }
    }
    let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_some() || mems.is_some() {
        let t = cg.need("cpuset")?;
        for (what, v) in [("cpu.cpus", cpus), ("cpu.mems", mems)] {
            if let Some(v) = v {
                if !v
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == '-')
                {
                    return Err(invalid(what, format!("{v:?} is not a list of ranges")));
                }
            }
        }
        if let Some(v) = mems {
            t.set("cpuset.mems", v)?;
        }
        if let Some(v) = cpus {
            t.set("cpuset.cpus", v)?;
        }
    }
    Ok(())
}

fn throttle_list(
    b: &LinuxBlockIo,
) -> [(
    &'static str,
    &'static str,
    Option<&Vec<LinuxThrottleDevice>>,
); 4] {
    [
        (
            "blkio.throttle.read_bps_device",
            "rbps",
            b.throttle_read_bps_device().as_ref(),
        ),
        (
            "blkio.throttle.write_bps_device",
            "wbps",
            b.throttle_write_bps_device().as_ref(),
        ),
        (
            "blkio.throttle.read_iops_device",
            "riops",
            b.throttle_read_iops_device().as_ref(),
        ),
        (
            "blkio.throttle.write_iops_device",
            "wiops",
            b.throttle_write_iops_device().as_ref(),
        ),
    ]
}

fn check_dev(what: &str, major: i64, minor: i64) -> Result<()> {
    if major < 0 || minor < 0 {
        return Err(invalid(what, format!("device {major}:{minor} is negative")));
    }
    Ok(())
}

fn blkio(cg: &Cgroup, b: &LinuxBlockIo) -> Result<()> {
    let weight = b.weight().filter(|&w| w != 0);
    let leaf = b.leaf_weight().filter(|&w| w != 0);
    for (what, w) in [("blockIO.weight", weight), ("blockIO.leafWeight", leaf)] {
        if let Some(w) = w {
            if !(10..=1000).contains(&w) {
                return Err(invalid(what, format!("{w} is outside 10..=1000")));
            }
        }
    }
    let devs = b.weight_device().as_deref().unwrap_or(&[]);
    let throttles = throttle_list(b);
    let any_throttle = throttles
        .iter()
        .any(|(_, _, l)| l.is_some_and(|l| !l.is_empty()));
    if weight.is_none() && leaf.is_none() && devs.is_empty() && !any_throttle {
        return Ok(());
    }
    let t = match cg.target("io") {
        Some(t) if t.v2 => t,
        _ => cg.need("blkio")?,
    };
    if t.v2 {
        let (wfile, bfq) = if t.has("io.weight") {
            ("io.weight", false)
        } else if t.has("io.bfq.weight") {
            ("io.bfq.weight", true)
        } else {
            ("", false)
        };
        let conv = |w: u16| {
            if bfq {
                u64::from(w)
            } else {
                blkio_weight_to_io(w)
            }
        };
        if (weight.is_some() || devs.iter().any(|d| d.weight().is_some())) && wfile.is_empty() {
            return Err(unsupported("io weights (io.weight)"));
        }
        if let Some(w) = weight {
            t.set(wfile, &format!("default {}", conv(w)))?;
        }
        for d in devs {
            check_dev("blockIO.weightDevice", d.major(), d.minor())?;
            if let Some(w) = d.weight() {
                t.set(wfile, &format!("{}:{} {}", d.major(), d.minor(), conv(w)))?;
            }
        }
        if leaf.is_some() || devs.iter().any(|d| d.leaf_weight().is_some()) {
            return Err(unsupported("blkio leaf weights on cgroup v2"));
        }
        for (_, key, list) in throttles {
            for d in list.into_iter().flatten() {
                check_dev("blockIO.throttle", d.major(), d.minor())?;
                t.set(
                    "io.max",
                    &format!("{}:{} {}={}", d.major(), d.minor(), key, d.rate()),
                )?;
            }
        }
        return Ok(());
    }
    let pick = |a: &'static str, b: &'static str| {
        if t.has(a) {
            Some(a)
        } else if t.has(b) {
            Some(b)
        } else {
            None
        }
    };
    if weight.is_some() || devs.iter().any(|d| d.weight().is_some()) {
        let file = pick("blkio.weight", "blkio.bfq.weight")
            .ok_or_else(|| unsupported("blkio weights (blkio.weight)"))?;
        if let Some(w) = weight {
            t.set(file, &w.to_string())?;
        }
        let dfile = format!("{file}_device");
        for d in devs {
            check_dev("blockIO.weightDevice", d.major(), d.minor())?;
            if let Some(w) = d.weight() {
                t.set(&dfile, &format!("{}:{} {}", d.major(), d.minor(), w))?;
            }
        }
    }
    if leaf.is_some() || devs.iter().any(|d| d.leaf_weight().is_some()) {
        if !t.has("blkio.leaf_weight") {
            return Err(unsupported("blkio leaf weights (blkio.leaf_weight)"));
        }
        if let Some(w) = leaf {
            t.set("blkio.leaf_weight", &w.to_string())?;
        }
        for d in devs {
            if let Some(w) = d.leaf_weight() {
                t.set(
                    "blkio.leaf_weight_device",
                    &format!("{}:{} {}", d.major(), d.minor(), w),
                )?;
            }
        }
    }
    for (file, _, list) in throttles {
        for d in list.into_iter().flatten() {
            check_dev("blockIO.throttle", d.major(), d.minor())?;
            t.set(file, &format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
        }
    }
    Ok(())
}

/// The v1 `devices.allow`/`devices.deny` line for a rule: `TYPE MAJOR:MINOR ACCESS`.
pub(crate) fn device_rule_line(d: &LinuxDeviceCgroup) -> Result<String> {
    let typ = d.typ().unwrap_or(LinuxDeviceType::A);
    let access = d.access().as_deref().unwrap_or("rwm");
    let access = if access.is_empty() { "rwm" } else { access };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(invalid(
            "devices.access",
            format!("{access:?} is not a subset of \"rwm\""),
        ));
    }
    let num = |n: Option<i64>| match n {
        None | Some(-1) => Ok("*".to_string()),
        Some(n) if n >= 0 => Ok(n.to_string()),
        Some(n) => Err(invalid("devices", format!("device number {n} is negative"))),
    };
    let t = match typ {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            return Err(invalid(
                "devices.type",
                "fifo (\"p\") rules are not supported by the device cgroup",
            ))
        }
    };
    Ok(format!(
        "{t} {}:{} {access}",
        num(d.major())?,
        num(d.minor())?
    ))
}

fn devices(cg: &Cgroup, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let lines = rules
        .iter()
        .map(|d| Ok((d.allow(), device_rule_line(d)?)))
        .collect::<Result<Vec<_>>>()?;
    match cg.target("devices") {
        Some(t) if !t.v2 => {
            for (allow, line) in lines {
                let file = if allow {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                t.set(file, &line)?;
            }
            Ok(())
        }
        _ => match cg.v2_dir() {
            // Pure v2, or hybrid without a v1 devices controller: the processes are in the
            // unified hierarchy too, whose device programs the kernel always runs.
            Some(dir) => crate::bpf::apply_device_rules(dir, rules),
            _ => Err(CgroupError::ControllerMissing {
                controller: "devices".into(),
            }),
        },
    }
}

fn unified(cg: &Cgroup, u: &std::collections::HashMap<String, String>) -> Result<()> {
    if u.is_empty() {
        return Ok(());
    }
    let Some(dir) = cg.v2_dir() else {
        return Err(unsupported("unified cgroup resources on a cgroup v1 host"));
    };
    let mut keys: Vec<_> = u.keys().collect();
    keys.sort();
    for k in keys {
        if k.is_empty() || k.contains('/') || k.starts_with('.') || !k.contains('.') {
            return Err(invalid(
                "unified",
                format!("key {k:?} is not a cgroup file name"),
            ));
        }
        if k.starts_with("cgroup.") && k != "cgroup.max.depth" && k != "cgroup.max.descendants" {
            return Err(invalid("unified", format!("key {k:?} may not be set")));
        }
        let path = dir.join(k);
        if !path.exists() {
            let ctrl = k.split('.').next().unwrap_or(k);
            return Err(CgroupError::ControllerMissing {
                controller: format!("{ctrl} (for unified key {k})"),
            });
        }
        write(&path, &u[k])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn blkio_weights_convert() {
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10_000);
        assert_eq!(blkio_weight_to_io(500), 1 + (490 * 9999) / 990);
    }

    #[test]
    fn cpu_max_values() {
        assert_eq!(cpu_max(Some(50_000), 100_000), "50000 100000");
        assert_eq!(cpu_max(Some(-1), 100_000), "max 100000");
        assert_eq!(cpu_max(None, 20_000), "max 20000");
    }

    #[test]
    fn device_lines() {
        let mut d = LinuxDeviceCgroup::default();
        assert_eq!(device_rule_line(&d).unwrap(), "a *:* rwm");
        d.set_typ(Some(LinuxDeviceType::C));
        d.set_major(Some(1));
        d.set_minor(Some(3));
        d.set_access(Some("rw".into()));
        assert_eq!(device_rule_line(&d).unwrap(), "c 1:3 rw");
        d.set_access(Some("rx".into()));
        assert!(device_rule_line(&d).is_err());
        d.set_access(None);
        d.set_minor(Some(-5));
        assert!(device_rule_line(&d).is_err());
    }
}
