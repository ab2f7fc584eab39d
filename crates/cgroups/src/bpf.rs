//! The cgroup v2 device filter: a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
//!
//! cgroup v2 has no `devices` controller; access to device nodes is decided by an eBPF
//! program attached to the cgroup. This module turns an OCI device rule list into such a
//! program, assembled by hand (no compiler or BPF library needed), loads it with
//! `bpf(BPF_PROG_LOAD)` and attaches it with `BPF_F_ALLOW_MULTI`, then detaches the
//! programs that were attached before, so re-applying rules replaces them.
//!
//! Rule semantics follow the v1 device controller: a rule for every device (`a`, any
//! major/minor, all of `rwm`) resets the list to allow-all or deny-all; any other rule is
//! an exception. The program checks exceptions from the last to the first and returns the
//! decision of the first that matches, else the default. An allow rule matches when the
//! requested access is a subset of its access; a deny rule when they overlap.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::{CgroupError, Result};

// Kernel ABI constants (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes used.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const AND64_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K
const RSH64_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// A device rule reduced to what the program compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    allow: bool,
    /// `None` for every type.
    typ: Option<i32>,
    major: Option<i32>,
    minor: Option<i32>,
    access: i32,
}

fn invalid(reason: String) -> CgroupError {
    CgroupError::InvalidValue {
        what: "devices".into(),
        reason,
    }
}

/// Reduce OCI rules to a default decision plus ordered exceptions.
pub(crate) fn reduce(rules: &[LinuxDeviceCgroup]) -> Result<(bool, Vec<Rule>)> {
    let mut default_allow = true;
    let mut out: Vec<Rule> = Vec::new();
    for d in rules {
        let typ = match d.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => {
                return Err(invalid("fifo (\"p\") rules are not supported".into()));
            }
        };
        let num = |n: Option<i64>| -> Result<Option<i32>> {
            match n {
                None | Some(-1) => Ok(None),
                Some(n) => i32::try_from(n)
                    .ok()
                    .filter(|n| *n >= 0)
                    .map(Some)
                    .ok_or_else(|| invalid(format!("device number {n} is out of range"))),
            }
        };
        let access_s = d.access().as_deref().unwrap_or("rwm");
        let access_s = if access_s.is_empty() { "rwm" } else { access_s };
        let mut access = 0;
        for c in access_s.chars() {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => {
                    return Err(invalid(format!(
                        "access {access_s:?} is not a subset of \"rwm\""
                    )))
                }
            };
        }
        let rule = Rule {
            allow: d.allow(),
            typ,
            major: num(d.major())?,
            minor: num(d.minor())?,
            access,
        };
        let everything = rule.typ.is_none()
            && rule.major.is_none()
            && rule.minor.is_none()
            && rule.access == ACC_READ | ACC_WRITE | ACC_MKNOD;
        if everything {
            default_allow = rule.allow;
            out.clear();
        } else {
            out.push(rule);
        }
    }
    Ok((default_allow, out))
}

