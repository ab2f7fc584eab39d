//! Layer application and diffing against the real filesystem (and overlayfs, as root).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{gzip, is_root, MountGuard, TarBuilder};
use errkind::{ErrorKind, HasKind};
use store::layer::{apply_layer, seal_diff, write_diff, ApplyOptions, DevicePolicy, LayerError};
use store::Digest;

struct Env {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"orig").unwrap();
    Env {
        _tmp: tmp,
        root,
        outside,
    }
}

fn apply(tar: &[u8], root: &Path) -> Result<store::layer::ApplyResult, LayerError> {
    apply_layer(tar, root, &ApplyOptions::default())
}

fn outside_untouched(e: &Env) {
    let names: Vec<_> = fs::read_dir(&e.outside)
        .unwrap()
        .map(|x| x.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    assert_eq!(fs::read(e.outside.join("secret")).unwrap(), b"orig");
    assert_eq!(fs::metadata(e.outside.join("secret")).unwrap().nlink(), 1);
    // Nothing appeared next to the root either.
    let siblings: Vec<_> = fs::read_dir(e.root.parent().unwrap())
        .unwrap()
        .map(|x| x.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut siblings = siblings;
    siblings.sort();
    assert_eq!(siblings, vec!["outside", "root"]);
}

#[test]
fn dotdot_entries_are_rejected() {
    let e = env();
    for name in ["../escape", "a/../../escape", "./../outside/secret"] {
        let t = TarBuilder::new().file(name, b"pwned").build();
        let err = apply(&t, &e.root).unwrap_err();
        assert!(matches!(err, LayerError::PathEscapes(_)), "{name}: {err:?}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("escapes"), "{err}");
    }
    outside_untouched(&e);
}

#[test]
fn absolute_and_inner_dotdot_paths_are_confined() {
    let e = env();
    let abs = format!("{}/secret", e.outside.display());
    let t = TarBuilder::new()
        .file(&abs, b"confined")
        .file("/etc/abs.txt", b"x")
        .file("a/b/../c.txt", b"y")
        .build();
    apply(&t, &e.root).unwrap();
    let inside = e.root.join(abs.trim_start_matches('/'));
    assert_eq!(fs::read(inside).unwrap(), b"confined");
    assert_eq!(fs::read(e.root.join("etc/abs.txt")).unwrap(), b"x");
    assert_eq!(fs::read(e.root.join("a/c.txt")).unwrap(), b"y");
    outside_untouched(&e);
}

#[test]
fn symlink_escapes_never_write_outside() {
    let e = env();
    let rel_up = "../../../../../../../../../..".to_string() + &e.outside.display().to_string();
    let t = TarBuilder::new()
        // Absolute symlink to the outside dir, then a write through it.
        .symlink("abs", &e.outside.display().to_string())
        .file("abs/pwned", b"1")
        .file("abs/secret", b"overwritten?")
        // Relative symlink climbing out, then a write through it.
        .symlink("rel", &rel_up)
        .file("rel/pwned2", b"2")
        // Final component is a symlink to an outside file: it is replaced, not followed.
        .symlink("link", &format!("{}/secret", e.outside.display()))
        .file("link", b"new")
        // Directory entry through a symlink.
        .dir("abs/newdir")
        .build();
    apply(&t, &e.root).unwrap();
    outside_untouched(&e);
    // The writes landed inside the root, where the symlinks point when root is "/".
    let conf = e.root.join(e.outside.strip_prefix("/").unwrap());
    assert_eq!(fs::read(conf.join("pwned")).unwrap(), b"1");
    assert_eq!(fs::read(conf.join("pwned2")).unwrap(), b"2");
    assert_eq!(fs::read(conf.join("secret")).unwrap(), b"overwritten?");
    assert!(conf.join("newdir").is_dir());
    let link = fs::symlink_metadata(e.root.join("link")).unwrap();
    assert!(link.is_file());
    assert_eq!(fs::read(e.root.join("link")).unwrap(), b"new");
    // The symlinks themselves are kept verbatim.
    assert_eq!(
        fs::read_link(e.root.join("abs")).unwrap(),
        e.outside.as_path()
    );
}

#[test]
fn hardlink_escapes_are_rejected() {
    let e = env();
    let t = TarBuilder::new().hardlink("h", "../outside/secret").build();
    let err = apply(&t, &e.root).unwrap_err();
    assert!(matches!(err, LayerError::BadHardlink { .. }), "{err:?}");
    // Through a symlink: resolves inside the root, where there is no such file.
    let t = TarBuilder::new()
        .symlink("d", &e.outside.display().to_string())
        .hardlink("h2", "d/secret")
        .build();
    let err = apply(&t, &e.root).unwrap_err();
    assert!(matches!(err, LayerError::BadHardlink { .. }), "{err:?}");
    // Absolute target naming the outside file.
    let t = TarBuilder::new()
        .hardlink("h3", &format!("{}/secret", e.outside.display()))
        .build();
    assert!(apply(&t, &e.root).is_err());
    outside_untouched(&e);
    // A hardlink inside the layer works.
    let t = TarBuilder::new()
        .file("f", b"data")
        .hardlink("g", "f")
        .build();
    apply(&t, &e.root).unwrap();
    let (a, b) = (
        fs::metadata(e.root.join("f")).unwrap(),
        fs::metadata(e.root.join("g")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
}

#[test]
fn truncated_streams_are_errors() {
    let e = env();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let t = TarBuilder::new()
        .file("big", &big)
        .file("after", b"x")
        .build();
    let gz = gzip(&t);
    let err = apply(&gz[..gz.len() / 2], &e.root).unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // Gzip missing only its trailer.
    let err = apply(&gz[..gz.len() - 4], &e.root).unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err:?}");
    // Plain tar cut in the middle of a file.
    let err = apply(&t[..100_000], &e.root).unwrap_err();
    assert!(matches!(err, LayerError::Corrupt(_)), "{err:?}");
    outside_untouched(&e);
}

#[test]
fn diff_id_is_sha256_of_uncompressed_tar() {
    let t = TarBuilder::new()
        .dir("d")
        .file("d/f", b"content")
        .symlink("s", "d/f")
        .build();
    for (name, input) in [
        ("plain", t.clone()),
        ("gzip", gzip(&t)),
        ("zstd", zstd::encode_all(&t[..], 3).unwrap()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let r = apply(&input, dir.path()).unwrap();
        assert_eq!(r.diff_id, Digest::sha256_of(&t), "{name}");
        assert_eq!(r.tar_size, t.len() as u64);
        assert_eq!(
            fs::read(dir.path().join("s")).unwrap(),
            b"content",
            "{name}"
        );
    }
}

#[test]
fn metadata_is_applied() {
    if !is_root() {
        eprintln!("skipping: needs root for chown");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = TarBuilder::new()
        .pax(&[("SCHILY.xattr.user.test", b"hello")])
        .file_with("suid", b"#!", |h| {
            h.set_mode(0o4755);
            h.set_uid(1234);
            h.set_gid(5678);
            h.set_mtime(1_000_000);
        })
        .device("null", 1, 3)
        .build();
    apply(&t, dir.path()).unwrap();
    let m = fs::metadata(dir.path().join("suid")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!(m.mtime(), 1_000_000);
    let mut v = [0u8; 16];
    let n = rustix::fs::lgetxattr(dir.path().join("suid"), "user.test", &mut v[..]);
    if let Ok(n) = n {
        assert_eq!(&v[..n], b"hello");
    }
    let dev = fs::metadata(dir.path().join("null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));

    let skip = tempfile::tempdir().unwrap();
    let opts = ApplyOptions {
        ignore_ownership: true,
        devices: DevicePolicy::Skip,
    };
    apply_layer(&t[..], skip.path(), &opts).unwrap();
    assert!(!skip.path().join("null").exists());
    let opts = ApplyOptions {
        devices: DevicePolicy::Error,
        ..Default::default()
    };
    let err = apply_layer(&t[..], tempfile::tempdir().unwrap().path(), &opts).unwrap_err();
    assert!(matches!(err, LayerError::DeviceNotAllowed(_)));
}

#[test]
fn whiteouts_and_opaque_dirs_in_a_real_overlay() {
    if !is_root() {
        eprintln!("skipping: needs root for mknod and overlay mounts");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    let merged = tmp.path().join("merged");
    for d in [&lower, &upper, &merged] {
        fs::create_dir(d).unwrap();
    }
    let base = TarBuilder::new()
        .dir("a")
        .file("a/x", b"x")
        .file("a/y", b"y")
        .dir("b")
        .file("b/z", b"z")
        .file("c", b"c")
        .build();
    let top = TarBuilder::new()
        .dir("a")
        .file("a/.wh.x", b"")
        .dir("b")
        .file("b/.wh..wh..opq", b"")
        .file("b/new", b"new")
        .file(".wh.c", b"")
        .build();
    apply(&gzip(&base), &lower).unwrap();
    apply(&gzip(&top), &upper).unwrap();
    let wh = fs::symlink_metadata(upper.join("a/x")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    let mut v = [0u8; 4];
    let n = rustix::fs::lgetxattr(upper.join("b"), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    assert!(!upper.join("b/.wh..wh..opq").exists());

    let opts = format!("lowerdir={}:{}", upper.display(), lower.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .unwrap();
    let _g = MountGuard(merged.clone());
    assert!(!merged.join("a/x").exists());
    assert_eq!(fs::read(merged.join("a/y")).unwrap(), b"y");
    assert!(!merged.join("b/z").exists());
    assert_eq!(fs::read(merged.join("b/new")).unwrap(), b"new");
    assert!(!merged.join("c").exists());
    let mut names: Vec<_> = fs::read_dir(&merged)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a", "b"]);
}

#[test]
fn diff_of_an_upper_dir_round_trips() {
    if !is_root() {
        eprintln!("skipping: needs root for whiteout devices and trusted xattrs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upper");
    fs::create_dir_all(up.join("etc/sub")).unwrap();
    fs::write(up.join("etc/conf"), b"conf").unwrap();
    fs::set_permissions(up.join("etc/conf"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(up.join("etc/sub/deep"), b"deep").unwrap();
    fs::hard_link(up.join("etc/conf"), up.join("conf-link")).unwrap();
    std::os::unix::fs::symlink("etc/conf", up.join("sym")).unwrap();
    nix::sys::stat::mknod(
        &up.join("deleted"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(up.join("opaque")).unwrap();
    fs::write(up.join("opaque/kept"), b"k").unwrap();
    rustix::fs::lsetxattr(
        up.join("opaque"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    let mut tar1 = Vec::new();
    let d1 = write_diff(&up, &mut tar1).unwrap();
    assert_eq!(d1.diff_id, Digest::sha256_of(&tar1));
    // The tar carries whiteouts as .wh. entries.
    let mut names = Vec::new();
    for e in tar::Archive::new(&tar1[..]).entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains(&".wh.deleted".to_string()), "{names:?}");
    assert!(
        names.contains(&"opaque/.wh..wh..opq".to_string()),
        "{names:?}"
    );

    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    let r = apply(&tar1, &out).unwrap();
    assert_eq!(r.diff_id, d1.diff_id);
    assert_eq!(fs::read(out.join("etc/sub/deep")).unwrap(), b"deep");
    let c = fs::metadata(out.join("etc/conf")).unwrap();
    assert_eq!(c.permissions().mode() & 0o777, 0o600);
    assert_eq!(c.ino(), fs::metadata(out.join("conf-link")).unwrap().ino());
    assert_eq!(
        fs::read_link(out.join("sym")).unwrap(),
        Path::new("etc/conf")
    );
    let wh = fs::symlink_metadata(out.join("deleted")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let mut v = [0u8; 4];
    let n =
        rustix::fs::lgetxattr(out.join("opaque"), "trusted.overlay.opaque", &mut v[..]).unwrap();
    assert_eq!(&v[..n], b"y");
    // Diffing the re-applied tree gives the same layer.
    let mut tar2 = Vec::new();
    let d2 = write_diff(&out, &mut tar2).unwrap();
    assert_eq!(d2.diff_id, d1.diff_id);
}

/// Everything about a tree that a layer carries, path by path (the root's times left out:
/// an applied root is stamped when it is made; access times, which reading it moves):
/// type, mode, owner, modification time to the nanosecond, content or link target,
/// xattrs, and which paths share an inode.
fn tree_signature(root: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>, inodes: &mut Vec<(u64, String)>) {
        let mut names: Vec<_> = fs::read_dir(root.join(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let shown = r.display().to_string();
            if ft.is_char_device() && m.rdev() == 0 {
                out.push(format!("{shown} whiteout"));
                continue;
            }
            let mut xs = Vec::new();
            let mut buf = vec![0u8; 4096];
            let k = rustix::fs::llistxattr(&p, &mut buf[..]).unwrap_or(0);
            for x in buf[..k].split(|b| *b == 0).filter(|x| !x.is_empty()) {
                let name = String::from_utf8_lossy(x).into_owned();
                let mut v = vec![0u8; 4096];
                let l = rustix::fs::lgetxattr(&p, name.as_str(), &mut v[..]).unwrap();
                xs.push(format!("{name}={}", String::from_utf8_lossy(&v[..l])));
            }
            xs.sort();
            let what = if ft.is_dir() {
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("link->{}", fs::read_link(&p).unwrap().display())
            } else if ft.is_file() {
                if m.nlink() > 1 {
                    inodes.push((m.ino(), shown.clone()));
                }
                format!("file:{}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
            } else {
                format!("special:{:o}", m.mode() & 0o170000)
            };
            out.push(format!(
                "{shown} {what} mode={:o} owner={}:{} mtime={}.{} xattrs={xs:?}",
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
            ));
            if ft.is_dir() {
                walk(root, &r, out, inodes);
            }
        }
    }
    let mut out = Vec::new();
    let mut inodes = Vec::new();
    walk(root, Path::new(""), &mut out, &mut inodes);
    // Hard link groups, by their sorted member paths (inode numbers differ between trees).
    let mut groups: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for (ino, p) in inodes {
        groups.entry(ino).or_default().push(p);
    }
    let mut gs: Vec<String> = groups.into_values().map(|g| g.join("=")).collect();
    gs.sort();
    out.extend(gs.into_iter().map(|g| format!("linked {g}")));
    let m = fs::symlink_metadata(root).unwrap();
    out.push(format!(
        "root mode={:o} owner={}:{}",
        m.mode() & 0o7777,
        m.uid(),
        m.gid()
    ));
    out
}

/// An upper dir with everything a build step can leave: nanosecond times, odd modes,
/// hard links, symlinks, whiteouts, an opaque dir, xattrs a layer carries and ones it
/// does not (overlay's own, `trusted.*`), a socket, a changed root.
fn messy_upper(up: &Path) {
    use std::os::unix::fs::symlink;
    let set = |p: &Path, k: &str, v: &[u8]| {
        rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    let ns_time = |p: &Path, s: i64, ns: i64| {
        let ts = nix::sys::time::TimeSpec::new(s, ns);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &ts,
            &ts,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    };
    fs::create_dir_all(up.join("app/sub")).unwrap();
    fs::write(up.join("app/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(up.join("app/run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(up.join("app/sub/data"), b"data").unwrap();
    nix::unistd::chown(
        &up.join("app/sub/data"),
        Some(nix::unistd::Uid::from_raw(1000)),
        Some(nix::unistd::Gid::from_raw(2000)),
    )
    .unwrap();
    fs::set_permissions(up.join("app/sub/data"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::hard_link(up.join("app/sub/data"), up.join("app/data-link")).unwrap();
    symlink("sub/data", up.join("app/sym")).unwrap();
    nix::sys::stat::mknod(
        &up.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(up.join("opaque")).unwrap();
    fs::write(up.join("opaque/kept"), b"k").unwrap();
    set(&up.join("opaque"), "trusted.overlay.opaque", b"y");
    set(&up.join("app"), "trusted.overlay.origin", b"\x00\xfb\x21");
    set(&up.join("app"), "trusted.overlay.impure", b"y");
    set(&up.join("app/run.sh"), "user.keep", b"kept");
    set(&up.join("app/run.sh"), "trusted.drop", b"dropped");
    set(up, "trusted.overlay.impure", b"y");
    let _sock = std::os::unix::net::UnixListener::bind(up.join("app/sock")).unwrap();
    for (p, s, ns) in [
        ("app/run.sh", 1_600_000_001, 123_456_789),
        ("app/sub/data", 1_600_000_002, 5),
        ("app/sym", 1_600_000_003, 999),
        ("app/sub", 1_600_000_004, 42),
        ("opaque/kept", 1_600_000_005, 7),
        ("opaque", 1_600_000_006, 8),
        ("app", 1_600_000_007, 9),
    ] {
        ns_time(&up.join(p), s, ns);
    }
    fs::set_permissions(up, fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_sealed_upper_dir_is_what_applying_its_tar_gives() {
    if !is_root() {
        eprintln!("skipping: needs root for chown, whiteout devices and trusted xattrs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upper");
    fs::create_dir(&up).unwrap();
    messy_upper(&up);
    // The tar is byte for byte write_diff's.
    let mut plain = Vec::new();
    let d = write_diff(&up, &mut plain).unwrap();
    let before = tree_signature(&up);
    let mut sealed_tar = Vec::new();
    let r = seal_diff(&up, &mut sealed_tar).unwrap();
    assert!(r.exact);
    assert_eq!(r.size, sealed_tar.len() as u64);
    assert_eq!(Digest::sha256_of(&sealed_tar), d.diff_id);
    assert!(sealed_tar == plain, "seal_diff wrote another tar");
    // And the sealed directory is the applied tar.
    let out = tmp.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    apply(&sealed_tar, &out).unwrap();
    let (a, b) = (tree_signature(&up), tree_signature(&out));
    assert_eq!(a, b);
    assert_ne!(before, b, "the upper dir needed no sealing: a weak test");
    assert!(!up.join("app/sock").exists());
    assert!(a.iter().any(|l| l.contains("user.keep=kept")), "{a:?}");
    assert!(!a.iter().any(|l| l.contains("trusted.drop")), "{a:?}");
    assert!(a
        .iter()
        .any(|l| l.starts_with("opaque dir") && l.contains("trusted.overlay.opaque=y")));
    // Sealing again changes nothing.
    let mut again = Vec::new();
    seal_diff(&up, &mut again).unwrap();
    assert!(again == plain);
    assert_eq!(tree_signature(&up), a);
}

#[test]
fn names_a_tar_turns_into_whiteouts_make_a_seal_inexact() {
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upper");
    fs::create_dir_all(up.join("d")).unwrap();
    fs::write(up.join("d/.wh.x"), b"a real file").unwrap();
    let r = seal_diff(&up, std::io::sink()).unwrap();
    assert!(!r.exact);
}

#[test]
fn a_blob_written_from_a_seal_is_named_by_the_diff_id_in_one_hash() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let up = tmp.path().join("upper");
    fs::create_dir_all(up.join("big")).unwrap();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 5) as u8).collect();
    fs::write(up.join("big/a.bin"), &data).unwrap();
    fs::write(up.join("big/b.txt"), b"small").unwrap();
    let mut reference = Vec::new();
    let d = write_diff(&up, &mut reference).unwrap();
    let cs = store::ContentStore::open(tmp.path().join("content")).unwrap();
    let mut w = cs.writer("seal-test").unwrap();
    let r = seal_diff(&up, &mut w).unwrap();
    w.flush().unwrap();
    assert_eq!(r.size, w.offset());
    // The writer's own hash of what went through it is the blob's name and the diff id.
    let blob = w.commit(Some(r.size), None).unwrap();
    assert_eq!(blob, d.diff_id);
    assert_eq!(blob, Digest::sha256_of(&reference));
    assert_eq!(cs.read_blob(&blob, 1 << 30).unwrap(), reference);
}

/// Adds to `messy_upper` what else a layer can hold, with links from `outside` (as a
/// build's private context copy links its files into a step's upper dir).
fn trickier_upper(up: &Path, outside: &Path) {
    use nix::sys::stat::{mknod, Mode, SFlag};
    messy_upper(up);
    let set = |p: &Path, k: &str, v: &[u8]| {
        rustix::fs::lsetxattr(p, k, v, rustix::fs::XattrFlags::empty()).unwrap()
    };
    fs::create_dir_all(up.join("links")).unwrap();
    fs::create_dir_all(up.join("empty/dir")).unwrap();
    fs::create_dir_all(up.join("dev")).unwrap();
    // A file linked only from outside (link count 2 now, 1 once the context is gone).
    fs::write(up.join("links/context-file"), b"from the context").unwrap();
    fs::hard_link(up.join("links/context-file"), outside.join("ctx")).unwrap();
    // Three names inside and one outside for one inode.
    fs::write(up.join("links/a"), b"shared").unwrap();
    fs::hard_link(up.join("links/a"), up.join("links/b")).unwrap();
    fs::hard_link(up.join("links/a"), up.join("empty/c")).unwrap();
    fs::hard_link(up.join("links/a"), outside.join("a")).unwrap();
    // A nested whiteout, and a whiteout of a directory inside an opaque one.
    mknod(
        &up.join("app/sub/removed"),
        SFlag::S_IFCHR,
        Mode::empty(),
        0,
    )
    .unwrap();
    mknod(&up.join("opaque/old"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    // Devices and a fifo.
    mknod(
        &up.join("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    mknod(
        &up.join("dev/loop9"),
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        libc::makedev(7, 9),
    )
    .unwrap();
    nix::unistd::mkfifo(&up.join("dev/fifo"), Mode::from_bits_truncate(0o620)).unwrap();
    // Names and a symlink target too long for a plain tar header.
    let long = "n".repeat(150);
    fs::create_dir_all(up.join(&long)).unwrap();
    fs::write(up.join(&long).join(&long), b"deep").unwrap();
    std::os::unix::fs::symlink("t".repeat(200), up.join("links/long-target")).unwrap();
    // Carried xattrs (a capability too), and ones that are not.
    set(&up.join("links/a"), "user.many", &[7u8; 3000]);
    set(
        &up.join("app/run.sh"),
        "security.capability",
        b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    );
    set(&up.join("dev"), "trusted.other", b"x");
    set(&up.join("empty/dir"), "user.note", b"empty");
}

#[test]
fn a_committed_sealed_dir_gives_its_tar_again_byte_for_byte() {
    if !is_root() {
        eprintln!("skipping: needs root for devices, whiteouts and trusted xattrs");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = store::Store::open(tmp.path().join("store")).unwrap();
    let up = tmp.path().join("upper");
    let outside = tmp.path().join("context");
    fs::create_dir(&up).unwrap();
    fs::create_dir(&outside).unwrap();
    trickier_upper(&up, &outside);
    let mut sealed = Vec::new();
    let r = seal_diff(&up, &mut sealed).unwrap();
    assert!(r.exact);
    let digest = Digest::sha256_of(&sealed);
    // As a build step does: the dir is the snapshot; the blob only a record of it.
    assert!(s.snapshots().commit_dir(&digest, None, &up).unwrap());
    s.content()
        .put_derived(&digest, sealed.len() as u64, &digest)
        .unwrap();
    // The build's context copy goes away: link counts drop.
    fs::remove_dir_all(&outside).unwrap();
    let committed = s.snapshots().committed_fs(&digest);
    let mut again = Vec::new();
    write_diff(&committed, &mut again).unwrap();
    assert!(again == sealed, "the snapshot gives another tar");
    // Whiteouts are devices in the snapshot and `.wh.` entries in the tar; the links are
    // links; nothing was dropped.
    let names: Vec<(String, tar::EntryType)> = tar::Archive::new(&sealed[..])
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            (p, e.header().entry_type())
        })
        .collect();
    for (name, kind) in [
        ("app/sub/.wh.removed", tar::EntryType::Regular),
        ("opaque/.wh..wh..opq", tar::EntryType::Regular),
        ("opaque/.wh.old", tar::EntryType::Regular),
        ("links/context-file", tar::EntryType::Regular),
        ("links/b", tar::EntryType::Link),
        ("dev/loop9", tar::EntryType::Block),
        ("dev/fifo", tar::EntryType::Fifo),
        ("empty/dir", tar::EntryType::Directory),
    ] {
        assert!(
            names.contains(&(name.to_string(), kind)),
            "{name} {kind:?} not in {names:?}"
        );
    }
    assert!(fs::symlink_metadata(committed.join("opaque/old"))
        .unwrap()
        .file_type()
        .is_char_device());
    // Read through the content store: made, verified and stored.
    let blob = s.content().read_blob(&digest, 1 << 30).unwrap();
    assert!(blob == sealed);
    assert!(s.content().blob_path(&digest).is_file());
}
