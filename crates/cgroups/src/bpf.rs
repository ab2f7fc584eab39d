//! The cgroup v2 device filter: a `BPF_PROG_TYPE_CGROUP_DEVICE` program.

use std::path::Path;

use oci_spec::runtime::LinuxDeviceCgroup;

use crate::{CgroupError, Result};

/// Replace the device filter of the cgroup at `dir` by one implementing `rules`.
pub(crate) fn apply_device_rules(_dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    Err(CgroupError::Unsupported {
        what: "device rules on cgroup v2 (eBPF device filter not supported yet)".into(),
    })
}
