//! `linux.memoryPolicy`: the NUMA memory policy of the container's processes.
//!
//! The runtime checks the policy when it loads the config (an unusable policy is an
//! `InvalidConfig` error before anything exists on the host): the mode's rules on the node
//! list, the flags, and, for absolute node numbers, that every node is one this host can
//! have (`/sys/devices/system/node/possible`). The container's init (and every exec'd
//! process) then calls set_mempolicy(2) while it still holds its capabilities and before
//! seccomp is loaded; the policy is a property of the task that fork and execve keep, so
//! the user's program and its children allocate under it (`/proc/<pid>/numa_maps` shows
//! it). What the kernel still refuses (a mode newer than the kernel, nodes outside the
//! container's cpuset) is reported with the errno and its likely cause.

use oci_spec::runtime::{LinuxMemoryPolicy, MemoryPolicyFlagType, MemoryPolicyModeType};
use std::collections::BTreeSet;

/// The highest node number accepted in a node list. The kernel's own limit
/// (MAX_NUMNODES) is at most 1024 on every architecture; this bound only keeps a hostile
/// config from making the runtime build a huge mask.
const MAX_NODE: u32 = 4095;

/// set_mempolicy(2) mode numbers (linux/mempolicy.h).
const MPOL_DEFAULT: i32 = 0;
const MPOL_PREFERRED: i32 = 1;
const MPOL_BIND: i32 = 2;
const MPOL_INTERLEAVE: i32 = 3;
const MPOL_LOCAL: i32 = 4;
const MPOL_PREFERRED_MANY: i32 = 5;
const MPOL_WEIGHTED_INTERLEAVE: i32 = 6;
/// Mode flags, or-ed into the mode argument.
const MPOL_F_STATIC_NODES: i32 = 1 << 15;
const MPOL_F_RELATIVE_NODES: i32 = 1 << 14;
const MPOL_F_NUMA_BALANCING: i32 = 1 << 13;

/// The modes this runtime recognises, as named in config.json (for `features`).
pub(crate) const MODES: &[&str] = &[
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
];

/// The mode flags this runtime recognises (for `features`).
pub(crate) const FLAGS: &[&str] = &[
    "MPOL_F_NUMA_BALANCING",
    "MPOL_F_RELATIVE_NODES",
    "MPOL_F_STATIC_NODES",
];

/// A checked policy, ready for set_mempolicy(2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Policy {
    /// The mode with its flags or-ed in (the syscall's first argument).
    pub mode: i32,
    /// The node mask, 64 nodes per word; empty for no nodes.
    pub mask: Vec<u64>,
    /// The nodes as given, for messages (`0-3,7`).
    pub nodes: String,
    /// The mode's name, for messages.
    pub name: &'static str,
}

/// The syscall number and name of a mode.
fn mode_info(m: MemoryPolicyModeType) -> (i32, &'static str) {
    match m {
        MemoryPolicyModeType::MpolDefault => (MPOL_DEFAULT, "MPOL_DEFAULT"),
        MemoryPolicyModeType::MpolPreferred => (MPOL_PREFERRED, "MPOL_PREFERRED"),
        MemoryPolicyModeType::MpolBind => (MPOL_BIND, "MPOL_BIND"),
        MemoryPolicyModeType::MpolInterleave => (MPOL_INTERLEAVE, "MPOL_INTERLEAVE"),
        MemoryPolicyModeType::MpolLocal => (MPOL_LOCAL, "MPOL_LOCAL"),
        MemoryPolicyModeType::MpolPreferredMany => (MPOL_PREFERRED_MANY, "MPOL_PREFERRED_MANY"),
        MemoryPolicyModeType::MpolWeightedInterleave => {
            (MPOL_WEIGHTED_INTERLEAVE, "MPOL_WEIGHTED_INTERLEAVE")
        }
    }
}

