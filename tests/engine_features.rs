//! End to end: container stats, `--init`, terminal exec and healthchecks, through the
//! API, the berth CLI and the real docker CLI.

mod engine_support;

use engine_support::{host_ok, Daemon};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(d: &Daemon, name: &str, body: Value) -> String {
    let id = d.create(name, body);
    let (st, v) = d.request("POST", &format!("/containers/{id}/start"), None);
    assert_eq!(st, 204, "start {name}: {v}; {}", d.log());
    id
}

/// Reads the first `n` lines of a streamed (chunked) response.
fn stream_lines(d: &Daemon, path: &str, n: usize) -> Vec<Value> {
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: berth\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let k = s.read(&mut buf).unwrap();
        assert!(
            k > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..k]);
        let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let body = engine_support::dechunk(&raw[p + 4..]);
        let lines: Vec<Value> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "timed out reading the stream");
    }
}

#[test]
fn stats_api_berth_and_docker_cli() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    // Some CPU, some memory, a few processes.
    let id = start(
        &d,
        "st1",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "sleep 1000 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000"],
               "HostConfig": {"Memory": 64 << 20, "PidsLimit": 50}}),
    );
    // One-shot: at once, no previous reading.
    let (st, v) = d.request(
        "GET",
        "/containers/st1/stats?stream=false&one-shot=true",
        None,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["name"], "/st1");
    assert_eq!(v["preread"], "0001-01-01T00:00:00Z");
    assert!(
        v["cpu_stats"]["cpu_usage"]["total_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        v["cpu_stats"]["system_cpu_usage"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(v["cpu_stats"]["online_cpus"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["memory_stats"]["limit"], 64 << 20, "{v}");
    assert!(
        v["memory_stats"]["stats"].as_object().unwrap().len() > 3,
        "{v}"
    );
    assert!(v["pids_stats"]["current"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["pids_stats"]["limit"], 50, "{v}");
    assert!(
        v["blkio_stats"]["io_service_bytes_recursive"].is_array(),
        "{v}"
    );
    assert!(v["networks"]["eth0"]["rx_bytes"].is_u64(), "{v}");
    assert!(v["networks"].get("lo").is_none(), "{v}");
    // Non-streamed: two readings a second apart.
    let t = Instant::now();
    let (_, v) = d.request("GET", "/containers/st1/stats?stream=false", None);
    assert!(t.elapsed() >= Duration::from_millis(900));
    assert_ne!(v["preread"], "0001-01-01T00:00:00Z", "{v}");
    assert!(
        v["cpu_stats"]["system_cpu_usage"].as_u64()
            > v["precpu_stats"]["system_cpu_usage"].as_u64(),
        "{v}"
    );
    // Streamed (the default): one object per line, each with the previous as precpu.
    let lines = stream_lines(&d, "/containers/st1/stats", 2);
    assert_eq!(lines[0]["name"], "/st1");
    assert_eq!(lines[1]["preread"], lines[0]["read"]);
    // The berth CLI's table.
    let out = d.berth(&["stats", "--no-stream", "st1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(head.contains(col), "{text}");
    }
    let row = lines.next().unwrap();
    assert!(row.starts_with(&id[..12]) && row.contains("st1"), "{text}");
    assert!(row.contains(" / 64MiB"), "{text}");
    let out = d.berth(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}}",
        "st1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("st1 ") && !text.trim().ends_with(" 0"),
        "{text}"
    );
    // CPU % of a busy container held to a fifth of a CPU, from two readings.
    start(
        &d,
        "st2",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "while :; do :; done"],
               "HostConfig": {"NanoCpus": 200_000_000}}),
    );
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let out = d.berth(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.CPUPerc}}",
        "st1",
        "st2",
    ]);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let cpu = |name: &str| -> f64 {
        let l = text
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        l.rsplit(' ')
            .next()
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap()
    };
    assert!(cpu("st2") > 5.0 && cpu("st2") < 40.0, "{text}");
    assert!(cpu("st1") < 5.0, "{text}");
    let (st, _) = d.request("POST", "/containers/st2/kill", None);
    assert_eq!(st, 204);
    // The real docker CLI.
    let out = d.docker(&["stats", "--no-stream", "--no-trunc", "st1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("MEM USAGE / LIMIT") && text.contains(&id),
        "{text}"
    );
    assert!(text.contains("64MiB"), "{text}");
    // docker stats streams (stream=true) until killed (it outlives SIGTERM and SIGINT
    // without a terminal): several frames.
    let out = Command::new("timeout")
        .args(["-s", "KILL", "4", "docker", "stats", "--no-trunc", "st1"])
        .env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.matches(id.as_str()).count() >= 2, "{text}");
    // A stopped container: one all-zero object.
    let (st, _) = d.request("POST", "/containers/st1/kill", None);
    assert_eq!(st, 204);
    d.wait_for("st1", "exit", |v| v["State"]["Running"] == false);
    let (st, v) = d.request("GET", "/containers/st1/stats?stream=true", None);
    assert_eq!(st, 200);
    assert_eq!(v["read"], "0001-01-01T00:00:00Z", "{v}");
    let (st, _) = d.request("GET", "/containers/nope/stats?stream=false", None);
    assert_eq!(st, 404);
}

