//! Layer application and diffing against the real filesystem (and overlayfs, as root).

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{gzip, is_root, MountGuard, TarBuilder};
use errkind::{ErrorKind, HasKind};
use store::layer::{apply_layer, write_diff, ApplyOptions, DevicePolicy, LayerError};
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