/// Parses a node list in the kernel's list format: comma-separated node numbers and
/// inclusive ranges (`0-3,7`). An empty (or blank) list is the empty set.
pub(crate) fn parse_nodes(list: &str) -> Result<BTreeSet<u32>, String> {
    let list = list.trim();
    let mut nodes = BTreeSet::new();
    if list.is_empty() {
        return Ok(nodes);
    }
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("bad node number {s:?} in node list {list:?}"));
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("node number {s} in node list {list:?} is too large"))?;
        if n > MAX_NODE {
            return Err(format!(
                "node {n} in node list {list:?} is above the limit of {MAX_NODE}"
            ));
        }
        Ok(n)
    };
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("range {part} in node list {list:?} goes down"));
                }
                nodes.extend(a..=b);
            }
            None => {
                nodes.insert(num(part)?);
            }
        }
    }
    Ok(nodes)
}

/// The nodes this host can ever have (`/sys/devices/system/node/possible`), or None where
/// the kernel does not say (no NUMA support: set_mempolicy then reports it).
pub(crate) fn host_possible_nodes() -> Option<BTreeSet<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/node/possible").ok()?;
    parse_nodes(&text).ok()
}

/// Checks a policy against the mode's rules and, for absolute node numbers, against
/// `possible` (the host's possible nodes; None skips that check). Returns what the
/// syscall needs, or the reason the policy cannot work.
pub(crate) fn check(
    p: &LinuxMemoryPolicy,
    possible: Option<&BTreeSet<u32>>,
) -> Result<Policy, String> {
    let (mode, name) = mode_info(p.mode());
    let given = p.nodes().as_deref().unwrap_or("");
    let nodes = parse_nodes(given).map_err(|e| format!("linux.memoryPolicy.nodes: {e}"))?;
    let mut flags = 0;
    for f in p.flags().iter().flatten() {
        flags |= match f {
            MemoryPolicyFlagType::MpolFStaticNodes => MPOL_F_STATIC_NODES,
            MemoryPolicyFlagType::MpolFRelativeNodes => MPOL_F_RELATIVE_NODES,
            MemoryPolicyFlagType::MpolFNumaBalancing => MPOL_F_NUMA_BALANCING,
        };
    }
    let bad = |why: String| Err(format!("linux.memoryPolicy: {why}"));
    match mode {
        MPOL_DEFAULT | MPOL_LOCAL => {
            if !nodes.is_empty() {
                return bad(format!("{name} takes no nodes (got {given:?})"));
            }
            if flags != 0 {
                return bad(format!("{name} takes no flags"));
            }
        }
        // An empty list with MPOL_PREFERRED means "the local node" (set_mempolicy(2)).
        MPOL_PREFERRED => {}
        _ if nodes.is_empty() => return bad(format!("{name} needs at least one node")),
        _ => {}
    }
    let both = MPOL_F_STATIC_NODES | MPOL_F_RELATIVE_NODES;
    if flags & both == both {
        return bad("MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other".into());
    }
    if flags & MPOL_F_NUMA_BALANCING != 0 && mode != MPOL_BIND && mode != MPOL_PREFERRED_MANY {
        return bad(format!(
            "MPOL_F_NUMA_BALANCING works with MPOL_BIND or MPOL_PREFERRED_MANY only, not {name}"
        ));
    }
    // Relative node numbers index the nodes the container may use, whatever they are.
    if flags & MPOL_F_RELATIVE_NODES == 0 {
        if let Some(possible) = possible {
            if let Some(n) = nodes.iter().find(|n| !possible.contains(n)) {
                let list: Vec<String> = possible.iter().map(u32::to_string).collect();
                return bad(format!(
                    "node {n} is not a NUMA node this host can have (possible nodes: {})",
                    list.join(",")
                ));
            }
        }
    }
    let mut mask = Vec::new();
    if let Some(&last) = nodes.last() {
        mask = vec![0u64; last as usize / 64 + 1];
        for n in &nodes {
            mask[*n as usize / 64] |= 1 << (n % 64);
        }
    }
    Ok(Policy {
        mode: mode | flags,
        mask,
        nodes: given.to_string(),
        name,
    })
}