/// Host pids of the processes in the pid namespace of `pid`, with their state letters.
fn procs_in_ns_of(pid: i64) -> Vec<(i32, char)> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns) {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
                .unwrap_or('?');
            out.push((p, state));
        }
    }
    out
}

fn exec_output(d: &Daemon, c: &str, cmd: &[&str]) -> String {
    let (st, v) = d.request(
        "POST",
        &format!("/containers/{c}/exec"),
        Some(&json!({"Cmd": cmd, "AttachStdout": true, "AttachStderr": true}).to_string()),
    );
    assert_eq!(st, 201, "{v}");
    let eid = v["Id"].as_str().unwrap();
    let (st, body) = d
        .try_request("POST", &format!("/exec/{eid}/start"), Some(b"{}"))
        .unwrap();
    assert_eq!(st, 200);
    engine_support::demux(&body).0
}

#[test]
fn init_reaps_zombies_forwards_signals_and_keeps_exit_codes() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    // An orphan that exits: re-parented to pid 1, which must reap it.
    let orphan = "(sleep 0.2 &); exec sleep 1000";
    start(
        &d,
        "in1",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", orphan], "HostConfig": {"Init": true}}),
    );
    start(
        &d,
        "noinit",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", orphan]}),
    );
    std::thread::sleep(Duration::from_millis(1200));
    let with = procs_in_ns_of(d.inspect("in1")["State"]["Pid"].as_i64().unwrap());
    let without = procs_in_ns_of(d.inspect("noinit")["State"]["Pid"].as_i64().unwrap());
    assert!(
        with.iter().all(|(_, s)| *s != 'Z'),
        "zombie under --init: {with:?}"
    );
    assert_eq!(with.len(), 2, "init + sleep: {with:?}");
    assert!(
        without.iter().any(|(_, s)| *s == 'Z'),
        "control: without an init the orphan stays a zombie: {without:?}"
    );
    assert_eq!(d.inspect("in1")["HostConfig"]["Init"], true);
    // Pid 1 is the init, not the program.
    let cmdline = exec_output(&d, "in1", &["cat", "/proc/1/cmdline"]);
    assert!(
        cmdline.starts_with("/sbin/docker-init\0--\0sh\0"),
        "{cmdline:?}"
    );
    let ps = exec_output(&d, "in1", &["ps", "-o", "pid,comm"]);
    assert!(ps.lines().any(|l| l.trim() == "1 docker-init"), "{ps}");
    // Stop: SIGTERM reaches `sleep` (which as pid 1 would ignore it) at once.
    let t = Instant::now();
    let (st, _) = d.request("POST", "/containers/in1/stop?t=20", None);
    assert_eq!(st, 204);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(d.inspect("in1")["State"]["ExitCode"], 143);
    // The program's exit code is the container's.
    start(
        &d,
        "in2",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "exit 7"], "HostConfig": {"Init": true}}),
    );
    let (_, v) = d.request("POST", "/containers/in2/wait", None);
    assert_eq!(v["StatusCode"], 7, "{v}");
    // docker run --init with the real CLI.
    let out = d.docker(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; exit 4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "docker-init\n");
}

