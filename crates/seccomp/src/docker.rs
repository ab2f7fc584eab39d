//! Docker's default seccomp profile, resolved into a plain OCI profile.
//!
//! Docker's profile format extends OCI's: a top-level `archMap` (for each native
//! architecture, the sub-architectures to allow too) and, per syscall rule, `includes`
//! and `excludes` conditions on capabilities, architectures and the minimum kernel
//! version. [`docker_default`] evaluates those conditions for one capability set and
//! architecture:
//!
//! * a rule applies only if every capability in `includes.caps` is allowed, the
//!   architecture is one of `includes.arches` (when given) and the running kernel is at
//!   least `includes.minKernel` (when given);
//! * a rule is dropped if any capability in `excludes.caps` is allowed or the
//!   architecture is one of `excludes.arches`.
//!
//! The profile text is `profiles/docker-default.json` (from Moby, Apache-2.0; see
//! `profiles/README.md`).

use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSyscall};
use serde::Deserialize;

/// Docker's default profile, verbatim.
const DOCKER_DEFAULT_JSON: &str = include_str!("../profiles/docker-default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    syscalls: Option<Vec<Rule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Cond>,
    #[serde(default)]
    excludes: Option<Cond>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cond {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// Docker's (Go's) name for an architecture, as used in `includes.arches`.
fn docker_arch_name(a: Arch) -> Option<&'static str> {
    Some(match a {
        Arch::ScmpArchX86_64 => "amd64",
        Arch::ScmpArchX86 => "x86",
        Arch::ScmpArchX32 => "x32",
        Arch::ScmpArchArm => "arm",
        Arch::ScmpArchAarch64 => "arm64",
        Arch::ScmpArchMips => "mips",
        Arch::ScmpArchMips64 => "mips64",
        Arch::ScmpArchMips64n32 => "mips64n32",
        Arch::ScmpArchMipsel => "mipsel",
        Arch::ScmpArchMipsel64 => "mipsel64",
        Arch::ScmpArchMipsel64n32 => "mipsel64n32",
        Arch::ScmpArchPpc => "ppc",
        Arch::ScmpArchPpc64 => "ppc64",
        Arch::ScmpArchPpc64le => "ppc64le",
        Arch::ScmpArchS390 => "s390",
        Arch::ScmpArchS390x => "s390x",
        Arch::ScmpArchRiscv64 => "riscv64",
        Arch::ScmpArchLoongarch64 => "loong64",
        _ => return None,
    })
}

/// `(major, minor)` of a kernel release string such as `6.18.0-1-amd64` or `4.8`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn running_kernel() -> Option<(u32, u32)> {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    kernel_version(r.trim())
}

fn profile() -> Profile {
    // The embedded JSON is a constant of this crate (not input); the unit test
    // `embedded_profile_parses` guarantees it deserialises.
    serde_json::from_str(DOCKER_DEFAULT_JSON).expect("embedded docker seccomp profile is valid")
}

/// Docker's default seccomp profile for a container whose bounding capabilities are
/// `allowed_caps` (names like `CAP_SYS_ADMIN`; a name without the `CAP_` prefix is
/// accepted too) on architecture `arch` (`amd64`/`x86_64`, `arm64`/`aarch64`, ... as
/// accepted by [`crate::parse_arch`]; an unknown name yields no `architectures`, so
/// libseccomp uses the native one, and no arch-specific rules).
///
/// `minKernel` conditions are evaluated against the running kernel.
pub fn docker_default(allowed_caps: &[String], arch: &str) -> LinuxSeccomp {
    resolve(profile(), allowed_caps, arch, running_kernel())
}

fn has_cap(caps: &[String], want: &str) -> bool {
    let norm = |c: &str| {
        let c = c.trim().to_ascii_uppercase();
        if c.starts_with("CAP_") {
            c
        } else {
            format!("CAP_{c}")
        }
    };
    let want = norm(want);
    caps.iter().any(|c| norm(c) == want)
}