/// Validates `linux.memoryPolicy` of a config against this host (see [`check`]).
pub(crate) fn validate_spec(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    {
        Some(p) => check(p, host_possible_nodes().as_ref()).map(drop),
        None => Ok(()),
    }
}

/// Sets the calling task's memory policy from `linux.memoryPolicy`, if the config has
/// one. Runs in the container's init or exec'd process, before seccomp and before the
/// capabilities are dropped. The config was validated when it was loaded; what the
/// kernel refuses comes back with its errno and likely cause.
pub(crate) fn apply(spec: &oci_spec::runtime::Spec) -> Result<(), String> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.memory_policy().as_ref())
    else {
        return Ok(());
    };
    let pol = check(p, None)?;
    set_mempolicy(&pol)
}

/// Calls set_mempolicy(2) with a checked policy.
fn set_mempolicy(p: &Policy) -> Result<(), String> {
    let (ptr, maxnode) = if p.mask.is_empty() {
        (std::ptr::null(), 0usize)
    } else {
        // The kernel reads `maxnode - 1` bits (set_mempolicy(2), NOTES): one more than
        // the mask holds.
        (p.mask.as_ptr(), p.mask.len() * 64 + 1)
    };
    // SAFETY: `ptr` is null with maxnode 0, or points to `mask.len()` initialised u64
    // words, which cover the `maxnode - 1` bits the kernel reads; `p.mask` outlives the
    // call and the kernel copies the mask.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, p.mode, ptr, maxnode) };
    if r == 0 {
        return Ok(());
    }
    let e = nix::errno::Errno::last();
    let why = match e {
        nix::errno::Errno::EINVAL => {
            "; the kernel may not know the mode or a flag (MPOL_F_NUMA_BALANCING needs \
             Linux 5.12, MPOL_PREFERRED_MANY 5.15, MPOL_WEIGHTED_INTERLEAVE 6.9), or no \
             node of the list has memory the container may use (its cpuset)"
        }
        nix::errno::Errno::ENOSYS => "; the kernel has no NUMA support",
        _ => "",
    };
    let nodes = if p.nodes.is_empty() {
        String::new()
    } else {
        format!(" nodes {}", p.nodes)
    };
    Err(format!("set memory policy {}{nodes}: {e}{why}", p.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(v: serde_json::Value) -> LinuxMemoryPolicy {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn node_lists_parse() {
        let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
        assert_eq!(parse_nodes("0-3,7").unwrap(), set(&[0, 1, 2, 3, 7]));
        assert_eq!(parse_nodes("5").unwrap(), set(&[5]));
        assert_eq!(parse_nodes(" 1,1,0 \n").unwrap(), set(&[0, 1]));
        assert_eq!(parse_nodes("").unwrap(), set(&[]));
        assert_eq!(parse_nodes("2-2").unwrap(), set(&[2]));
        for bad in [
            "0-",
            "-1",
            "a",
            "1,,2",
            "3-1",
            "1 ,2",
            "4096",
            "99999999999",
            "1-2-3",
            "+1",
        ] {
            assert!(parse_nodes(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn policies_become_syscall_arguments() {
        let possible: BTreeSet<u32> = (0..=3).collect();
        let p = check(
            &policy(
                serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "1-2",
                "flags": ["MPOL_F_STATIC_NODES"]}),
            ),
            Some(&possible),
        )
        .unwrap();
        assert_eq!(p.mode, MPOL_INTERLEAVE | MPOL_F_STATIC_NODES);
        assert_eq!(p.mask, vec![0b110]);
        let p = check(
            &policy(serde_json::json!({"mode": "MPOL_BIND", "nodes": "0,65",
                "flags": ["MPOL_F_RELATIVE_NODES", "MPOL_F_NUMA_BALANCING"]})),
            Some(&possible),
        )
        .unwrap();
        assert_eq!(
            p.mode,
            MPOL_BIND | MPOL_F_RELATIVE_NODES | MPOL_F_NUMA_BALANCING
        );
        assert_eq!(p.mask, vec![1, 2]);
        let p = check(&policy(serde_json::json!({"mode": "MPOL_LOCAL"})), None).unwrap();
        assert_eq!((p.mode, p.mask.len()), (MPOL_LOCAL, 0));
        let p = check(&policy(serde_json::json!({"mode": "MPOL_PREFERRED"})), None).unwrap();
        assert_eq!(p.mode, MPOL_PREFERRED);
        let p = check(
            &policy(serde_json::json!({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0"})),
            None,
        )
        .unwrap();
        assert_eq!(p.mode, 6);
    }

    #[test]
    fn bad_policies_are_refused() {
        let possible: BTreeSet<u32> = [0].into();
        let cases = [
            (
                serde_json::json!({"mode": "MPOL_DEFAULT", "nodes": "0"}),
                "takes no nodes",
            ),
            (
                serde_json::json!({"mode": "MPOL_LOCAL", "nodes": "0"}),
                "takes no nodes",
            ),
            (
                serde_json::json!({"mode": "MPOL_LOCAL", "flags": ["MPOL_F_STATIC_NODES"]}),
                "takes no flags",
            ),
            (
                serde_json::json!({"mode": "MPOL_BIND"}),
                "at least one node",
            ),
            (
                serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": ""}),
                "at least one node",
            ),
            (
                serde_json::json!({"mode": "MPOL_PREFERRED_MANY"}),
                "at least one node",
            ),
            (
                serde_json::json!({"mode": "MPOL_BIND", "nodes": "0-x"}),
                "bad node number",
            ),
            (
                serde_json::json!({"mode": "MPOL_BIND", "nodes": "0,1"}),
                "node 1 is not a NUMA node",
            ),
            (
                serde_json::json!({"mode": "MPOL_BIND", "nodes": "0",
                    "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]}),
                "exclude each other",
            ),
            (
                serde_json::json!({"mode": "MPOL_INTERLEAVE", "nodes": "0",
                    "flags": ["MPOL_F_NUMA_BALANCING"]}),
                "MPOL_BIND or MPOL_PREFERRED_MANY only",
            ),
        ];
        for (v, want) in cases {
            let err = check(&policy(v.clone()), Some(&possible)).unwrap_err();
            assert!(err.contains(want), "{v}: {err}");
            assert!(err.starts_with("linux.memoryPolicy"), "{err}");
        }
        // Relative nodes are indices into the allowed set: not checked against the host.
        let v = serde_json::json!({"mode": "MPOL_BIND", "nodes": "3",
            "flags": ["MPOL_F_RELATIVE_NODES"]});
        assert!(check(&policy(v), Some(&possible)).is_ok());
        // An unknown mode or flag is a schema error already.
        let v = serde_json::json!({"mode": "MPOL_FOO"});
        assert!(serde_json::from_value::<LinuxMemoryPolicy>(v).is_err());
    }

    #[test]
    fn kernel_refusals_name_the_cause() {
        // A mode no kernel knows: EINVAL, reported with the likely causes. Nothing is
        // changed for the test thread.
        let p = Policy {
            mode: 99,
            mask: vec![1],
            nodes: "0".into(),
            name: "MPOL_FUTURE",
        };
        let err = set_mempolicy(&p).unwrap_err();
        assert!(
            err.starts_with("set memory policy MPOL_FUTURE nodes 0: EINVAL"),
            "{err}"
        );
        assert!(err.contains("MPOL_WEIGHTED_INTERLEAVE 6.9"), "{err}");
    }

    #[test]
    fn host_nodes_are_readable() {
        if let Some(nodes) = host_possible_nodes() {
            assert!(nodes.contains(&0), "{nodes:?}");
        }
    }
}