/// A pseudo-terminal pair of `rows` x `cols`: (master, slave).
fn openpty(rows: u16, cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (0, 0);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors to the given locals; the name pointer may be
    // null, the termios pointer too, and the winsize is read from a live local.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    assert_eq!(r, 0, "openpty");
    // SAFETY: openpty returned two fresh descriptors we now own.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

/// Runs `cmd` with a terminal as stdio, types `input`, and returns (exit code, output).
fn run_in_pty(cmd: Command, input: &[u8]) -> (Option<i32>, String) {
    run_in_pty_steps(cmd, &[input])
}

/// Like [`run_in_pty`], typing each step half a second after the one before.
fn run_in_pty_steps(mut cmd: Command, steps: &[&[u8]]) -> (Option<i32>, String) {
    let (master, slave) = openpty(33, 101);
    let s = || std::fs::File::from(slave.try_clone().unwrap());
    // SAFETY: setsid and TIOCSCTTY in the child before exec only affect the child.
    let fd = slave.as_raw_fd();
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setsid();
            libc::ioctl(fd, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.stdin(s()).stdout(s()).stderr(s()).spawn().unwrap();
    // The command holds copies of the slave until dropped: the master sees EIO only once
    // every copy is closed.
    drop(cmd);
    drop(slave);
    let mut m = std::fs::File::from(master);
    for input in steps {
        std::thread::sleep(Duration::from_millis(500));
        m.write_all(input).unwrap();
    }
    let reader = {
        let mut m = m.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            // EIO once the child and everything it started closed the terminal.
            while let Ok(k) = m.read(&mut buf) {
                if k == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..k]);
            }
            String::from_utf8_lossy(&out).to_string()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(m);
    (code, reader.join().unwrap())
}

#[test]
fn exec_with_a_terminal() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    start(
        &d,
        "tt1",
        json!({"Image": "busybox", "Cmd": ["sleep", "1000"]}),
    );
    let events = watch_events(&d, "\"exec_die\"");
    // berth exec -it: raw mode, a real terminal inside, the size of ours, the exit code.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(["exec", "-it", "tt1", "sh"]);
    let (code, out) = run_in_pty(cmd, b"tty; stty size; echo h''i; exit 3\n");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    assert!(out.contains("33 101"), "window size: {out}");
    assert!(out.contains("hi\r\n"), "{out}");
    // Docker's exec events, the exit code on exec_die.
    let ev = events.join().unwrap();
    for a in ["exec_create: sh", "exec_start: sh", "exec_die"] {
        assert!(ev.contains(&format!("\"Action\":\"{a}\"")), "{a}: {ev}");
    }
    assert!(
        ev.contains("\"exitCode\":\"3\"") && ev.contains("\"execID\""),
        "{ev}"
    );
    // The real docker CLI.
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", format!("unix://{}", d.sock.display()))
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .args([
            "exec",
            "-it",
            "tt1",
            "sh",
            "-c",
            "stty size; read x; echo got $x; exit 5",
        ]);
    let (code, out) = run_in_pty(cmd, b"abc\n");
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("33 101") && out.contains("got abc"), "{out}");
    // Through the API: a raw (not multiplexed) stream, resize, exit code in inspect.
    let (st, v) = d.request(
        "POST",
        "/containers/tt1/exec",
        Some(&json!({"Cmd": ["sh", "-c", "sleep 0.5; stty size; exit 2"], "Tty": true, "AttachStdout": true}).to_string()),
    );
    assert_eq!(st, 201, "{v}");
    let eid = v["Id"].as_str().unwrap().to_string();
    let sock = d.sock.clone();
    let e2 = eid.clone();
    let t = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = r#"{"Tty":true}"#;
        write!(s, "POST /exec/{e2}/start HTTP/1.1\r\nHost: b\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw).to_string()
    });
    std::thread::sleep(Duration::from_millis(200));
    let (st, _) = d.request("POST", &format!("/exec/{eid}/resize?h=12&w=34"), None);
    assert_eq!(st, 200);
    let (_, v) = d.request("GET", &format!("/exec/{eid}/json"), None);
    assert_eq!(v["Running"], true, "{v}");
    assert!(v["Pid"].as_i64().unwrap() > 1, "{v}");
    let raw = t.join().unwrap();
    assert!(raw.starts_with("HTTP/1.1 101"), "{raw}");
    assert!(
        raw.contains("raw-stream") && raw.contains("12 34\r\n"),
        "{raw}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, v) = d.request("GET", &format!("/exec/{eid}/json"), None);
        if v["Running"] == false {
            assert_eq!(v["ExitCode"], 2, "{v}");
            assert_eq!(v["ProcessConfig"]["tty"], true, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, _) = d.request("POST", "/exec/nope/resize?h=1&w=1", None);
    assert_eq!(st, 404);
    // The start request's ConsoleSize, without an upgrade: the raw terminal as the body.
    let (st, v) = d.request(
        "POST",
        "/containers/tt1/exec",
        Some(&json!({"Cmd": ["stty", "size"], "Tty": true, "AttachStdout": true}).to_string()),
    );
    assert_eq!(st, 201, "{v}");
    let eid = v["Id"].as_str().unwrap();
    let (st, body) = d
        .try_request(
            "POST",
            &format!("/exec/{eid}/start"),
            Some(br#"{"Tty": true, "ConsoleSize": [20, 40]}"#),
        )
        .unwrap();
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "20 40\r\n")
    );
    // Detaching (^P^Q) leaves the process running, and its output is drained: a process
    // writing far more than a terminal buffers still finishes.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args([
        "exec",
        "-it",
        "tt1",
        "sh",
        "-c",
        "sleep 1; i=0; while [ $i -lt 30000 ]; do echo line $i; i=$((i+1)); done; touch /tmp/done",
    ]);
    let (code, out) = run_in_pty(cmd, b"\x10\x11");
    assert_eq!(code, Some(0), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !exec_output(&d, "tt1", &["ls", "/tmp"]).contains("done") {
        assert!(
            Instant::now() < deadline,
            "the detached exec did not finish"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn init_with_a_terminal_forwards_ctrl_c_to_the_program() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("-H")
        .arg(format!("unix://{}", d.sock.display()))
        .args(["run", "--rm", "-it", "--init", "busybox", "sh"]);
    // ^C ends the foreground `sleep` once (the shell survives), then the shell exits.
    let t = Instant::now();
    let (code, out) = run_in_pty_steps(
        cmd,
        &[
            b"cat /proc/1/comm; echo me=$$; sleep 30\n",
            b"\x03",
            b"echo after; exit 6\n",
        ],
    );
    assert_eq!(code, Some(6), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "^C did not stop sleep: {out}"
    );
    assert!(out.contains("docker-init\r\n"), "{out}");
    assert!(!out.contains("me=1\r\n"), "the shell is not pid 1: {out}");
    assert!(out.contains("after\r\n"), "{out}");
}

/// Streams `GET /events` in a thread until `until` shows up (or 25 s pass); returns the
/// text read.
fn watch_events(d: &Daemon, until: &str) -> std::thread::JoinHandle<String> {
    let sock = d.sock.clone();
    let until = until.to_string();
    let h = std::thread::spawn(move || {
        let mut s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(25))).unwrap();
        write!(s, "GET /events HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..k]);
            if String::from_utf8_lossy(&raw).contains(&until) {
                break;
            }
        }
        String::from_utf8_lossy(&raw).to_string()
    });
    std::thread::sleep(Duration::from_millis(200));
    h
}

