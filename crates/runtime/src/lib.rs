//! OCI runtime: bundle and spec to an isolated process (namespaces, rootfs, cgroups, security).
