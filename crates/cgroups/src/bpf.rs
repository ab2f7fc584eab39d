//! The cgroup v2 device filter: a `BPF_PROG_TYPE_CGROUP_DEVICE` program.
