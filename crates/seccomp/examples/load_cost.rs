//! What loading Docker's default profile costs (not a test): compiles it, then forks
//! children that each load the BPF with `seccomp(2)` and time that call, and then time a
//! loop of cheap system calls under the filter. Usage:
//! `cargo run --release -p seccomp --example load_cost [RUNS]` (as root or not).

use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// In a forked child: set no_new_privs, load `insns`, time it and 100k getppid calls;
/// the child writes both (microseconds, nanoseconds per call) to the pipe.
fn measure(insns: &[u8]) -> (f64, f64) {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the example is single-threaded; the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let prog = libc::sock_fprog {
            len: (insns.len() / 8) as u16,
            filter: insns.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: plain prctl/syscall calls with valid arguments; prog outlives the call.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let t = Instant::now();
            let r = libc::syscall(libc::SYS_seccomp, 1, 0, &prog as *const _);
            let load = t.elapsed().as_secs_f64() * 1e6;
            assert_eq!(r, 0);
            let t = Instant::now();
            for _ in 0..100_000 {
                libc::getppid();
            }
            let per = t.elapsed().as_secs_f64() * 1e9 / 100_000.0;
            let out = [load, per];
            libc::write(fds[1], out.as_ptr() as *const libc::c_void, 16);
            libc::_exit(0);
        }
    }
    let mut out = [0f64; 2];
    // SAFETY: reads 16 bytes into a 16-byte buffer; waitpid on our own child.
    unsafe {
        libc::close(fds[1]);
        libc::read(fds[0], out.as_mut_ptr() as *mut libc::c_void, 16);
        libc::close(fds[0]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    (out[0], out[1])
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let caps: Vec<String> = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SYS_CHROOT",
        "CAP_MKNOD",
        "CAP_AUDIT_WRITE",
        "CAP_SETFCAP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let profile = seccomp::docker_default(&caps, std::env::consts::ARCH);
    let p = seccomp::Program::compile(&profile).expect("compile");
    let (mut load, mut per) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (l, c) = measure(&p.instructions);
        load.push(l);
        per.push(c);
    }
    println!(
        "docker default profile: {} instructions; seccomp(2) load median {:.1} us; getppid under it {:.0} ns",
        p.len(),
        median(load),
        median(per)
    );
    let (_, base) = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..100_000 {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
            }
            v.push(t.elapsed().as_secs_f64() * 1e9 / 100_000.0);
        }
        ((), median(v))
    };
    println!("getppid without a filter {base:.0} ns");
}
