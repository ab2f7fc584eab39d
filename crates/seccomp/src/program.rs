//! Compiled filters as classic BPF programs, and a cache of them on disk.
//!
//! # Model
//!
//! libseccomp needs several milliseconds of CPU to turn a profile as large as Docker's
//! default (three architectures, hundreds of rules) into BPF, and a container runtime does
//! that for every container and every exec. The result depends only on the profile, the
//! libseccomp version and the host's native architecture, so [`Program::compile_cached`]
//! keys a cache file on a SHA-256 of those three and reuses the BPF it finds there.
//!
//! A cache file is `BSCF` + the program's length (u32 little endian) + the instructions
//! (8 bytes each) + SHA-256 of the instructions. A file that is short, long or fails the
//! checksum (a torn write after a power loss, say) is ignored and rewritten; files are
//! written to a temporary name and renamed, so readers never see half a file. The cache
//! directory must be writable only by the runtime's user (it lives in the runtime's
//! state root), since whatever program it holds is loaded into containers.
//!
//! Loading a [`Program`] is the caller's job (`seccomp(SECCOMP_SET_MODE_FILTER, flags,
//! prog)`): this crate holds no `unsafe`.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use libseccomp::ScmpVersion;
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag};
use sha2::{Digest, Sha256};

use crate::{Filter, SeccompError};

/// `SECCOMP_FILTER_FLAG_TSYNC`.
pub const FLAG_TSYNC: u32 = 1;
/// `SECCOMP_FILTER_FLAG_LOG`.
pub const FLAG_LOG: u32 = 2;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
pub const FLAG_SPEC_ALLOW: u32 = 4;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`: `seccomp(2)` returns a user-notification fd.
pub const FLAG_NEW_LISTENER: u32 = 8;
/// `SECCOMP_FILTER_FLAG_TSYNC_ESRCH`: with TSYNC, report a sync failure as `ESRCH` (the
/// kernel requires it with `NEW_LISTENER`, whose fd takes the return value).
pub const FLAG_TSYNC_ESRCH: u32 = 16;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (only valid with `NEW_LISTENER`).
pub const FLAG_WAIT_KILLABLE_RECV: u32 = 32;

const MAGIC: &[u8; 4] = b"BSCF";
/// Size of one `struct sock_filter`.
pub const INSN_LEN: usize = 8;
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// A compiled seccomp filter: classic BPF instructions plus the `seccomp(2)` flags the
/// profile asked for. Plain data, so it can be compiled in one process and loaded in a
/// forked child after `pivot_root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The instructions, `INSN_LEN` bytes each, in the host's byte order.
    pub instructions: Vec<u8>,
    /// `SECCOMP_FILTER_FLAG_*` bits for `seccomp(SECCOMP_SET_MODE_FILTER, ...)`.
    pub flags: u32,
}

impl Program {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.instructions.len() / INSN_LEN
    }

    /// Whether the program has no instructions (never true for a compiled profile).
    pub fn is_empty(&self) -> bool {
        self.instructions.is_empty()
    }

    /// Whether loading the program creates a user-notification listener (the profile uses
    /// `SCMP_ACT_NOTIFY`): `seccomp(2)` then returns its fd, for the agent.
    pub fn has_listener(&self) -> bool {
        self.flags & FLAG_NEW_LISTENER != 0
    }

    /// Compiles `s` with libseccomp and exports the result as BPF.
    pub fn compile(s: &LinuxSeccomp) -> Result<Program, SeccompError> {
        let filter = Filter::compile(s)?;
        let instructions = export(&filter)?;
        Ok(Program {
            instructions,
            flags: flags_of(s),
        })
    }

    /// Like [`Program::compile`], but first looks in `cache_dir` for the program of an
    /// equal profile, and stores a newly compiled one there. Problems with the cache
    /// (unwritable directory, corrupt file) only cost the compilation.
    pub fn compile_cached(s: &LinuxSeccomp, cache_dir: &Path) -> Result<Program, SeccompError> {
        // The key leaves the listener out: check its rules before a cache hit skips them.
        crate::check_notify(s)?;
        let Some(key) = cache_key(s) else {
            return Program::compile(s);
        };
        let path = cache_dir.join(format!("{key}.bpf"));
        if let Some(instructions) = fs::read(&path).ok().and_then(|d| decode(&d)) {
            return Ok(Program {
                instructions,
                flags: flags_of(s),
            });
        }
        let p = Program::compile(s)?;
        let _ = store(cache_dir, &path, &p.instructions);
        Ok(p)
    }
}

