//! OCI seccomp profiles compiled to kernel filters with libseccomp.
