//! `berth-runtime`: the runc-compatible OCI runtime command line.

fn main() {
    println!("berth-runtime {}", env!("CARGO_PKG_VERSION"));
}
