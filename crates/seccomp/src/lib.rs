//! OCI seccomp profiles compiled to kernel filters with libseccomp.
//!
//! # Model
//!
//! [`Filter::compile`] turns an OCI [`LinuxSeccomp`] into a libseccomp filter context
//! (nothing touches the kernel yet); [`Filter::load`] installs it on the calling thread
//! (or every thread with `SECCOMP_FILTER_FLAG_TSYNC`). Semantics follow runc:
//!
//! * syscall names unknown on this architecture are skipped;
//! * a rule whose action equals the default action is redundant and skipped;
//! * conditions of one rule are ANDed, unless two conditions test the same argument, in
//!   which case each condition becomes its own rule (ORed) as libseccomp cannot AND two
//!   comparisons of one argument;
//! * `SCMP_CMP_MASKED_EQ` takes the mask in `value` and the expected value in `valueTwo`;
//! * `SCMP_ACT_ERRNO`/`SCMP_ACT_TRACE` without `errnoRet` return `EPERM`;
//! * `SCMP_ACT_NOTIFY` becomes `SECCOMP_RET_USER_NOTIF`: the call waits until the agent
//!   holding the filter's listener answers it. It needs `listenerPath` (the agent's
//!   socket; the runtime connects there and sends the listener), and may be neither the
//!   default action nor used for [`HANDOFF_SYSCALLS`].
//!
//! The filter does **not** set `no_new_privs` itself: the caller (the runtime) sets it
//! when the spec asks for it, and otherwise must load the filter while it still holds
//! `CAP_SYS_ADMIN`.
//!
//! [`Program`] is the same filter exported as classic BPF (plain data that survives a
//! fork), optionally cached on disk by profile: see the `program` module.
//!
//! [`docker_default`] builds Docker's default profile for a set of capabilities and an
//! architecture.

#![warn(missing_docs)]

mod docker;
mod error;
mod program;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

pub use docker::docker_default;
pub use error::SeccompError;
pub use program::{
    Program, FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_TSYNC_ESRCH,
    FLAG_WAIT_KILLABLE_RECV, INSN_LEN,
};

/// Number of syscall arguments a condition can test.
const MAX_ARGS: usize = 6;
/// Largest errno a seccomp filter can return (`SECCOMP_RET_DATA` is 16 bits, but the
/// kernel treats values above `MAX_ERRNO` as non-errors).
const MAX_ERRNO: u32 = 4095;

/// A compiled seccomp filter, ready to be loaded. Not `Send`: compile and load it on the
/// same thread (the container's init process).
pub struct Filter {
    ctx: ScmpFilterContext,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter").finish_non_exhaustive()
    }
}

fn lib_err(
    what: impl Into<String>,
) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Libseccomp { what, source }
}

fn errno_of(what: &str, errno: Option<u32>) -> Result<i32, SeccompError> {
    let e = errno.unwrap_or(libc::EPERM as u32);
    if e > MAX_ERRNO {
        return Err(SeccompError::InvalidArgument {
            what: what.to_string(),
            reason: format!("errno {e} is larger than {MAX_ERRNO}"),
        });
    }
    // Fits: checked against MAX_ERRNO above.
    Ok(e as i32)
}