/// The `seccomp(2)` flags of a profile: its own, plus `NEW_LISTENER` when it uses
/// `SCMP_ACT_NOTIFY` (with `TSYNC_ESRCH` if it asks for TSYNC, which the kernel requires
/// with a listener). `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` only means something with a
/// listener, so it is left out without one (as libseccomp does).
fn flags_of(s: &LinuxSeccomp) -> u32 {
    let listener = crate::uses_notify(s);
    let flags = s
        .flags()
        .iter()
        .flatten()
        .map(|f| match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => FLAG_SPEC_ALLOW,
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv if listener => {
                FLAG_WAIT_KILLABLE_RECV
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => 0,
        })
        .fold(0, |a, b| a | b);
    match (listener, flags & FLAG_TSYNC != 0) {
        (false, _) => flags,
        (true, false) => flags | FLAG_NEW_LISTENER,
        (true, true) => flags | FLAG_NEW_LISTENER | FLAG_TSYNC_ESRCH,
    }
}

/// SHA-256 (hex) of what decides the BPF: profile, libseccomp version, native arch. The
/// agent's socket and metadata (`listenerPath`, `listenerMetadata`) do not change the
/// program and often differ per container, so they are left out of the key: containers
/// that differ only there share one cache file. (The flags, listener included, are not
/// cached: they are recomputed from the profile.)
fn cache_key(s: &LinuxSeccomp) -> Option<String> {
    let mut s = s.clone();
    s.set_listener_path(None);
    s.set_listener_metadata(None);
    let profile = serde_json::to_vec(&s).ok()?;
    let v = ScmpVersion::current().ok()?;
    let mut h = Sha256::new();
    // v2: programs compiled as a binary tree (v1 files hold linear chains).
    h.update(b"berth-seccomp-v2\0");
    h.update(format!("{}.{}.{}\0", v.major, v.minor, v.micro));
    h.update(std::env::consts::ARCH);
    h.update(b"\0");
    h.update(&profile);
    Some(hex::encode(h.finalize()))
}

/// Exports a filter's BPF through an anonymous temporary file.
fn export(f: &Filter) -> Result<Vec<u8>, SeccompError> {
    let io = |source| SeccompError::Export { source };
    let mut file = tempfile::tempfile().map_err(io)?;
    f.ctx
        .export_bpf(&file)
        .map_err(|e| SeccompError::Libseccomp {
            what: "export the filter as BPF".into(),
            source: e,
        })?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(io)?;
    if out.is_empty() || !out.len().is_multiple_of(INSN_LEN) || out.len() / INSN_LEN > MAX_INSNS {
        return Err(io(std::io::Error::other(format!(
            "libseccomp produced a program of {} bytes",
            out.len()
        ))));
    }
    Ok(out)
}

/// The cache file's bytes for a program.
fn encode(insns: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(insns.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(insns.len() as u32).to_le_bytes());
    out.extend_from_slice(insns);
    out.extend_from_slice(&Sha256::digest(insns));
    out
}

/// The program in a cache file, if the file is whole and intact.
fn decode(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.strip_prefix(MAGIC.as_slice())?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if len == 0
        || !len.is_multiple_of(INSN_LEN)
        || len / INSN_LEN > MAX_INSNS
        || rest.len() != len + 32
    {
        return None;
    }
    let (insns, sum) = rest.split_at(len);
    (Sha256::digest(insns).as_slice() == sum).then(|| insns.to_vec())
}

