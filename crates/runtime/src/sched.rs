//! Process attributes applied by system call in the child before exec: the I/O priority
//! (`process.ioPriority`, ioprio_set), the scheduling policy (`process.scheduler`,
//! sched_setattr), the execution domain (`linux.personality`, personality) and, for
//! `exec` only as the spec says, the CPU affinity (`process.execCPUAffinity`:
//! `initial` before joining the container's cgroup, `final` after).
//!
//! Each is validated at `create` (or `exec`) time by the `validate_*` functions, before
//! anything exists on the host, and applied by [`apply`] in the container process while
//! it still holds its capabilities and before seccomp is loaded. Absent fields cost
//! nothing.

use crate::rootfs::CResult;
use nix::errno::Errno;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Process, Scheduler, Spec,
};

/// `IOPRIO_WHO_PROCESS` from linux/ioprio.h.
pub(crate) const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// Bits the class is shifted by in an ioprio value.
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// The kernel's ioprio value (class << 13 | level) for an OCI I/O priority.
pub(crate) fn ioprio_value(p: &LinuxIOPriority) -> CResult<libc::c_int> {
    let class = match p.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&p.priority()) {
        return Err(format!(
            "process.ioPriority.priority {} is out of range (0-7)",
            p.priority()
        ));
    }
    Ok((class << IOPRIO_CLASS_SHIFT) | p.priority() as libc::c_int)
}

/// The kernel's `struct sched_attr` (SCHED_ATTR_SIZE_VER1: 56 bytes).
#[repr(C)]
#[derive(Debug, Default, PartialEq, Eq)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Builds the sched_attr for an OCI scheduler, checking the values the policy allows.
fn sched_attr(s: &Scheduler) -> CResult<SchedAttr> {
    let policy = match s.policy() {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => 6,
        LinuxSchedulerPolicy::SchedIso => {
            return Err("process.scheduler.policy SCHED_ISO is not supported by Linux".into())
        }
    };
    let nice = s.nice().unwrap_or(0);
    if !(-20..=19).contains(&nice) {
        return Err(format!(
            "process.scheduler.nice {nice} is out of range (-20 to 19)"
        ));
    }
    let prio = s.priority().unwrap_or(0);
    let realtime = policy == libc::SCHED_FIFO || policy == libc::SCHED_RR;
    if realtime && !(1..=99).contains(&prio) {
        return Err(format!(
            "process.scheduler.priority {prio} is out of range for {} (1-99)",
            s.policy()
        ));
    }
    if !realtime && prio != 0 {
        return Err(format!(
            "process.scheduler.priority must be 0 for {}, not {prio}",
            s.policy()
        ));
    }
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        };
    }
    let runtime = s.runtime().unwrap_or(0);
    let deadline = s.deadline().unwrap_or(0);
    let period = s.period().unwrap_or(0);
    if policy == 6 {
        if runtime == 0 {
            return Err("process.scheduler.runtime is required for SCHED_DEADLINE".into());
        }
        let dl = if deadline == 0 { period } else { deadline };
        if dl != 0 && runtime > dl {
            return Err("process.scheduler: runtime exceeds deadline".into());
        }
        if period != 0 && dl > period {
            return Err("process.scheduler: deadline exceeds period".into());
        }
    }
    Ok(SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: policy as u32,
        sched_flags: flags,
        sched_nice: nice,
        sched_priority: prio as u32,
        sched_runtime: runtime,
        sched_deadline: deadline,
        sched_period: period,
        ..SchedAttr::default()
    })
}

/// `PER_LINUX32` from linux/personality.h.
const PER_LINUX32: libc::c_ulong = 0x0008;

/// The persona value for `linux.personality`.
fn persona(p: &LinuxPersonality) -> CResult<libc::c_ulong> {
    if let Some(f) = p.flags().as_ref().and_then(|f| f.first()) {
        return Err(format!("linux.personality flag {f:?} is not supported"));
    }
    Ok(match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    })
}

/// Parses a CPU list such as `0-2,5` into a CPU set.
fn cpu_set(list: &str) -> CResult<CpuSet> {
    let mut set = CpuSet::new();
    let bad = || format!("process.execCPUAffinity: bad CPU list {list:?}");
    for part in list.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: usize = a.trim().parse().map_err(|_| bad())?;
        let b: usize = b.trim().parse().map_err(|_| bad())?;
        if a > b || b >= CpuSet::count() {
            return Err(bad());
        }
        for cpu in a..=b {
            set.set(cpu).map_err(|_| bad())?;
        }
    }
    Ok(set)
}

