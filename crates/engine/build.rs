//! Links `berth-monitor` as a position-dependent executable. One monitor runs per
//! container for as long as it runs: a position-independent one has the dynamic loader
//! relocate ~260 KiB of its read-only data at every start, and those pages become
//! private, dirty memory of each monitor; linked at a fixed address they stay shared
//! with the page cache.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth-monitor=-no-pie");
}
