//! The v2 (and v1) file formats, checked against a fake cgroup tree of plain files: this
//! host has no pure cgroup2 controllers to write to, so these tests pin down exactly what
//! `apply` writes on a v2 host.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

const V2_FILES: &[&str] = &[
    "cgroup.procs",
    "cgroup.controllers",
    "cgroup.subtree_control",
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "io.max",
    "hugetlb.2MB.max",
    "memory.high",
];

/// A fake pure-v2 host rooted at `root` with every controller enabled, and the cgroup
/// `/berth/x` in it.
fn fake_v2(root: &Path) -> Cgroup {
    let controllers = ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"];
    let dir = root.join("berth/x");
    for d in [root, &root.join("berth"), &dir] {
        fs::create_dir_all(d).unwrap();
        fs::write(d.join("cgroup.controllers"), controllers.join(" ")).unwrap();
        fs::write(d.join("cgroup.subtree_control"), "").unwrap();
    }
    for f in V2_FILES.iter().filter(|f| !f.starts_with("cgroup.")) {
        fs::write(dir.join(f), "").unwrap();
    }
    fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
    fs::write(dir.join("cgroup.procs"), "").unwrap();
    Cgroup {
        path: "/berth/x".into(),
        dirs: vec![(
            Hierarchy {
                mountpoint: root.to_path_buf(),
                controllers: controllers.iter().map(|c| c.to_string()).collect(),
                v2: true,
            },
            dir,
        )],
    }
}

fn contents(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect()
}

fn resources(json: serde_json::Value) -> oci_spec::runtime::LinuxResources {
    serde_json::from_value(json).unwrap()
}

#[test]
fn v2_files_and_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v2(tmp.path());
    cg.apply(&resources(serde_json::json!({
        "memory": {"limit": 100000000, "reservation": 50000000, "swap": 150000000},
        "cpu": {"shares": 1024, "quota": 50000, "period": 200000, "burst": 1000,
                "idle": 0, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 1000}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}],
        "unified": {"memory.high": "90000000"}
    })))
    .unwrap();
    let dir = tmp.path().join("berth/x");
    let f = contents(&dir);
    assert_eq!(f["memory.max"], "100000000");
    assert_eq!(f["memory.low"], "50000000");
    assert_eq!(f["memory.swap.max"], "50000000");
    assert_eq!(f["cpu.weight"], "39");
    assert_eq!(f["cpu.max"], "50000 200000");
    assert_eq!(f["cpu.max.burst"], "1000");
    assert_eq!(f["cpu.idle"], "0");
    assert_eq!(f["cpuset.cpus"], "0-1");
    assert_eq!(f["cpuset.mems"], "0");
    assert_eq!(f["pids.max"], "100");
    // Plain files keep only the last write of each: the device line of io.weight and
    // the last io.max line.
    assert_eq!(
        f["io.weight"],
        format!("8:0 {}", apply::blkio_weight_to_io(1000))
    );
    assert_eq!(f["io.max"], "8:16 wiops=100");
    assert_eq!(f["hugetlb.2MB.max"], "2097152");
    assert_eq!(f["memory.high"], "90000000");

    // A quota without a period keeps the period already configured.
    fs::write(dir.join("cpu.max"), "max 250000\n").unwrap();
    cg.apply(&resources(serde_json::json!({"cpu": {"quota": 30000}})))
        .unwrap();
    assert_eq!(
        fs::read_to_string(dir.join("cpu.max")).unwrap(),
        "30000 250000"
    );

    // Unlimited values.
    cg.apply(&resources(serde_json::json!({
        "memory": {"limit": -1, "swap": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}
    })))
    .unwrap();
    let f = contents(&dir);
    assert_eq!(f["memory.max"], "max");
    assert_eq!(f["memory.swap.max"], "max");
    assert_eq!(f["pids.max"], "max");
    assert_eq!(f["cpu.max"], "max 250000");
}