/// Writes a cache file atomically (temporary name, then rename).
fn store(dir: &Path, path: &Path, insns: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{}", std::process::id()));
    fs::write(&tmp, encode(insns))?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn profile(name: &str) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec![name.to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .build()
                .unwrap()])
            .flags(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog])
            .build()
            .unwrap()
    }

    /// The `k` of every `BPF_RET | BPF_K` instruction: the actions the program returns.
    fn returns(p: &Program) -> Vec<u32> {
        const BPF_RET_K: u16 = 0x06;
        p.instructions
            .chunks_exact(INSN_LEN)
            .filter(|c| u16::from_ne_bytes([c[0], c[1]]) == BPF_RET_K)
            .map(|c| u32::from_ne_bytes([c[4], c[5], c[6], c[7]]))
            .collect()
    }

    fn notify_profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn notify_compiles_to_user_notif_with_a_listener() {
        const RET_USER_NOTIF: u32 = 0x7fc0_0000;
        const RET_ERRNO_EPERM: u32 = 0x0005_0000 | 1;
        let p = notify_profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/agent.sock",
            "syscalls": [
                {"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ]
        }));
        let prog = Program::compile(&p).unwrap();
        assert!(
            returns(&prog).contains(&RET_USER_NOTIF),
            "{:x?}",
            returns(&prog)
        );
        assert!(returns(&prog).contains(&RET_ERRNO_EPERM));
        assert_eq!(prog.flags, FLAG_NEW_LISTENER);
        assert!(prog.has_listener());
        // Without NOTIFY: no USER_NOTIF return and no listener.
        let plain = Program::compile(&profile("getppid")).unwrap();
        assert!(!returns(&plain).contains(&RET_USER_NOTIF));
        assert!(!plain.has_listener());
        // TSYNC with a listener needs TSYNC_ESRCH.
        let mut tsync = p.clone();
        tsync.set_flags(Some(vec![LinuxSeccompFilterFlag::SeccompFilterFlagTsync]));
        assert_eq!(
            flags_of(&tsync),
            FLAG_TSYNC | FLAG_NEW_LISTENER | FLAG_TSYNC_ESRCH
        );
        // WAIT_KILLABLE_RECV only with a listener (the kernel refuses it otherwise).
        let waitkill = Some(vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
        ]);
        let mut w = p.clone();
        w.set_flags(waitkill.clone());
        assert_eq!(flags_of(&w), FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV);
        let mut w = profile("getppid");
        w.set_flags(waitkill);
        assert_eq!(flags_of(&w), 0);
    }

    #[test]
    fn listener_settings_do_not_split_the_cache_but_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let with = |path: Option<&str>, meta: Option<&str>| {
            let mut v = serde_json::json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_NOTIFY"}]
            });
            if let Some(p) = path {
                v["listenerPath"] = p.into();
            }
            if let Some(m) = meta {
                v["listenerMetadata"] = m.into();
            }
            notify_profile(v)
        };
        let a = with(Some("/run/a.sock"), Some("one"));
        let b = with(Some("/run/b.sock"), None);
        assert_eq!(cache_key(&a), cache_key(&b));
        assert_ne!(cache_key(&a), cache_key(&profile("getppid")));
        let pa = Program::compile_cached(&a, dir.path()).unwrap();
        let pb = Program::compile_cached(&b, dir.path()).unwrap();
        assert_eq!(pa, pb);
        assert!(pb.has_listener());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // The cached program does not let a profile without listenerPath through.
        let e = Program::compile_cached(&with(None, None), dir.path()).unwrap_err();
        assert!(e.to_string().contains("listenerPath"), "{e}");
        assert!(matches!(e, SeccompError::InvalidArgument { .. }));
    }

    #[test]
    fn encode_decode_round_trip_and_rejects_damage() {
        let insns: Vec<u8> = (0..64u8).collect();
        let enc = encode(&insns);
        assert_eq!(decode(&enc).as_deref(), Some(insns.as_slice()));
        assert_eq!(decode(&enc[..enc.len() - 1]), None, "torn file");
        let mut bad = enc.clone();
        bad[10] ^= 1;
        assert_eq!(decode(&bad), None, "flipped bit");
        assert_eq!(decode(b"BSCF\0\0\0\0"), None, "empty program");
    }

    #[test]
    fn cached_program_equals_compiled_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let p = profile("mkdirat");
        let direct = Program::compile(&p).unwrap();
        assert_eq!(direct.flags, FLAG_LOG);
        assert!(direct.len() > 1);
        let first = Program::compile_cached(&p, dir.path()).unwrap();
        assert_eq!(first, direct);
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one cache file");
        // A damaged cache file is ignored and replaced.
        let path = files[0].as_ref().unwrap().path();
        fs::write(&path, b"BSCF garbage").unwrap();
        assert_eq!(Program::compile_cached(&p, dir.path()).unwrap(), direct);
        assert!(decode(&fs::read(&path).unwrap()).is_some(), "rewritten");
        // Another profile gets another program and another file.
        let other = Program::compile_cached(&profile("unlinkat"), dir.path()).unwrap();
        assert_ne!(other.instructions, direct.instructions);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