/// Map an OCI action (with its errno) to libseccomp's.
fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    what: &str,
) -> Result<ScmpAction, SeccompError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno_of(what, errno)?),
        LinuxSeccompAction::ScmpActTrace => {
            let e = errno_of(what, errno)?;
            // MAX_ERRNO < u16::MAX, so this cannot truncate.
            ScmpAction::Trace(e as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

/// System calls the runtime makes between installing a filter with a user-notification
/// listener and handing that listener over (the container's init passes it to the
/// runtime with `sendmsg`). A notified call there would wait for an agent that cannot
/// have the listener yet, so `SCMP_ACT_NOTIFY` is refused for them (runc refuses `write`
/// for the same reason).
pub const HANDOFF_SYSCALLS: &[&str] = &["sendmsg"];

/// Whether the profile sends any system call to a user-space agent (`SCMP_ACT_NOTIFY`):
/// then the filter is loaded with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and the runtime
/// hands the listener to the agent at `listenerPath`.
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// The OCI rules about user notification: `SCMP_ACT_NOTIFY` needs a `listenerPath`,
/// `listenerMetadata` needs a `listenerPath`, and (as with runc) neither the default
/// action nor the calls of [`HANDOFF_SYSCALLS`] may be notified, since the listener only
/// reaches the agent after the filter is installed.
pub(crate) fn check_notify(s: &LinuxSeccomp) -> Result<(), SeccompError> {
    let invalid = |what: &str, reason: String| SeccompError::InvalidArgument {
        what: what.to_string(),
        reason,
    };
    let has_path = s
        .listener_path()
        .as_ref()
        .is_some_and(|p| !p.as_os_str().is_empty());
    if s.listener_metadata().is_some() && !has_path {
        return Err(invalid(
            "listenerMetadata",
            "it is set but listenerPath is not".into(),
        ));
    }
    if !uses_notify(s) {
        return Ok(());
    }
    if !has_path {
        return Err(invalid(
            "listenerPath",
            "SCMP_ACT_NOTIFY is used but listenerPath (the seccomp agent's socket) is not set"
                .into(),
        ));
    }
    if s.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(invalid(
            "defaultAction",
            "SCMP_ACT_NOTIFY cannot be the default action: the runtime's own calls \
             before the agent has the listener would wait forever"
                .into(),
        ));
    }
    for rule in s.syscalls().iter().flatten() {
        if rule.action() != LinuxSeccompAction::ScmpActNotify {
            continue;
        }
        if let Some(n) = rule
            .names()
            .iter()
            .find(|n| HANDOFF_SYSCALLS.contains(&n.as_str()))
        {
            return Err(invalid(
                &format!("rule for syscall {n}"),
                format!(
                    "SCMP_ACT_NOTIFY cannot be used for {n}: the runtime uses it to hand the \
                     listener over, before the agent could answer"
                ),
            ));
        }
    }
    Ok(())
}

/// The libseccomp architecture for an OCI one.
pub fn scmp_arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// Parse an architecture name: the OCI form (`SCMP_ARCH_X86_64`), the kernel's `uname -m`
/// form (`x86_64`, `aarch64`, `i686`) or Go's (`amd64`, `arm64`, `386`).
pub fn parse_arch(name: &str) -> Result<Arch, SeccompError> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("scmp_arch_").unwrap_or(&n);
    Ok(match n {
        "native" => Arch::ScmpArchNative,
        "x86_64" | "amd64" => Arch::ScmpArchX86_64,
        "x86" | "386" | "i386" | "i486" | "i586" | "i686" => Arch::ScmpArchX86,
        "x32" => Arch::ScmpArchX32,
        "arm" | "armv7l" | "armv6l" | "armhf" | "armel" => Arch::ScmpArchArm,
        "aarch64" | "arm64" => Arch::ScmpArchAarch64,
        "mips" => Arch::ScmpArchMips,
        "mips64" => Arch::ScmpArchMips64,
        "mips64n32" => Arch::ScmpArchMips64n32,
        "mipsel" | "mipsle" => Arch::ScmpArchMipsel,
        "mipsel64" | "mips64le" => Arch::ScmpArchMipsel64,
        "mipsel64n32" | "mips64n32le" => Arch::ScmpArchMipsel64n32,
        "ppc" => Arch::ScmpArchPpc,
        "ppc64" => Arch::ScmpArchPpc64,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390" => Arch::ScmpArchS390,
        "s390x" => Arch::ScmpArchS390x,
        "parisc" => Arch::ScmpArchParisc,
        "parisc64" => Arch::ScmpArchParisc64,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loongarch64" | "loong64" => Arch::ScmpArchLoongarch64,
        "m68k" => Arch::ScmpArchM68k,
        "sh" => Arch::ScmpArchSh,
        "sheb" => Arch::ScmpArchSheb,
        _ => {
            return Err(SeccompError::InvalidArgument {
                what: "architecture".into(),
                reason: format!("unknown architecture {name:?}"),
            })
        }
    })
}

