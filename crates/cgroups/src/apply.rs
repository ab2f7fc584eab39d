//! Writing [`LinuxResources`] to v1 and v2 controller files.

use oci_spec::runtime::LinuxResources;

use crate::{Cgroup, CgroupError, Result};

pub(crate) fn apply(_cg: &Cgroup, _r: &LinuxResources) -> Result<()> {
    Err(CgroupError::Unsupported {
        what: "applying resources (not supported yet)".into(),
    })
}