/// Polls the container's `State.Health` until `f` holds (max 20 s).
fn wait_health(d: &Daemon, c: &str, f: impl Fn(&Value) -> bool) -> Value {
    d.wait_for(c, "health", |v| f(&v["State"]["Health"]))["State"]["Health"].clone()
}

#[test]
fn healthchecks_from_flags_api_and_image() {
    if !host_ok() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("busybox:latest");
    // Watch the events from the start.
    let events = watch_events(&d, "health_status: unhealthy");
    // Through the API: healthy while the file exists, unhealthy after `Retries` failures.
    let id = start(
        &d,
        "hc1",
        json!({"Image": "busybox", "Cmd": ["sh", "-c", "touch /tmp/ok; exec sleep 1000"],
               "Healthcheck": {"Test": ["CMD-SHELL", "echo probing; test -e /tmp/ok"],
                               "Interval": 300_000_000, "Timeout": 5_000_000_000u64, "Retries": 2}}),
    );
    let v = d.inspect("hc1");
    assert_eq!(v["Config"]["Healthcheck"]["Retries"], 2);
    let h = wait_health(&d, "hc1", |h| h["Status"] == "healthy");
    assert_eq!(h["FailingStreak"], 0);
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 0, "{h}");
    assert_eq!(last["Output"], "probing\n", "{h}");
    let (_, list) = d.request("GET", "/containers/json", None);
    let st = list[0]["Status"].as_str().unwrap();
    assert!(st.starts_with("Up ") && st.ends_with(" (healthy)"), "{st}");
    let out = d.berth(&["ps"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("(healthy)"));
    let _ = exec_output(&d, "hc1", &["rm", "/tmp/ok"]);
    let h = wait_health(&d, "hc1", |h| h["Status"] == "unhealthy");
    assert!(h["FailingStreak"].as_i64().unwrap() >= 2, "{h}");
    assert_eq!(h["Log"].as_array().unwrap().last().unwrap()["ExitCode"], 1);
    std::thread::sleep(Duration::from_millis(1500));
    let h = d.inspect("hc1")["State"]["Health"].clone();
    assert!(h["Log"].as_array().unwrap().len() <= 5, "{h}");
    let out = d.docker(&[
        "ps",
        "--filter",
        "health=unhealthy",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("hc1 Up ") && text.trim_end().ends_with("(unhealthy)"),
        "{text}"
    );
    let out = d.docker(&["ps", "-q", "--filter", "health=healthy"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
    let ev = events.join().unwrap();
    let healthy = ev.find("health_status: healthy").expect("healthy event");
    let unhealthy = ev
        .find("health_status: unhealthy")
        .expect("unhealthy event");
    assert!(healthy < unhealthy && ev.contains(&id));
    // Each probe is an exec of the container in the events, as docker's.
    let probe = "exec_start: /bin/sh -c echo probing; test -e /tmp/ok";
    let started = ev
        .find(probe)
        .unwrap_or_else(|| panic!("no {probe:?} in {ev}"));
    assert!(ev
        .find("exec_create: /bin/sh -c echo probing")
        .is_some_and(|c| c < started));
    assert!(ev[started..].contains("\"exitCode\":\"0\""), "{ev}");
    assert!(ev[started..].contains("exec_die"), "{ev}");
    // A restarted daemon carries on with the health of a running container.
    let before = d.inspect("hc1")["State"]["Health"].clone();
    d.kill9();
    d.spawn();
    std::thread::sleep(Duration::from_millis(600));
    let after = d.inspect("hc1")["State"]["Health"].clone();
    assert_eq!(after["Status"], "unhealthy", "{after}");
    assert!(
        after["FailingStreak"].as_i64() >= before["FailingStreak"].as_i64(),
        "{before} {after}"
    );
    // The berth CLI flags; a probe that overruns its timeout.
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        "hc2",
        "--health-cmd",
        "sleep 5",
        "--health-interval",
        "200ms",
        "--health-timeout",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = wait_health(&d, "hc2", |h| h["Status"] == "unhealthy");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1, "{h}");
    assert_eq!(
        last["Output"], "Health check exceeded timeout (300ms)",
        "{h}"
    );
    // A failing probe during the start period does not count.
    start(
        &d,
        "hc4",
        json!({"Image": "busybox", "Cmd": ["sleep", "1000"],
               "Healthcheck": {"Test": ["CMD", "false"], "Interval": 200_000_000,
                               "StartPeriod": 60_000_000_000u64, "StartInterval": 200_000_000, "Retries": 1}}),
    );
    let h = wait_health(&d, "hc4", |h| {
        h["Log"].as_array().is_some_and(|l| l.len() >= 3)
    });
    assert_eq!(
        (h["Status"].as_str(), h["FailingStreak"].as_i64()),
        (Some("starting"), Some(0)),
        "{h}"
    );
    // HEALTHCHECK of the image, and --no-healthcheck.
    let ctx = d.dir.path().join("hc-ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nHEALTHCHECK --interval=300ms --retries=1 CMD [\"true\"]\n",
    )
    .unwrap();
    let out = d.berth(&["build", "-q", "-t", "hcimg", ctx.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start(
        &d,
        "hc5",
        json!({"Image": "hcimg", "Cmd": ["sleep", "1000"]}),
    );
    let h = wait_health(&d, "hc5", |h| h["Status"] == "healthy");
    assert_eq!(h["Log"][0]["ExitCode"], 0, "{h}");
    let out = d.berth(&[
        "run",
        "-d",
        "--name",
        "hc6",
        "--no-healthcheck",
        "hcimg",
        "sleep",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1000));
    let v = d.inspect("hc6");
    assert!(v["State"].get("Health").is_none(), "{v}");
    assert_eq!(v["Config"]["Healthcheck"]["Test"][0], "NONE");
    // The real docker CLI's flags.
    let out = d.docker(&[
        "run",
        "-d",
        "--name",
        "hc7",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "200ms",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = wait_health(&d, "hc7", |h| h["Status"] == "unhealthy");
    assert_eq!(
        h["FailingStreak"].as_i64().map(|n| n >= 2),
        Some(true),
        "{h}"
    );
    let out = d.docker(&["inspect", "-f", "{{.State.Health.Status}}", "hc7"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unhealthy");
}

/// `--init` with a runtime other than berth's (which has no built-in init then): the
/// daemon bind-mounts its init binary, Debian's docker-init (tini), at /sbin/docker-init
/// and runs the program under it; the monitor drives that runtime as a command.
#[test]
fn init_with_another_runtime_runs_docker_init() {
    if !host_ok() {
        return;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("docker-init").is_file()))
        .unwrap_or(false);
    if !on_path {
        eprintln!("skipping: docker-init (Debian's docker.io) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("oci-runtime");
    std::os::unix::fs::symlink(engine_support::runtime(), &other).unwrap();
    let d = Daemon::start_with_runtime(other);
    d.import_busybox("busybox:latest");
    let out = d.berth(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "cat /proc/1/comm; test -x /sbin/docker-init && echo mounted; echo me=$$; exit 7",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("docker-init\n"), "{text}");
    assert!(text.contains("mounted\n"), "{text}");
    assert!(!text.contains("me=1\n"), "the shell is pid 1: {text}");
    // Without --init the program is pid 1, and nothing is mounted.
    let out = d.berth(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo me=$$; test -e /sbin/docker-init || echo none",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "me=1\nnone\n");
}

#[test]
fn a_relative_cgroup_parent_is_taken_from_the_root_in_every_hierarchy() {
    // Docker's rule: a relative --cgroup-parent is relative to the init's cgroup (the
    // root), not to wherever the daemon runs; the daemon (which makes the cgroup and
    // reads its stats) and the runtime (which joins it) must agree on it.
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("busybox:latest");
    let parent = testutil::unique_name("berth-cgp");
    let _cleanup = CgroupParentCleanup(parent.clone());
    let o = d.berth(&[
        "run",
        "-d",
        "--cgroup-parent",
        &parent,
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let pid = d.inspect(&id)["State"]["Pid"].as_i64().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/{parent}/{id}");
    for line in cg.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        // Hierarchies the runtime does not manage (none here) would show another path.
        assert_eq!(path, want, "{line} in:\n{cg}");
    }
    // Its stats come from that cgroup.
    let (st, v) = d.request("GET", &format!("/containers/{id}/stats?stream=false"), None);
    assert_eq!(st, 200, "{v}");
    assert!(v["pids_stats"]["current"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(d.berth(&["rm", "-f", &id]).status.success());
    // The parent stays, as with Docker (CgroupParentCleanup removes it).
    // A parent that climbs out is refused.
    let o = d.berth(&[
        "create",
        "--cgroup-parent",
        "a/../../etc",
        "busybox",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("invalid --cgroup-parent"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Removes a test's cgroup parent (and anything left under it) from every hierarchy:
/// v1 controller mounts, the unified mount, or a pure v2 root; also when the test fails.
struct CgroupParentCleanup(String);

impl Drop for CgroupParentCleanup {
    fn drop(&mut self) {
        fn rmdir_tree(d: &std::path::Path) {
            if let Ok(rd) = std::fs::read_dir(d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rmdir_tree(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(d);
        }
        let mut dirs = vec![std::path::PathBuf::from(format!(
            "/sys/fs/cgroup/{}",
            self.0
        ))];
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            dirs.extend(rd.flatten().map(|e| e.path().join(&self.0)));
        }
        for d in dirs {
            rmdir_tree(&d);
        }
    }
}