fn resolve(p: Profile, caps: &[String], arch: &str, kernel: Option<(u32, u32)>) -> LinuxSeccomp {
    let native = crate::parse_arch(arch).ok();
    let native_name = native.and_then(docker_arch_name);

    let mut arches = Vec::new();
    if let Some(n) = native {
        for m in p.arch_map.iter().flatten() {
            if m.architecture == n {
                arches.push(m.architecture);
                arches.extend(m.sub_architectures.iter().flatten().copied());
            }
        }
    }

    let mut rules = Vec::new();
    for r in p.syscalls.into_iter().flatten() {
        let inc = r.includes.unwrap_or_default();
        let exc = r.excludes.unwrap_or_default();
        if !inc.caps.iter().flatten().all(|c| has_cap(caps, c)) {
            continue;
        }
        if let Some(list) = &inc.arches {
            if !native_name.is_some_and(|n| list.iter().any(|a| a == n)) {
                continue;
            }
        }
        if let Some(min) = inc.min_kernel.as_deref().and_then(kernel_version) {
            if kernel.is_none_or(|k| k < min) {
                continue;
            }
        }
        if exc.caps.iter().flatten().any(|c| has_cap(caps, c)) {
            continue;
        }
        if let Some(list) = &exc.arches {
            if native_name.is_some_and(|n| list.iter().any(|a| a == n)) {
                continue;
            }
        }
        let mut s = LinuxSyscall::default();
        s.set_names(r.names);
        s.set_action(r.action);
        s.set_errno_ret(r.errno_ret);
        s.set_args(r.args);
        rules.push(s);
    }

    let mut out = LinuxSeccomp::default();
    out.set_default_action(p.default_action);
    out.set_default_errno_ret(p.default_errno_ret);
    out.set_architectures(if arches.is_empty() {
        None
    } else {
        Some(arches)
    });
    out.set_syscalls(Some(rules));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    fn allowed(p: &LinuxSeccomp, name: &str) -> bool {
        p.syscalls().iter().flatten().any(|s| {
            s.action() == LinuxSeccompAction::ScmpActAllow && s.names().iter().any(|n| n == name)
        })
    }

    #[test]
    fn embedded_profile_parses() {
        let p = profile();
        assert_eq!(p.default_action, LinuxSeccompAction::ScmpActErrno);
        assert!(p.syscalls.as_ref().is_some_and(|s| s.len() > 10));
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("5"), Some((5, 0)));
        assert_eq!(kernel_version("x"), None);
    }

    #[test]
    fn default_caps_on_amd64() {
        let p = docker_default(&caps(&["CAP_CHOWN", "CAP_KILL"]), "amd64");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(1));
        assert_eq!(
            p.architectures().clone().unwrap_or_default(),
            vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        for ok in [
            "read",
            "write",
            "openat",
            "arch_prctl",
            "modify_ldt",
            "clone",
        ] {
            assert!(allowed(&p, ok), "{ok} should be allowed");
        }
        for no in [
            "reboot",
            "kexec_load",
            "kcmp",
            "pidfd_getfd",
            "mount",
            "chroot",
            "bpf",
            "init_module",
        ] {
            assert!(!allowed(&p, no), "{no} should not be allowed");
        }
        // clone3 gets ENOSYS without CAP_SYS_ADMIN so that libc falls back to clone.
        let c3 = p
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names().iter().any(|n| n == "clone3"))
            .expect("clone3 rule");
        assert_eq!(c3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(c3.errno_ret(), Some(libc::ENOSYS as u32));
        // Arch-specific rules of other arches are dropped.
        assert!(!allowed(&p, "s390_pci_mmio_read"));
        assert!(!allowed(&p, "riscv_flush_icache"));
    }

    #[test]
    fn caps_unlock_syscalls() {
        let p = docker_default(
            &caps(&["CAP_SYS_BOOT", "SYS_PTRACE", "CAP_SYS_ADMIN"]),
            "x86_64",
        );
        assert!(allowed(&p, "reboot"));
        assert!(allowed(&p, "kcmp"));
        assert!(allowed(&p, "pidfd_getfd"));
        assert!(allowed(&p, "mount"));
        assert!(allowed(&p, "clone3"));
        // No capability unlocks kexec_load in Docker's profile.
        assert!(!allowed(&p, "kexec_load"));
        // CAP_SYS_ADMIN excludes the restricted clone rule: clone is allowed without
        // argument conditions by the CAP_SYS_ADMIN rule instead.
        let clone_rules: Vec<_> = p
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == "clone"))
            .collect();
        assert!(clone_rules.iter().all(|s| s.args().is_none()));
    }

    #[test]
    fn arm64_gets_arm_rules() {
        let p = docker_default(&[], "aarch64");
        assert_eq!(
            p.architectures().clone().unwrap_or_default(),
            vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
        );
        assert!(allowed(&p, "arm_fadvise64_64"));
        assert!(!allowed(&p, "arch_prctl"));
    }

    #[test]
    fn min_kernel_is_honoured() {
        let old = resolve(profile(), &[], "amd64", Some((4, 4)));
        assert!(!allowed(&old, "process_vm_readv"));
        let new = resolve(profile(), &[], "amd64", Some((6, 1)));
        assert!(allowed(&new, "process_vm_readv"));
    }

    #[test]
    fn unknown_arch_has_no_arch_list() {
        let p = docker_default(&[], "vax");
        assert!(p.architectures().is_none());
        assert!(allowed(&p, "read"));
    }
}