/// Sets the calling process's CPU affinity to a CPU list.
fn set_affinity(list: &str, which: &str) -> CResult<()> {
    let set = cpu_set(list)?;
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("set the {which} CPU affinity {list:?}: {e}"))
}

/// Applies `process.execCPUAffinity.initial` (exec, before joining the cgroup).
pub(crate) fn apply_initial_affinity(p: &Process) -> CResult<()> {
    match p
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.initial().as_deref())
    {
        Some(l) if !l.is_empty() => set_affinity(l, "initial"),
        _ => Ok(()),
    }
}

/// Applies `process.execCPUAffinity.final` (exec, once in the cgroup).
pub(crate) fn apply_final_affinity(p: &Process) -> CResult<()> {
    let fin = p
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|a| a.cpu_affinity_final().as_deref());
    match fin {
        Some(l) if !l.is_empty() => set_affinity(l, "final"),
        _ => Ok(()),
    }
}

/// Checks `process.ioPriority`, `process.scheduler` and `process.execCPUAffinity`.
pub(crate) fn validate_process(p: &Process) -> CResult<()> {
    if let Some(a) = p.exec_cpu_affinity() {
        for l in [a.initial(), a.cpu_affinity_final()].into_iter().flatten() {
            if !l.is_empty() {
                cpu_set(l)?;
            }
        }
    }
    if let Some(io) = p.io_priority() {
        ioprio_value(io)?;
    }
    if let Some(s) = p.scheduler() {
        sched_attr(s)?;
    }
    Ok(())
}

/// Checks `linux.personality`.
pub(crate) fn validate_spec(spec: &Spec) -> CResult<()> {
    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        persona(p)?;
    }
    Ok(())
}

/// Applies the I/O priority, the scheduler and (when `spec` is given) the personality to
/// the calling process.
pub(crate) fn apply(p: &Process, spec: Option<&Spec>) -> CResult<()> {
    if let Some(io) = p.io_priority() {
        let value = ioprio_value(io)?;
        // SAFETY: ioprio_set takes three integers and touches no memory of ours.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
        if r != 0 {
            return Err(format!(
                "set the I/O priority ({} {}): {}",
                io.class(),
                io.priority(),
                Errno::last()
            ));
        }
    }
    if let Some(s) = p.scheduler() {
        let attr = sched_attr(s)?;
        // SAFETY: `attr` is a live sched_attr whose size field matches its layout; the
        // kernel only reads it.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            return Err(format!(
                "set the scheduler ({}): {}",
                s.policy(),
                Errno::last()
            ));
        }
    }
    let per = spec
        .and_then(|s| s.linux().as_ref())
        .and_then(|l| l.personality().as_ref());
    if let Some(per) = per {
        let value = persona(per)?;
        // SAFETY: personality takes an integer and touches no memory of ours.
        if unsafe { libc::personality(value) } < 0 {
            return Err(format!(
                "set personality {}: {}",
                per.domain(),
                Errno::last()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(extra: serde_json::Value) -> Process {
        let mut v = serde_json::json!({"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sched_attr_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn values_and_validation() {
        let p = process(
            serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_IDLE", "priority": 7}}),
        );
        assert_eq!(
            ioprio_value(p.io_priority().as_ref().unwrap()).unwrap(),
            (3 << 13) | 7
        );
        let p = process(serde_json::json!({"scheduler": {"policy": "SCHED_BATCH", "nice": 5}}));
        let a = sched_attr(p.scheduler().as_ref().unwrap()).unwrap();
        assert_eq!((a.sched_policy, a.sched_nice), (3, 5));
        let bad = [
            (
                serde_json::json!({"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}),
                "out of range",
            ),
            (
                serde_json::json!({"scheduler": {"policy": "SCHED_FIFO"}}),
                "1-99",
            ),
            (
                serde_json::json!({"scheduler": {"policy": "SCHED_OTHER", "priority": 3}}),
                "must be 0",
            ),
            (
                serde_json::json!({"scheduler": {"policy": "SCHED_OTHER", "nice": 20}}),
                "nice",
            ),
            (
                serde_json::json!({"scheduler": {"policy": "SCHED_ISO"}}),
                "SCHED_ISO",
            ),
            (
                serde_json::json!({"scheduler": {"policy": "SCHED_DEADLINE"}}),
                "runtime",
            ),
        ];
        for (extra, want) in bad {
            let err = validate_process(&process(extra.clone())).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }
}