#[test]
fn v2_unsupported_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v2(tmp.path());
    for (json, kind) in [
        (
            serde_json::json!({"memory": {"swappiness": 10}}),
            errkind::ErrorKind::Unavailable,
        ),
        (
            serde_json::json!({"cpu": {"realtimeRuntime": 1000}}),
            errkind::ErrorKind::Unavailable,
        ),
        (
            serde_json::json!({"memory": {"swap": 1000000}}),
            errkind::ErrorKind::InvalidArgument,
        ),
        (
            serde_json::json!({"blockIO": {"leafWeight": 100}}),
            errkind::ErrorKind::Unavailable,
        ),
        (
            serde_json::json!({"rdma": {"mlx": {"hcaHandles": 1}}}),
            errkind::ErrorKind::Unavailable,
        ),
    ] {
        let e = cg.apply(&resources(json.clone())).unwrap_err();
        assert_eq!(errkind::HasKind::kind(&e), kind, "{json}: {e}");
    }
    // A controller the host has but the parent did not enable for this cgroup is
    // named as such (not "not available on this host").
    fs::write(tmp.path().join("berth/x/cgroup.controllers"), "cpu memory").unwrap();
    let e = cg
        .apply(&resources(serde_json::json!({"pids": {"limit": 5}})))
        .unwrap_err();
    assert!(
        matches!(e, CgroupError::ControllerNotEnabled { ref controller, ref dir }
            if controller == "pids" && dir.ends_with("berth/x")),
        "{e}"
    );
    assert!(e.to_string().contains("subtree_control"), "{e}");
    assert_eq!(errkind::HasKind::kind(&e), errkind::ErrorKind::Unavailable);
    // Not requested: no error.
    cg.apply(&resources(
        serde_json::json!({"memory": {"limit": 1000000}}),
    ))
    .unwrap();
}

#[test]
fn v2_create_enables_controllers_along_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let cg = fake_v2(tmp.path());
    // In a real cgroupfs the kernel fills new directories; here /berth is pre-made.
    fs::remove_dir_all(tmp.path().join("berth/x")).unwrap();
    cg.create().unwrap();
    // Root and /berth delegate every available controller; the leaf does not.
    for d in [tmp.path().to_path_buf(), tmp.path().join("berth")] {
        let s = fs::read_to_string(d.join("cgroup.subtree_control")).unwrap();
        assert_eq!(
            s,
            "+cpuset +cpu +io +memory +hugetlb +pids",
            "{}",
            d.display()
        );
    }
    assert!(tmp.path().join("berth/x").is_dir());
}

#[test]
fn v1_blkio_weights_and_throttles() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("berth/x");
    fs::create_dir_all(&dir).unwrap();
    for f in [
        "blkio.weight",
        "blkio.weight_device",
        "blkio.leaf_weight",
        "blkio.leaf_weight_device",
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_iops_device",
    ] {
        fs::write(dir.join(f), "").unwrap();
    }
    let cg = Cgroup {
        path: "/berth/x".into(),
        dirs: vec![(
            Hierarchy {
                mountpoint: tmp.path().to_path_buf(),
                controllers: vec!["blkio".into()],
                v2: false,
            },
            dir.clone(),
        )],
    };
    cg.apply(&resources(serde_json::json!({"blockIO": {
        "weight": 300, "leafWeight": 200,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 400, "leafWeight": 100}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}]
    }})))
    .unwrap();
    let f = contents(&dir);
    assert_eq!(f["blkio.weight"], "300");
    assert_eq!(f["blkio.weight_device"], "8:0 400");
    assert_eq!(f["blkio.leaf_weight"], "200");
    assert_eq!(f["blkio.leaf_weight_device"], "8:0 100");
    assert_eq!(f["blkio.throttle.read_bps_device"], "8:0 1048576");
    assert_eq!(f["blkio.throttle.write_iops_device"], "8:0 10");
    // Devices and hugetlb are not mounted in this fake host: requested means an error.
    let e = cg
        .apply(&resources(
            serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}),
        ))
        .unwrap_err();
    assert!(matches!(e, CgroupError::ControllerMissing { .. }), "{e}");
    let e = cg
        .apply(&resources(
            serde_json::json!({"unified": {"memory.max": "1"}}),
        ))
        .unwrap_err();
    assert_eq!(errkind::HasKind::kind(&e), errkind::ErrorKind::Unavailable);
}

#[test]
fn parent_of_a_cgroup_path() {
    assert_eq!(parent_cg("/a/b/c"), "/a/b");
    assert_eq!(parent_cg("/a/b/"), "/a");
    assert_eq!(parent_cg("/a"), "/");
    assert_eq!(parent_cg("/"), "/");
}