/// Assemble the program for a default decision and exceptions.
pub(crate) fn assemble(default_allow: bool, rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        // r2 = ctx->access_type; r3 = type (low 16 bits); r4 = access (high 16 bits)
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(MOV64_X, 3, 2, 0, 0),
        insn(AND64_K, 3, 0, 0, 0xffff),
        insn(MOV64_X, 4, 2, 0, 0),
        insn(RSH64_K, 4, 0, 0, 16),
        // r5 = ctx->major; r6 = ctx->minor
        insn(LDX_MEM_W, 5, 1, 4, 0),
        insn(LDX_MEM_W, 6, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let mut block = Vec::new();
        // Jumps with off = i16::MIN are patched to the end of the block.
        if let Some(t) = r.typ {
            block.push(insn(JNE_K, 3, 0, i16::MIN, t));
        }
        if let Some(m) = r.major {
            block.push(insn(JNE_K, 5, 0, i16::MIN, m));
        }
        if let Some(m) = r.minor {
            block.push(insn(JNE_K, 6, 0, i16::MIN, m));
        }
        block.push(insn(MOV64_X, 7, 4, 0, 0));
        if r.allow {
            // Every requested bit must be in the rule.
            block.push(insn(AND64_K, 7, 0, 0, !r.access));
            block.push(insn(JNE_K, 7, 0, i16::MIN, 0));
        } else {
            // Any requested bit in the rule.
            block.push(insn(AND64_K, 7, 0, 0, r.access));
            block.push(insn(JEQ_K, 7, 0, i16::MIN, 0));
        }
        block.push(insn(MOV64_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == i16::MIN {
                // Blocks are at most 8 instructions long.
                ins.off = (len - i - 1) as i16;
            }
        }
        p.extend(block);
    }
    p.push(insn(MOV64_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// `union bpf_attr` as used by the commands below, zero-padded.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, writable buffer of the size passed; every pointer stored
    // in it (instructions, license, log, id array) outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned_fd(r: libc::c_long) -> std::io::Result<OwnedFd> {
    let fd = RawFd::try_from(r).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load(prog: &[Insn]) -> std::io::Result<OwnedFd> {
    let license = CString::new("Apache-2.0").map_err(std::io::Error::other)?;
    let mut a = Attr::new();
    a.put_u32(0, BPF_PROG_TYPE_CGROUP_DEVICE);
    a.put_u32(4, u32::try_from(prog.len()).map_err(std::io::Error::other)?);
    a.put_u64(8, prog.as_ptr() as u64);
    a.put_u64(16, license.as_ptr() as u64);
    // log_level (24), log_size (28), log_buf (32), kern_version (40), prog_flags (44),
    // prog_name (48..64), prog_ifindex (64): all zero.
    a.put_u32(68, BPF_CGROUP_DEVICE); // expected_attach_type
    let r = bpf(BPF_PROG_LOAD, &mut a);
    // Keep the license alive until after the call.
    drop(license);
    owned_fd(r?)
}

/// IDs of the device programs attached to the cgroup now.
fn query(cg: RawFd) -> std::io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut a = Attr::new();
    a.put_u32(0, cg as u32); // target_fd
    a.put_u32(4, BPF_CGROUP_DEVICE); // attach_type
    a.put_u64(16, ids.as_mut_ptr() as u64); // prog_ids
    a.put_u32(24, ids.len() as u32); // prog_cnt
    bpf(BPF_PROG_QUERY, &mut a)?;
    let n = (a.get_u32(24) as usize).min(ids.len());
    ids.truncate(n);
    Ok(ids)
}

fn attach_or_detach(cmd: libc::c_long, cg: RawFd, prog: RawFd, flags: u32) -> std::io::Result<()> {
    let mut a = Attr::new();
    a.put_u32(0, cg as u32); // target_fd
    a.put_u32(4, prog as u32); // attach_bpf_fd
    a.put_u32(8, BPF_CGROUP_DEVICE); // attach_type
    a.put_u32(12, flags); // attach_flags
    bpf(cmd, &mut a).map(|_| ())
}

fn prog_fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.put_u32(0, id);
    owned_fd(bpf(BPF_PROG_GET_FD_BY_ID, &mut a)?)
}

/// How many device programs are attached to the cgroup2 directory `dir`.
#[cfg(test)]
pub(crate) fn attached(dir: &Path) -> std::io::Result<usize> {
    let cg = std::fs::File::open(dir)?;
    Ok(query(cg.as_raw_fd())?.len())
}

/// Replace the device filter of the cgroup2 directory `dir` by one implementing `rules`.
pub(crate) fn apply_device_rules(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let (default_allow, exceptions) = reduce(rules)?;
    let prog = assemble(default_allow, &exceptions);
    let err = |what: &str| {
        let what = what.to_string();
        let path = dir.to_path_buf();
        move |source| CgroupError::Bpf { what, path, source }
    };
    let cg = std::fs::File::open(dir).map_err(err("open the cgroup for"))?;
    let old = query(cg.as_raw_fd()).map_err(err("query"))?;
    let fd = load(&prog).map_err(err("load"))?;
    attach_or_detach(
        BPF_PROG_ATTACH,
        cg.as_raw_fd(),
        fd.as_raw_fd(),
        BPF_F_ALLOW_MULTI,
    )
    .map_err(err("attach"))?;
    for id in old {
        match prog_fd_by_id(id) {
            Ok(old_fd) => {
                match attach_or_detach(BPF_PROG_DETACH, cg.as_raw_fd(), old_fd.as_raw_fd(), 0) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(err("detach the previous")(e)),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(err("look up the previous")(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: serde_json::Value) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_value(json).unwrap()
    }

    /// Run the program on a request, interpreting only the opcodes `assemble` emits.
    fn run(prog: &[Insn], typ: i32, major: i32, minor: i32, access: i32) -> u64 {
        let mut r = [0u64; 11];
        let ctx = [
            ((access as u32) << 16 | typ as u32),
            major as u32,
            minor as u32,
        ];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
            let imm = i.imm as i64 as u64;
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[i.off as usize / 4]),
                MOV64_X => r[dst] = r[src],
                MOV64_K => r[dst] = imm,
                AND64_K => r[dst] &= imm,
                RSH64_K => r[dst] >>= imm,
                JNE_K => {
                    if r[dst] != imm {
                        pc += i.off as usize;
                    }
                }
                JEQ_K => {
                    if r[dst] == imm {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn deny_all_then_allow_list() {
        let (def, ex) = reduce(&rules(serde_json::json!([
            {"allow": true, "access": "rwm"},
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 5, "access": "r"},
            {"allow": false, "type": "c", "major": 5, "minor": 1, "access": "w"}
        ])))
        .unwrap();
        assert!(!def);
        assert_eq!(ex.len(), 3);
        let p = assemble(def, &ex);
        // /dev/null: every access.
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE), 1);
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_MKNOD), 1);
        // Same numbers as a block device: denied.
        assert_eq!(run(&p, DEV_BLOCK, 1, 3, ACC_READ), 0);
        // /dev/zero: not listed.
        assert_eq!(run(&p, DEV_CHAR, 1, 5, ACC_READ), 0);
        // major 5: read only.
        assert_eq!(run(&p, DEV_CHAR, 5, 0, ACC_READ), 1);
        assert_eq!(run(&p, DEV_CHAR, 5, 0, ACC_READ | ACC_WRITE), 0);
        // 5:1 write denied by the later rule, read still allowed by the earlier one.
        assert_eq!(run(&p, DEV_CHAR, 5, 1, ACC_READ), 1);
        assert_eq!(run(&p, DEV_CHAR, 5, 1, ACC_WRITE), 0);
    }

    #[test]
    fn allow_all_with_exceptions() {
        let (def, ex) = reduce(&rules(serde_json::json!([
            {"allow": false, "type": "b", "access": "w"}
        ])))
        .unwrap();
        assert!(def);
        let p = assemble(def, &ex);
        assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_WRITE), 0);
        assert_eq!(run(&p, DEV_BLOCK, 8, 0, ACC_READ), 1);
        assert_eq!(run(&p, DEV_CHAR, 1, 3, ACC_WRITE), 1);
    }

    #[test]
    fn rejects_bad_rules() {
        assert!(reduce(&rules(serde_json::json!([{"allow": true, "type": "p"}]))).is_err());
        assert!(reduce(&rules(serde_json::json!([{"allow": true, "access": "rx"}]))).is_err());
        assert!(reduce(&rules(
            serde_json::json!([{"allow": true, "major": 4294967296i64}])
        ))
        .is_err());
    }
}
