//! Cgroup v1, v2 and hybrid management for containers.