fn condition(
    syscall: &str,
    arg: &oci_spec::runtime::LinuxSeccompArg,
) -> Result<ScmpArgCompare, SeccompError> {
    let index = arg.index();
    if index >= MAX_ARGS {
        return Err(SeccompError::InvalidArgument {
            what: format!("condition of syscall {syscall}"),
            reason: format!("argument index {index} is not below {MAX_ARGS}"),
        });
    }
    let (op, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    // index < MAX_ARGS (6), so it fits in u32.
    Ok(ScmpArgCompare::new(index as u32, op, datum))
}

impl Filter {
    /// Compile an OCI seccomp configuration. Fails on errno values above 4095, argument
    /// indexes above 5, architectures or flags the installed libseccomp does not know, and
    /// on `SCMP_ACT_NOTIFY` misuse (see [`uses_notify`]): no `listenerPath`, as the
    /// default action, or for the calls of [`HANDOFF_SYSCALLS`].
    pub fn compile(s: &LinuxSeccomp) -> Result<Filter, SeccompError> {
        check_notify(s)?;
        let default = action(s.default_action(), s.default_errno_ret(), "defaultAction")?;
        let mut ctx = ScmpFilterContext::new(default).map_err(lib_err("create filter"))?;
        ctx.set_ctl_nnp(false)
            .map_err(lib_err("clear the no_new_privs attribute"))?;
        // A binary tree of syscall numbers instead of libseccomp's default linear chain:
        // the kernel emulates the filter for every syscall number when it is loaded (to
        // cache the always-allowed ones), which for Docker's default profile took 730 us
        // with the chain and 265 us with the tree, per container start
        // (`examples/load_cost.rs`). The same decisions either way; libseccomp before
        // 2.5 has no tree, and then the chain it is.
        let _ = ctx.set_ctl_optimize(2);
        for a in s.architectures().iter().flatten() {
            let arch = scmp_arch(*a);
            let present = ctx
                .is_arch_present(arch)
                .map_err(|source| SeccompError::Arch {
                    arch: a.to_string(),
                    source,
                })?;
            if !present {
                ctx.add_arch(arch).map_err(|source| SeccompError::Arch {
                    arch: a.to_string(),
                    source,
                })?;
            }
        }
        for f in s.flags().iter().flatten() {
            let r = match f {
                LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
                LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                    ctx.set_ctl_waitkill(true)
                }
            };
            r.map_err(|source| SeccompError::Flag {
                flag: f.to_string(),
                source,
            })?;
        }
        for rule in s.syscalls().iter().flatten() {
            let first = rule.names().first().map(String::as_str).unwrap_or("");
            let act = action(rule.action(), rule.errno_ret(), first)?;
            if act == default {
                continue;
            }
            let args = rule.args().as_deref().unwrap_or(&[]);
            let mut conds = Vec::with_capacity(args.len());
            let mut seen = [0usize; MAX_ARGS];
            for a in args {
                conds.push(condition(first, a)?);
                seen[a.index()] += 1;
            }
            let separate = seen.iter().any(|&n| n > 1);
            for name in rule.names() {
                let Ok(sc) = ScmpSyscall::from_name(name) else {
                    // Not a syscall on this architecture (or unknown to libseccomp).
                    continue;
                };
                let what = format!("add a rule for syscall {name}");
                if separate {
                    for c in &conds {
                        ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                            .map_err(lib_err(what.clone()))?;
                    }
                } else {
                    ctx.add_rule_conditional(act, sc, &conds)
                        .map_err(lib_err(what))?;
                }
            }
        }
        Ok(Filter { ctx })
    }

    /// Install the filter in the kernel for the calling thread (all threads with TSYNC).
    /// Needs `no_new_privs` set or `CAP_SYS_ADMIN`. Irreversible for this process. With
    /// `SCMP_ACT_NOTIFY`, libseccomp keeps the listener to itself: a runtime loads a
    /// [`Program`] instead, and gets the listener from `seccomp(2)`.
    pub fn load(&self) -> Result<(), SeccompError> {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if !may_load(&status) {
                return Err(SeccompError::NeedsPrivilege);
            }
        }
        self.ctx
            .load()
            .map_err(|source| SeccompError::Load { source })
    }
}

/// Whether a process with this `/proc/<pid>/status` may install a filter: it needs
/// `no_new_privs` or `CAP_SYS_ADMIN` in its effective set. Unknown formats say yes (the
/// kernel decides).
fn may_load(status: &str) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let nnp = field("NoNewPrivs:").map(|v| v == "1");
    let admin = field("CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .map(|caps| caps & (1 << CAP_SYS_ADMIN) != 0);
    !matches!((nnp, admin), (Some(false), Some(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn notify_maps_to_user_notif() {
        let a = action(LinuxSeccompAction::ScmpActNotify, None, "x").unwrap();
        assert_eq!(a, ScmpAction::Notify);
        let s = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "listenerPath": "/run/agent.sock",
            "listenerMetadata": "meta",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(uses_notify(&s));
        Filter::compile(&s).unwrap();
    }

    #[test]
    fn notify_misuse_is_refused() {
        let cases = [
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
                "listenerPath",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "",
                    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
                "listenerPath",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "m"}),
                "listenerMetadata",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"}),
                "default action",
            ),
            (
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
                    "syscalls": [{"names": ["mkdir", "sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}),
                "sendmsg",
            ),
        ];
        for (json, want) in cases {
            let s = profile(json.clone());
            let e = Filter::compile(&s).unwrap_err();
            assert!(
                matches!(e, SeccompError::InvalidArgument { .. }),
                "{json}: {e}"
            );
            assert!(e.to_string().contains(want), "{json}: {e}");
        }
        // A listenerPath without NOTIFY is ignored, as the spec says.
        let s =
            profile(serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a"}));
        assert!(!uses_notify(&s));
        Filter::compile(&s).unwrap();
    }

    #[test]
    fn load_privilege_check() {
        let st = |nnp: &str, eff: &str| format!("Name:\tx\nCapEff:\t{eff}\nNoNewPrivs:\t{nnp}\n");
        assert!(may_load(&st("0", "000001ffffffffff")));
        assert!(may_load(&st("1", "0000000000000000")));
        assert!(!may_load(&st("0", "00000000a80425fb")));
        assert!(may_load("garbage"));
    }
}
