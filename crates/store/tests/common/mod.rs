//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Builds tar archives with raw (unvalidated) names, to craft hostile layers.
pub struct TarBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let raw = &mut h.as_gnu_mut().unwrap().name;
        assert!(name.len() < raw.len(), "test names must be short");
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    fn link_header(name: &str, kind: tar::EntryType, target: &str) -> tar::Header {
        let mut h = Self::header(name, kind, 0, 0o777);
        let raw = &mut h.as_gnu_mut().unwrap().linkname;
        raw[..target.len()].copy_from_slice(target.as_bytes());
        h
    }

    pub fn dir(mut self, name: &str) -> Self {
        let mut h = Self::header(name, tar::EntryType::Directory, 0, 0o755);
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.file_with(name, data, |_| {})
    }

    pub fn file_with(mut self, name: &str, data: &[u8], f: impl FnOnce(&mut tar::Header)) -> Self {
        let mut h = Self::header(name, tar::EntryType::Regular, data.len() as u64, 0o644);
        f(&mut h);
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::link_header(name, tar::EntryType::Symlink, target);
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        let mut h = Self::link_header(name, tar::EntryType::Link, target);
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn device(mut self, name: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(name, tar::EntryType::Char, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, std::io::empty()).unwrap();
        self
    }

    pub fn pax(mut self, exts: &[(&str, &[u8])]) -> Self {
        self.b.append_pax_extensions(exts.iter().copied()).unwrap();
        self
    }

    pub fn build(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Unmounts (lazily) on drop, even when the test panics.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A tar of a directory tree (symlinks kept as symlinks).
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A busybox rootfs tarball built with testutil.
pub fn busybox_tar() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    testutil::busybox_rootfs(d.path()).unwrap();
    tar_dir(d.path())
}
