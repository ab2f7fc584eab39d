//! `berth`: the Docker-style command line, `berth daemon` and `berth registry serve`.

fn main() {
    println!("berth {}", env!("CARGO_PKG_VERSION"));
}
