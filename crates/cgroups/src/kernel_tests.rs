//! Tests against the real kernel (as root): every test makes a uniquely named cgroup and
//! a guard that kills its processes and removes it even when the test fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::*;

/// Kills the cgroup's processes and removes it on drop.
struct Guard {
    cg: Cgroup,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.cg.thaw();
        let _ = self.cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.cg.pids().map(|p| !p.is_empty()).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.cg.destroy();
        // Remove the per-test parent too.
        for (_, d) in self.cg.dirs() {
            if let Some(p) = d.parent() {
                let _ = fs::remove_dir(p);
            }
        }
    }
}

fn setup(tag: &str) -> Option<Guard> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: cgroup kernel tests need root");
        return None;
    }
    let name = testutil::unique_name(tag);
    let cg = Cgroup::new(Some(&format!("/berth-test-{name}/c")), "x", false).unwrap();
    cg.create().unwrap();
    Some(Guard {
        cg,
        children: Vec::new(),
    })
}

fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).unwrap()
}

/// Spawn `busybox sh -c script` that waits for a line on stdin before running `script`
/// (so that it can be moved into the cgroup first).
fn spawn_gated(g: &mut Guard, script: &str) -> i32 {
    let child = Command::new("/bin/busybox")
        .args(["sh", "-c", &format!("read _go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    g.children.push(child);
    g.cg.add_pid(pid).unwrap();
    pid
}

fn release(g: &mut Guard, pid: i32) {
    let c = g
        .children
        .iter_mut()
        .find(|c| c.id() as i32 == pid)
        .unwrap();
    c.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
}

fn dir_of(g: &Guard, controller: &str) -> PathBuf {
    g.cg.controller_dir(controller).unwrap().1.to_path_buf()
}

fn file(g: &Guard, controller: &str, name: &str) -> String {
    fs::read_to_string(dir_of(g, controller).join(name))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn create_exists_in_every_hierarchy_and_destroy_removes() {
    let Some(g) = setup("cg-create") else { return };
    let hs = hierarchies().unwrap();
    assert!(!hs.is_empty());
    for h in &hs {
        let d = g.cg.path_in(h).unwrap();
        assert!(d.is_dir(), "{} missing", d.display());
        assert!(d.starts_with(&h.mountpoint));
        assert!(d.join("cgroup.procs").exists());
    }
    if let Some(d) = g.cg.controller_dir("cpuset").filter(|(h, _)| !h.v2) {
        let cpus = fs::read_to_string(d.1.join("cpuset.cpus")).unwrap();
        assert!(
            !cpus.trim().is_empty(),
            "cpuset.cpus not copied from parent"
        );
    }
    // Creating twice is fine.
    g.cg.create().unwrap();
    g.cg.destroy().unwrap();
    for h in &hs {
        assert!(!g.cg.path_in(h).unwrap().exists());
    }
    // Destroying what is gone is fine.
    g.cg.destroy().unwrap();
}

#[test]
fn mode_matches_mounts() {
    let hs = hierarchies().unwrap();
    let m = mode();
    match m {
        Mode::Hybrid => assert!(hs.iter().any(|h| h.v2) && hs.iter().any(|h| !h.v2)),
        Mode::V2 => assert!(hs.iter().all(|h| h.v2)),
        Mode::V1 => assert!(hs.iter().all(|h| !h.v2)),
    }
    for h in hs.iter().filter(|h| h.v2) {
        let want = fs::read_to_string(h.mountpoint.join("cgroup.controllers")).unwrap();
        assert_eq!(h.controllers.join(" "), want.trim());
    }
}

#[test]
fn memory_values_are_written() {
    let Some(g) = setup("cg-mem") else { return };
    let v2 = g.cg.controller_dir("memory").unwrap().0.v2;
    let mut r = serde_json::json!({
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728,
                   "kernel": 1000000}
    });
    if !v2 {
        // cgroup v2 has no swappiness.
        r["memory"]["swappiness"] = 10.into();
    }
    g.cg.apply(&resources(r)).unwrap();
    if v2 {
        assert_eq!(file(&g, "memory", "memory.max"), "67108864");
        assert_eq!(file(&g, "memory", "memory.low"), "33554432");
    } else {
        assert_eq!(file(&g, "memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(file(&g, "memory", "memory.soft_limit_in_bytes"), "33554432");
        assert_eq!(
            file(&g, "memory", "memory.memsw.limit_in_bytes"),
            "134217728"
        );
        assert_eq!(file(&g, "memory", "memory.swappiness"), "10");
        g.cg.apply(&resources(
            serde_json::json!({"memory": {"disableOOMKiller": true}}),
        ))
        .unwrap();
        let oc = file(&g, "memory", "memory.oom_control");
        assert_eq!(flat_keyed(&oc, "oom_kill_disable"), Some(1), "{oc}");
        // Shrinking below the previous memsw value must order the writes correctly.
        let r = resources(serde_json::json!({"memory": {"limit": 16777216, "swap": 33554432}}));
        g.cg.apply(&r).unwrap();
        assert_eq!(file(&g, "memory", "memory.limit_in_bytes"), "16777216");
        assert_eq!(
            file(&g, "memory", "memory.memsw.limit_in_bytes"),
            "33554432"
        );
        // And growing again.
        let r = resources(serde_json::json!({"memory": {"limit": 268435456, "swap": -1}}));
        g.cg.apply(&r).unwrap();
        assert_eq!(file(&g, "memory", "memory.limit_in_bytes"), "268435456");
    }
}

#[test]
fn cpu_and_pids_values_are_written() {
    let Some(g) = setup("cg-cpu") else { return };
    let r = resources(serde_json::json!({
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 42}
    }));
    g.cg.apply(&r).unwrap();
    let (h, _) = g.cg.controller_dir("cpu").unwrap();
    if h.v2 {
        assert_eq!(file(&g, "cpu", "cpu.weight"), "20");
        assert_eq!(file(&g, "cpu", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(file(&g, "cpu", "cpu.shares"), "512");
        assert_eq!(file(&g, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(file(&g, "cpu", "cpu.cfs_period_us"), "100000");
    }
    assert_eq!(file(&g, "cpuset", "cpuset.cpus"), "0");
    assert_eq!(file(&g, "pids", "pids.max"), "42");
    // Unlimited again.
    let r = resources(serde_json::json!({"cpu": {"quota": -1}, "pids": {"limit": -1}}));
    g.cg.apply(&r).unwrap();
    assert_eq!(file(&g, "pids", "pids.max"), "max");
    if !h.v2 {
        assert_eq!(file(&g, "cpu", "cpu.cfs_quota_us"), "-1");
    }
}

#[test]
fn invalid_values_are_rejected() {
    let Some(g) = setup("cg-bad") else { return };
    let cases = [
        serde_json::json!({"cpu": {"shares": 1}}),
        serde_json::json!({"cpu": {"quota": 10}}),
        serde_json::json!({"cpu": {"period": 10}}),
        serde_json::json!({"cpu": {"cpus": "zero"}}),
        serde_json::json!({"memory": {"limit": -5}}),
        serde_json::json!({"memory": {"limit": 1000000, "swap": 1000}}),
        serde_json::json!({"memory": {"swappiness": 101}}),
        serde_json::json!({"blockIO": {"weight": 5}}),
        serde_json::json!({"hugepageLimits": [{"pageSize": "../x", "limit": 1}]}),
        serde_json::json!({"devices": [{"allow": true, "access": "rwx"}]}),
    ];
    let mut cases = cases.to_vec();
    if g.cg.target("hugetlb").is_some() {
        cases.push(serde_json::json!({"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}));
    }
    for c in cases {
        let e = g.cg.apply(&resources(c.clone())).unwrap_err();
        assert_eq!(
            errkind::HasKind::kind(&e),
            errkind::ErrorKind::InvalidArgument,
            "{c}: {e}"
        );
    }
    // The kernel rejects values we pass through, too, as an invalid argument.
    let e =
        g.cg.apply(&resources(serde_json::json!({"cpu": {"cpus": "999999"}})))
            .unwrap_err();
    assert_eq!(
        errkind::HasKind::kind(&e),
        errkind::ErrorKind::InvalidArgument,
        "{e}"
    );
}

#[test]
fn optional_controllers_only_fail_when_requested() {
    let Some(g) = setup("cg-opt") else { return };
    // No network controllers requested: fine whatever is mounted. Requested but not
    // mounted: ignored.
    g.cg.apply(&resources(serde_json::json!({
        "network": {"classID": 1048577, "priorities": [{"name": "lo", "priority": 1}]}
    })))
    .unwrap();
    if let Some(t) = g.cg.target("net_cls") {
        assert_eq!(
            fs::read_to_string(t.dir.join("net_cls.classid"))
                .unwrap()
                .trim(),
            "1048577"
        );
    }
    if g.cg.target("rdma").is_none() {
        let e =
            g.cg.apply(&resources(
                serde_json::json!({"rdma": {"mlx4_0": {"hcaHandles": 1}}}),
            ))
            .unwrap_err();
        assert!(matches!(e, CgroupError::ControllerMissing { .. }), "{e}");
    }
}

#[test]
fn hugetlb_goes_to_its_hierarchy() {
    let Some(g) = setup("cg-huge") else { return };
    let Some((h, dir)) = g.cg.controller_dir("hugetlb") else {
        eprintln!("skipping: no hugetlb controller");
        return;
    };
    let (h, dir) = (h.clone(), dir.to_path_buf());
    let sizes: Vec<String> = fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    if !sizes.iter().any(|s| s == "hugepages-2048kB") {
        eprintln!("skipping: no 2MB huge pages");
        return;
    }
    g.cg.apply(&resources(serde_json::json!({
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
    })))
    .unwrap();
    let f = if h.v2 {
        "hugetlb.2MB.max"
    } else {
        "hugetlb.2MB.limit_in_bytes"
    };
    assert_eq!(fs::read_to_string(dir.join(f)).unwrap().trim(), "4194304");
}

#[test]
fn devices_v1_rules() {
    let Some(g) = setup("cg-dev") else { return };
    let Some(t) = g.cg.target("devices") else {
        eprintln!("skipping: no devices controller");
        return;
    };
    if t.v2 {
        eprintln!("skipping: devices is not a v1 controller here");
        return;
    }
    let dir = t.dir.to_path_buf();
    g.cg.apply(&resources(serde_json::json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        {"allow": true, "type": "c", "major": 5, "access": "r"}
    ]})))
    .unwrap();
    let list = fs::read_to_string(dir.join("devices.list")).unwrap();
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines, vec!["c 1:3 rwm", "c 5:* r"], "{list}");
}

#[test]
fn add_pid_and_pids() {
    let Some(mut g) = setup("cg-pids") else {
        return;
    };
    // One process in the background plus the shell (or the command it execs last).
    let pid = spawn_gated(&mut g, "sleep 30 & sleep 30");
    for (_, d) in g.cg.dirs() {
        let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}",
            d.display()
        );
    }
    assert_eq!(g.cg.pids().unwrap(), vec![pid]);
    release(&mut g, pid);
    // The sleep child joins the cgroup too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.cg.pids().unwrap().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(g.cg.pids().unwrap().len(), 2);
    g.cg.kill_all(nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = g.children[0].wait().unwrap();
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.cg.pids().unwrap().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(g.cg.pids().unwrap().is_empty());
    assert!(g.cg.add_pid(0).is_err());
}

#[test]
fn oom_kill_is_counted() {
    let Some(mut g) = setup("cg-oom") else { return };
    g.cg.apply(&resources(serde_json::json!({
        "memory": {"limit": 16777216, "swap": 16777216}
    })))
    .unwrap();
    assert_eq!(g.cg.oom_kill_count().unwrap(), 0);
    let pid = spawn_gated(
        &mut g,
        "exec /bin/busybox dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    release(&mut g, pid);
    let status = g.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(g.cg.oom_kill_count().unwrap() >= 1);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let Some(mut g) = setup("cg-fork") else {
        return;
    };
    g.cg.apply(&resources(serde_json::json!({"pids": {"limit": 8}})))
        .unwrap();
    let pid = spawn_gated(
        &mut g,
        "i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; echo all-forked >&2; sleep 30",
    );
    release(&mut g, pid);
    // Wait for the shell to hit the limit (it stops forking and exits or waits).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = dir_of(&g, "pids").join("pids.events");
    loop {
        let max = fs::read_to_string(&events)
            .ok()
            .and_then(|t| flat_keyed(&t, "max"))
            .unwrap_or(0);
        if max > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "pids.max never hit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let current: u64 = file(&g, "pids", "pids.current").parse().unwrap();
    assert!(current <= 8, "pids.current {current}");
    assert!(g.cg.pids().unwrap().len() <= 8);
    g.cg.kill_all(nix::sys::signal::Signal::SIGKILL).unwrap();
    let out = g.children.remove(0).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("all-forked"),
        "fork bomb was not stopped: {err}"
    );
}

#[test]
fn freeze_and_thaw_stop_and_resume_progress() {
    let Some(mut g) = setup("cg-freeze") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ticks");
    let pid = spawn_gated(
        &mut g,
        &format!(
            "while true; do echo x >> {}; usleep 5000; done",
            out.display()
        ),
    );
    release(&mut g, pid);
    let size = || fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while size() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(size() >= 4, "child made no progress");
    g.cg.freeze().unwrap();
    if let Some(t) = g.cg.target("freezer").filter(|t| !t.v2) {
        assert_eq!(
            fs::read_to_string(t.dir.join("freezer.state"))
                .unwrap()
                .trim(),
            "FROZEN"
        );
    }
    let frozen_at = size();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(size(), frozen_at, "frozen child kept writing");
    g.cg.thaw().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while size() == frozen_at && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(size() > frozen_at, "thawed child made no progress");
}

#[test]
fn relative_paths_nest_under_the_callers_cgroup() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let name = testutil::unique_name("cg-rel");
    let cg = Cgroup::new(Some(&format!("berth-test-rel/{name}")), "x", false).unwrap();
    let procs = mountinfo::parse_proc_cgroup(&fs::read_to_string("/proc/self/cgroup").unwrap());
    for (h, d) in cg.dirs() {
        let mi = mountinfo::CgroupMount {
            mountpoint: h.mountpoint.clone(),
            root: "/".into(),
            v2: h.v2,
            controllers: h.controllers.clone(),
        };
        let cur = mountinfo::current_path(&mi, &procs).unwrap_or("/");
        let cur = if h.v2 { parent_cg(cur) } else { cur };
        let want = join_cg(
            &join_cg(&h.mountpoint, cur),
            &format!("berth-test-rel/{name}"),
        );
        assert_eq!(d, want.as_path());
    }
    assert_eq!(cg.relative_path(), format!("berth-test-rel/{name}"));
    // Nothing was created.
    assert!(cg.dirs().all(|(_, d)| !d.exists()));
}

/// A relative path gets its memory and pids limits on every host: on a cgroup2 host
/// whose caller sits in a non-root cgroup (systemd's layout) it nests beside that cgroup,
/// which holds the caller and so could not enable memory for a child.
#[test]
fn relative_path_takes_memory_and_pids_limits() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let top = format!("berth-test-{}", testutil::unique_name("cg-relres"));
    let cg = Cgroup::new(Some(&format!("{top}/c")), "x", false).unwrap();
    let applied = cg.create().and_then(|()| {
        cg.apply(&resources(serde_json::json!({
            "memory": {"limit": 33554432}, "pids": {"limit": 20}
        })))
    });
    let read = |controller: &str, v1: &str, v2: &str| {
        cg.controller_dir(controller).map(|(h, d)| {
            let f = d.join(if h.v2 { v2 } else { v1 });
            fs::read_to_string(&f)
                .unwrap_or_default()
                .trim()
                .to_string()
        })
    };
    let memory = read("memory", "memory.limit_in_bytes", "memory.max");
    let pids = read("pids", "pids.max", "pids.max");
    let _ = cg.destroy();
    for (_, d) in cg.dirs() {
        if let Some(p) = d.parent() {
            let _ = fs::remove_dir(p);
        }
    }
    applied.unwrap();
    assert_eq!(memory.as_deref(), Some("33554432"));
    assert_eq!(pids.as_deref(), Some("20"));
}

/// Containers share parents (`/berth`, a test's `/berth-rt-test`), and whoever is last
/// removes them: a create racing with that removal still succeeds.
#[test]
fn create_survives_a_shared_parent_removed_meanwhile() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let parent = format!("/berth-test-{}", testutil::unique_name("cg-race"));
    let tops: Vec<PathBuf> = hierarchies()
        .unwrap()
        .into_iter()
        .map(|h| join_cg(&h.mountpoint, &parent))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let remover = {
        let (stop, tops) = (stop.clone(), tops.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for t in &tops {
                    let _ = fs::remove_dir(t);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut result = Ok(());
    for i in 0..300 {
        let cg = Cgroup::new(Some(&format!("{parent}/c{i}")), "x", false).unwrap();
        result = cg
            .create()
            .map_err(|e| format!("create {i}: {e}: {:?}", std::error::Error::source(&e)));
        let _ = cg.destroy();
        if result.is_err() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    remover.join().unwrap();
    for t in &tops {
        let _ = fs::remove_dir(t);
    }
    result.unwrap();
}

#[test]
fn invalid_paths_are_rejected() {
    for p in ["", "/", "/a/../../etc", "../x"] {
        let e = Cgroup::new(Some(p), "x", false).unwrap_err();
        assert_eq!(
            errkind::HasKind::kind(&e),
            errkind::ErrorKind::InvalidArgument
        );
    }
    let cg = Cgroup::new(None, "abc", false).unwrap();
    assert_eq!(cg.relative_path(), "/berth/abc");
    let cg = Cgroup::new(Some("machine.slice:berth:abc"), "abc", true).unwrap();
    assert_eq!(cg.relative_path(), "/machine.slice/berth-abc.scope");
}

/// The v2 code paths, against whatever cgroup2 hierarchy this host has (on a hybrid
/// host the `unified` mount, which holds few or no controllers but has every core file).
#[test]
fn v2_core_files_freeze_and_kill() {
    let Some(mut g) = setup("cg-v2") else { return };
    let Some(dir) = g.cg.v2_dir().map(Path::to_path_buf) else {
        eprintln!("skipping: no cgroup2 hierarchy");
        return;
    };
    assert!(dir.is_dir());
    let pid = spawn_gated(&mut g, "sleep 30");
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()));
    // Every controller of the hierarchy is enabled down to the parent.
    let h = g.cg.dirs().find(|(h, _)| h.v2).unwrap().0.clone();
    let parent_ctl = fs::read_to_string(dir.parent().unwrap().join("cgroup.subtree_control"))
        .unwrap_or_default();
    for c in &h.controllers {
        assert!(
            parent_ctl.split_whitespace().any(|x| x == c),
            "{c} not enabled for {}",
            dir.display()
        );
    }
    if dir.join("cgroup.freeze").exists() {
        freeze_v2(&dir, true).unwrap();
        let ev = fs::read_to_string(dir.join("cgroup.events")).unwrap();
        assert_eq!(flat_keyed(&ev, "frozen"), Some(1));
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let state = status.lines().find(|l| l.starts_with("State:")).unwrap();
        assert!(!state.contains("R (running)"), "{state}");
        freeze_v2(&dir, false).unwrap();
        let ev = fs::read_to_string(dir.join("cgroup.events")).unwrap();
        assert_eq!(flat_keyed(&ev, "frozen"), Some(0));
    }
    if dir.join("cgroup.kill").exists() {
        write(&dir.join("cgroup.kill"), "1").unwrap();
        let status = g.children[0].wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }
}

#[test]
fn unified_map_writes_v2_files() {
    let Some(g) = setup("cg-unified") else { return };
    if g.cg.v2_dir().is_none() {
        let e =
            g.cg.apply(&resources(
                serde_json::json!({"unified": {"pids.max": "10"}}),
            ))
            .unwrap_err();
        assert_eq!(errkind::HasKind::kind(&e), errkind::ErrorKind::Unavailable);
        return;
    }
    let dir = g.cg.v2_dir().unwrap().to_path_buf();
    g.cg.apply(&resources(
        serde_json::json!({"unified": {"cgroup.max.descendants": "3"}}),
    ))
    .unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("cgroup.max.descendants"))
            .unwrap()
            .trim(),
        "3"
    );
    for bad in ["../x.y", "cgroup.procs", "noext"] {
        let e =
            g.cg.apply(&resources(serde_json::json!({"unified": {bad: "1"}})))
                .unwrap_err();
        assert_eq!(
            errkind::HasKind::kind(&e),
            errkind::ErrorKind::InvalidArgument,
            "{bad}: {e}"
        );
    }
    let e =
        g.cg.apply(&resources(
            serde_json::json!({"unified": {"nosuch.file": "1"}}),
        ))
        .unwrap_err();
    assert!(matches!(e, CgroupError::ControllerMissing { .. }), "{e}");
}

#[test]
fn stats_report_usage() {
    let Some(mut g) = setup("cg-stats") else {
        return;
    };
    g.cg.apply(&resources(serde_json::json!({
        "memory": {"limit": 67108864}, "pids": {"limit": 20}
    })))
    .unwrap();
    // Burn a little CPU and memory, then leave exactly two sleeping processes.
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ready");
    let pid = spawn_gated(
        &mut g,
        &format!(
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; \
             x=$(/bin/busybox dd if=/dev/zero bs=1M count=4 2>/dev/null | /bin/busybox wc -c); \
             sleep 30 & echo > {}; exec sleep 30",
            marker.display()
        ),
    );
    release(&mut g, pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(marker.exists() && g.cg.pids().unwrap().len() == 2) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = g.cg.stats().unwrap();
    assert_eq!(st.memory.limit, 67108864);
    assert!(st.memory.usage > 0, "{st:?}");
    assert!(st.memory.max_usage >= st.memory.usage || st.memory.max_usage == 0);
    assert!(st.cpu.usage_total_ns > 1_000_000, "{st:?}");
    assert!(st.cpu.usage_user_ns + st.cpu.usage_system_ns > 0, "{st:?}");
    assert!(!st.memory.stat.is_empty(), "{st:?}");
    if g.cg.controller_dir("cpuacct").is_some_and(|(h, _)| !h.v2) {
        assert!(!st.cpu.percpu_ns.is_empty());
        assert!(st.cpu.percpu_ns.iter().sum::<u64>() > 0);
    }
    assert_eq!(st.pids.limit, 20);
    assert_eq!(st.pids.current, 2);
    let json = serde_json::to_value(&st).unwrap();
    assert!(json["memory"]["usage"].is_u64());
}

/// The eBPF device filter, attached to this cgroup's cgroup2 directory (on a hybrid host
/// the unified hierarchy still runs device programs for its cgroups).
#[test]
fn v2_device_filter_denies_unlisted_devices() {
    let Some(mut g) = setup("cg-bpf") else {
        return;
    };
    let Some(dir) = g.cg.v2_dir().map(Path::to_path_buf) else {
        eprintln!("skipping: no cgroup2 hierarchy");
        return;
    };
    let rules: Vec<oci_spec::runtime::LinuxDeviceCgroup> =
        serde_json::from_value(serde_json::json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}
        ]))
        .unwrap();
    // The same cgroup seen as on a host without v1 devices: apply goes to eBPF.
    let v2_only = Cgroup {
        path: g.cg.path.clone(),
        dirs: g.cg.dirs.iter().filter(|(h, _)| h.v2).cloned().collect(),
    };
    let mut res = LinuxResources::default();
    res.set_devices(Some(rules.clone()));
    v2_only.apply(&res).unwrap();
    // Applying again replaces the program instead of stacking a second one.
    bpf::apply_device_rules(&dir, &rules).unwrap();
    assert_eq!(bpf::attached(&dir).unwrap(), 1);
    let script = "echo x > /dev/null && echo null-ok; \
                  /bin/busybox head -c 1 /dev/zero > /dev/null && echo zero-read-ok; \
                  echo x > /dev/zero || echo zero-write-denied; \
                  /bin/busybox head -c 1 /dev/urandom > /dev/null || echo urandom-denied";
    let child = Command::new("/bin/busybox")
        .args(["sh", "-c", &format!("read _go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    g.children.push(child);
    g.cg.add_pid(pid).unwrap();
    release(&mut g, pid);
    let out = g.children.remove(0).wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "null-ok",
            "zero-read-ok",
            "zero-write-denied",
            "urandom-denied"
        ],
        "{out}"
    );
}
