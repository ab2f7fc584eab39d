//! End-to-end tests of container networking and volumes through a real `berth daemon`:
//! published ports served over the default bridge, read-only bind mounts, name resolution
//! on a user-defined network, `--network none`, named volumes, bad input, and the real
//! docker CLI. Each test runs its own daemon with its own bridge device, subnet and
//! iptables chain prefix; a Drop guard removes containers, networks, the bridges and the
//! chains even when a test fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

fn host_ok() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root");
        return false;
    }
    if !PathBuf::from("/bin/busybox").exists() {
        eprintln!("skipping: needs busybox");
        return false;
    }
    true
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn monitor_binary() -> PathBuf {
    let m = PathBuf::from(env!("CARGO_BIN_EXE_berth")).with_file_name("berth-monitor");
    if !m.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-q", "-p", "engine", "--bin", "berth-monitor"])
            .status()
            .expect("run cargo to build berth-monitor");
        assert!(st.success(), "building berth-monitor failed");
    }
    m
}

fn links() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string()
}

struct Daemon {
    dir: tempfile::TempDir,
    sock: PathBuf,
    bridge: String,
    prefix: String,
    subnet: String,
    child: Option<Child>,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("bnv")
            .tempdir_in("/tmp")
            .unwrap();
        let tag = format!("{:08x}", rand_u32());
        let sock = dir.path().join("d.sock");
        let mut d = Daemon {
            sock,
            bridge: format!("bnv{tag}"),
            prefix: format!("BNV{}", tag.to_uppercase()),
            subnet: testutil::free_subnet(),
            child: None,
            dir,
        };
        d.spawn();
        d
    }

    /// (Re)starts the daemon process and waits for `/_ping`.
    fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("daemon")
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--run-root")
            .arg(self.dir.path().join("run"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(["--runtime", env!("CARGO_BIN_EXE_berth-runtime")])
            .args(["--bridge", &self.bridge, "--bip", &self.subnet])
            .args(["--iptables-chain-prefix", &self.prefix])
            .env("BERTH_MONITOR", monitor_binary())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn berth daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(self.try_request("GET", "/_ping", None), Ok((200, _))) {
            assert!(
                Instant::now() < deadline,
                "daemon did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = UnixStream::connect(&self.sock)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: berth\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let Some(p) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Err(std::io::Error::other("no HTTP header"));
        };
        let head = String::from_utf8_lossy(&out[..p]).to_string();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut rest = out[p + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            rest = dechunk(&rest);
        }
        Ok((status, rest))
    }

    fn req(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let b = body.map(|b| b.to_string());
        let (st, out) = self
            .try_request(method, path, b.as_deref().map(str::as_bytes))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}; log: {}", self.log()));
        let v = serde_json::from_slice(&out)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out).to_string()));
        (st, v)
    }

    fn import_busybox(&self, name: &str) {
        let rootfs = self.dir.path().join("bb-rootfs");
        testutil::busybox_rootfs(&rootfs).unwrap();
        let out = Command::new("tar")
            .args(["--numeric-owner", "-C"])
            .arg(&rootfs)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(out.status.success());
        let (st, body) = self
            .try_request(
                "POST",
                &format!("/images/create?fromSrc=-&repo={name}&tag=latest"),
                Some(&out.stdout),
            )
            .unwrap();
        assert_eq!(st, 200, "import: {}", String::from_utf8_lossy(&body));
        let _ = std::fs::remove_dir_all(&rootfs);
    }

    /// Creates and starts a container; returns its id.
    fn run(&self, name: &str, body: Value) -> String {
        let (st, v) = self.req(
            "POST",
            &format!("/containers/create?name={name}"),
            Some(body),
        );
        assert_eq!(st, 201, "create {name}: {v}");
        let id = v["Id"].as_str().unwrap().to_string();
        let (st, v) = self.req("POST", &format!("/containers/{id}/start"), None);
        assert_eq!(st, 204, "start {name}: {v}; log: {}", self.log());
        id
    }

    /// Waits for a container's exit; returns its exit code.
    fn wait(&self, id: &str) -> i64 {
        let (st, v) = self.req("POST", &format!("/containers/{id}/wait"), None);
        assert_eq!(st, 200, "wait: {v}");
        v["StatusCode"].as_i64().unwrap()
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .expect("run docker CLI")
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(p) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..p]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = p + 2;
        let end = (start + size).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = &b[(end + 2).min(b.len())..];
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let mut bridges = vec![self.bridge.clone()];
        if self.child.is_some() {
            if let Ok((200, b)) = self.try_request("GET", "/containers/json?all=1", None) {
                for c in serde_json::from_slice::<Vec<Value>>(&b).unwrap_or_default() {
                    if let Some(id) = c["Id"].as_str() {
                        let _ =
                            self.try_request("DELETE", &format!("/containers/{id}?force=1"), None);
                    }
                }
            }
            if let Ok((200, b)) = self.try_request("GET", "/networks", None) {
                for n in serde_json::from_slice::<Vec<Value>>(&b).unwrap_or_default() {
                    if let Some(br) = n["Options"]["com.docker.network.bridge.name"].as_str() {
                        bridges.push(br.to_string());
                    }
                    if let (Some(id), Some("bridge")) = (n["Id"].as_str(), n["Driver"].as_str()) {
                        let _ = self.try_request("DELETE", &format!("/networks/{id}"), None);
                    }
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let rt_root = self.dir.path().join("run").join("runtime");
        for e in std::fs::read_dir(&rt_root).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            let _ = Command::new(env!("CARGO_BIN_EXE_berth-runtime"))
                .arg("--root")
                .arg(&rt_root)
                .args(["delete", "--force", &id])
                .output();
        }
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.path().display().to_string();
            for m in mounts.lines().rev() {
                if let Some(p) = m.split_whitespace().nth(1) {
                    if p.starts_with(&prefix) {
                        let _ = Command::new("umount").args(["-l", p]).output();
                    }
                }
            }
        }
        for b in bridges {
            let _ = Command::new("ip").args(["link", "del", &b]).output();
        }
        testutil::remove_chains(&self.prefix);
    }
}

fn http_get(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn http_get_retry(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(port) {
            Ok(s) if s.contains("200") => return s,
            r => assert!(Instant::now() < deadline, "GET on port {port}: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn published_port_serves_a_read_only_bind_mounted_site() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let site = d.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "hello from berth netvol\n").unwrap();
    let port = free_port();
    let bind = format!("{}:/var/www:ro", site.display());
    let id = d.run(
        "web",
        json!({
            "Image": "bb",
            "Cmd": ["httpd", "-f", "-p", "80", "-h", "/var/www"],
            "ExposedPorts": {"80/tcp": {}},
            "HostConfig": {
                "Binds": [bind],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": port.to_string()}]}
            }
        }),
    );
    let page = http_get_retry(port);
    assert!(page.contains("hello from berth netvol"), "{page}");

    let (_, v) = d.req("GET", &format!("/containers/{id}/json"), None);
    let ns = &v["NetworkSettings"];
    assert_eq!(
        ns["Ports"]["80/tcp"][0]["HostPort"],
        json!(port.to_string()),
        "{ns}"
    );
    let ip = ns["IPAddress"].as_str().unwrap();
    let subnet_pre = d.subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(subnet_pre), "{ip} not in {}", d.subnet);
    assert_eq!(ns["Networks"]["bridge"]["IPAddress"], json!(ip));
    let m = &v["Mounts"][0];
    assert_eq!(m["Destination"], json!("/var/www"));
    assert_eq!(m["RW"], json!(false));
    let (_, list) = d.req("GET", "/containers/json", None);
    assert_eq!(list[0]["Ports"][0]["PublicPort"], json!(port), "{list}");

    // The bind mount is read-only inside.
    let w = d.run(
        "writer",
        json!({"Image": "bb", "Cmd": ["sh", "-c", "echo x > /var/www/y"],
               "HostConfig": {"Binds": [bind]}}),
    );
    assert_ne!(d.wait(&w), 0);
    assert!(!site.join("y").exists());

    // Removing the container releases the port, the veth and the namespace.
    let (st, v) = d.req("DELETE", &format!("/containers/{id}?force=1"), None);
    assert_eq!(st, 204, "{v}");
    assert!(http_get(port).is_err(), "port {port} still answers");
    std::net::TcpListener::bind(("0.0.0.0", port)).expect("port released");
    assert!(!d.dir.path().join("run/netns").join(&id).exists());
    let (_, n) = d.req("GET", "/networks/bridge", None);
    assert_eq!(n["Containers"], json!({}), "{n}");
}

#[test]
fn user_network_resolves_names_and_none_has_only_lo() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let subnet = testutil::free_subnet();
    let (st, v) = d.req(
        "POST",
        "/networks/create",
        Some(json!({"Name": "appnet", "IPAM": {"Config": [{"Subnet": subnet}]}})),
    );
    assert_eq!(st, 201, "{v}");
    let net_id = v["Id"].as_str().unwrap().to_string();
    let (st, v) = d.req("GET", "/networks/appnet", None);
    assert_eq!(st, 200);
    assert_eq!(v["IPAM"]["Config"][0]["Subnet"], json!(subnet));
    assert_eq!(v["Id"], json!(net_id));
    let (_, v) = d.req(
        "GET",
        "/networks?filters=%7B%22type%22%3A%5B%22custom%22%5D%7D",
        None,
    );
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["Name"], json!("appnet"));

    let srv = d.run(
        "server",
        json!({"Image": "bb", "Cmd": ["sleep", "60"], "HostConfig": {"NetworkMode": "appnet"}}),
    );
    let c = d.run(
        "client",
        json!({"Image": "bb", "Cmd": ["ping", "-c1", "-W2", "server"],
               "HostConfig": {"NetworkMode": "appnet"}}),
    );
    assert_eq!(d.wait(&c), 0, "ping by name failed; log: {}", d.log());
    let (_, v) = d.req("GET", "/networks/appnet", None);
    assert!(v["Containers"][&srv]["IPv4Address"]
        .as_str()
        .unwrap()
        .ends_with("/24"));

    // In use: cannot be removed.
    let (st, _) = d.req("DELETE", "/networks/appnet", None);
    assert_eq!(st, 409);

    let none = d.run(
        "isolated",
        json!({"Image": "bb", "Cmd": ["sh", "-c", "[ \"$(ls /sys/class/net)\" = lo ]"],
               "HostConfig": {"NetworkMode": "none"}}),
    );
    assert_eq!(d.wait(&none), 0, "--network none has more than lo");

    let (st, _) = d.req("DELETE", &format!("/containers/{srv}?force=1"), None);
    assert_eq!(st, 204);
    let (st, _) = d.req("DELETE", &format!("/containers/{c}"), None);
    assert_eq!(st, 204);
    let (st, v) = d.req("DELETE", "/networks/appnet", None);
    assert_eq!(st, 204, "{v}");
    let (st, _) = d.req("GET", &format!("/networks/{net_id}"), None);
    assert_eq!(st, 404);
    assert!(!links().contains(&format!("br-{}", &net_id[..12])));
}

#[test]
fn named_volume_keeps_data_across_containers() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let a = d.run(
        "writer1",
        json!({"Image": "bb", "Cmd": ["sh", "-c", "echo kept > /data/f"],
               "HostConfig": {"Binds": ["keep:/data"]}}),
    );
    assert_eq!(d.wait(&a), 0);
    let (st, v) = d.req("GET", "/volumes/keep", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["Driver"], json!("local"));
    let mp = PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "kept\n");
    let b = d.run(
        "reader1",
        json!({"Image": "bb", "Cmd": ["grep", "-q", "kept", "/data/f"],
               "HostConfig": {"Mounts": [{"Type": "volume", "Source": "keep", "Target": "/data"}]}}),
    );
    assert_eq!(d.wait(&b), 0);
    let (_, v) = d.req("GET", &format!("/containers/{b}/json"), None);
    assert_eq!(v["Mounts"][0]["Type"], json!("volume"), "{v}");
    assert_eq!(v["Mounts"][0]["Name"], json!("keep"));

    // A new volume over /bin is populated from the image.
    let c = d.run(
        "populate1",
        json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {"Binds": ["etcvol:/bin"]}}),
    );
    assert_eq!(d.wait(&c), 0);
    let (_, v) = d.req("GET", "/volumes/etcvol", None);
    let mp = PathBuf::from(v["Mountpoint"].as_str().unwrap());
    assert!(mp.join("busybox").exists());

    let (st, v) = d.req("DELETE", "/volumes/keep", None);
    assert_eq!(st, 409, "{v}");
    for id in [&a, &b, &c] {
        let (st, _) = d.req("DELETE", &format!("/containers/{id}"), None);
        assert_eq!(st, 204);
    }
    let (st, _) = d.req("DELETE", "/volumes/keep", None);
    assert_eq!(st, 204);
    let (st, _) = d.req("GET", "/volumes/keep", None);
    assert_eq!(st, 404);
    let (st, v) = d.req("GET", "/volumes", None);
    assert_eq!(st, 200);
    assert_eq!(v["Volumes"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn bad_network_and_volume_input_is_rejected_cleanly() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    // Overlaps the default bridge's subnet.
    let (st, v) = d.req(
        "POST",
        "/networks/create",
        Some(json!({"Name": "dup", "IPAM": {"Config": [{"Subnet": d.subnet}]}})),
    );
    assert_eq!(st, 409, "{v}");
    let (st, _) = d.req("GET", "/networks/dup", None);
    assert_eq!(st, 404);

    let (st, v) = d.req(
        "POST",
        "/containers/create?name=m",
        Some(json!({"Image": "bb", "Cmd": ["true"],
            "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/nonexistent-berth-x", "Target": "/x"}]}})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("invalid mount config for type \"bind\": bind source path does not exist: /nonexistent-berth-x"));

    let (st, v) = d.req(
        "POST",
        "/containers/create?name=p",
        Some(json!({"Image": "bb", "Cmd": ["true"],
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}})),
    );
    assert_eq!(st, 400, "{v}");

    for name in ["../x", "a/b"] {
        let (st, v) = d.req("POST", "/volumes/create", Some(json!({"Name": name})));
        assert_eq!(st, 400, "{name}: {v}");
    }
    let (st, v) = d.req(
        "POST",
        "/containers/create?name=v",
        Some(json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {"Binds": ["a..b/c:/x"]}})),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = d.req(
        "POST",
        "/containers/create?name=n",
        Some(json!({"Image": "bb", "Cmd": ["true"], "HostConfig": {"NetworkMode": "nosuchnet"}})),
    );
    assert_eq!(st, 400, "{v}");

    let (_, list) = d.req("GET", "/containers/json?all=1", None);
    assert_eq!(list, json!([]));
    let (_, vols) = d.req("GET", "/volumes", None);
    assert_eq!(vols["Volumes"], json!([]));
    assert!(std::fs::read_dir(d.dir.path().join("root/volumes"))
        .map(|r| r.count() == 0)
        .unwrap_or(true));
    // Nothing of ours is left: no veth in our bridge, no extra network or bridge.
    let ports = Command::new("ip")
        .args(["-o", "link", "show", "master", &d.bridge])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ports.stdout).trim().is_empty(),
        "veths left in {}: {ports:?}",
        d.bridge
    );
    let (_, nets) = d.req("GET", "/networks", None);
    assert_eq!(nets.as_array().unwrap().len(), 3, "{nets}");
}

#[test]
fn docker_cli_runs_a_published_server_from_a_volume() {
    if !host_ok() {
        return;
    }
    if !PathBuf::from("/usr/local/bin/docker").exists() {
        eprintln!("skipping: docker CLI not installed");
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let out = d.docker(&["volume", "create", "site"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.docker(&[
        "run",
        "--rm",
        "-v",
        "site:/var/www",
        "bb",
        "sh",
        "-c",
        "echo served by docker cli > /var/www/index.html",
    ]);
    assert!(out.status.success(), "{out:?}; log: {}", d.log());
    let subnet = testutil::free_subnet();
    let out = d.docker(&["network", "create", "--subnet", &subnet, "clinet"]);
    assert!(out.status.success(), "{out:?}");
    let port = free_port();
    let out = d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "clinet",
        "-p",
        &format!("{port}:80"),
        "-v",
        "site:/var/www:ro",
        "bb",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/var/www",
    ]);
    assert!(out.status.success(), "{out:?}; log: {}", d.log());
    let page = http_get_retry(port);
    assert!(page.contains("served by docker cli"), "{page}");
    let out = d.docker(&["port", "web"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&port.to_string()),
        "{out:?}"
    );
    let out = d.docker(&["rm", "-f", "web"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.docker(&["network", "rm", "clinet"]);
    assert!(out.status.success(), "{out:?}");
    let out = d.docker(&["volume", "rm", "site"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn anonymous_volumes_are_removed_with_the_container_only_on_request() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let mk = |name: &str| {
        let id = d.run(
            name,
            json!({"Image": "bb", "Cmd": ["sh", "-c", "echo a > /cache/f"],
                   "Volumes": {"/cache": {}},
                   "HostConfig": {"Mounts": [{"Type": "volume", "Target": "/scratch"}]}}),
        );
        assert_eq!(d.wait(&id), 0, "log: {}", d.log());
        let (_, v) = d.req("GET", &format!("/containers/{id}/json"), None);
        let names: Vec<String> = v["Mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["Type"], json!("volume"), "{m}");
                m["Name"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(names.len(), 2, "{v}");
        (id, names)
    };
    let (keep_id, kept) = mk("keeper");
    let (gone_id, gone) = mk("dropper");
    let (st, _) = d.req("DELETE", &format!("/containers/{keep_id}"), None);
    assert_eq!(st, 204);
    let (st, _) = d.req("DELETE", &format!("/containers/{gone_id}?v=1"), None);
    assert_eq!(st, 204);
    for n in &kept {
        let (st, _) = d.req("GET", &format!("/volumes/{n}"), None);
        assert_eq!(st, 200, "anonymous volume {n} of `rm` without -v is gone");
    }
    for n in &gone {
        let (st, _) = d.req("GET", &format!("/volumes/{n}"), None);
        assert_eq!(st, 404, "anonymous volume {n} of `rm -v` is still there");
    }
    // Prune without `all` removes the unused anonymous ones.
    let (st, v) = d.req("POST", "/volumes/prune", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["VolumesDeleted"].as_array().unwrap().len(), 2, "{v}");
}

#[test]
fn published_ports_survive_a_daemon_restart_and_are_released_on_stop() {
    if !host_ok() {
        return;
    }
    let mut d = Daemon::start();
    d.import_busybox("bb");
    let site = d.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "still here\n").unwrap();
    let bind = format!("{}:/var/www:ro", site.display());
    let web = |d: &Daemon, name: &str, port: u16| {
        d.run(
            name,
            json!({"Image": "bb", "Cmd": ["httpd", "-f", "-p", "80", "-h", "/var/www"],
                   "HostConfig": {"Binds": [bind],
                     "PortBindings": {"80/tcp": [{"HostPort": port.to_string()}]}}}),
        )
    };
    let p1 = free_port();
    let id1 = web(&d, "web1", p1);
    assert!(http_get_retry(p1).contains("still here"));
    let ip1 = d.req("GET", &format!("/containers/{id1}/json"), None).1["NetworkSettings"]
        ["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();

    d.kill9();
    d.spawn();
    assert!(http_get_retry(p1).contains("still here"));
    let (_, v) = d.req("GET", &format!("/containers/{id1}/json"), None);
    assert_eq!(v["NetworkSettings"]["IPAddress"], json!(ip1), "{v}");
    assert_eq!(
        v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        json!(p1.to_string())
    );
    // The same host port cannot be taken twice; a new container gets a new address.
    let (st, v) = d.req(
        "POST",
        "/containers/create?name=clash",
        Some(json!({"Image": "bb", "Cmd": ["sleep", "5"],
            "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": p1.to_string()}]}}})),
    );
    assert_eq!(st, 201, "{v}");
    let clash = v["Id"].as_str().unwrap().to_string();
    let (st, v) = d.req("POST", &format!("/containers/{clash}/start"), None);
    assert!(st >= 400, "second container took port {p1}: {v}");
    let p2 = free_port();
    let id2 = web(&d, "web2", p2);
    assert!(http_get_retry(p2).contains("still here"));
    let (_, v) = d.req("GET", &format!("/containers/{id2}/json"), None);
    assert_ne!(v["NetworkSettings"]["IPAddress"], json!(ip1));

    let (st, _) = d.req("POST", &format!("/containers/{id1}/stop?t=1"), None);
    assert_eq!(st, 204);
    assert!(http_get(p1).is_err(), "port {p1} still served after stop");
    assert!(!d.dir.path().join("run/netns").join(&id1).exists());
    assert!(http_get(p2).unwrap().contains("still here"));
}

#[test]
fn container_and_host_modes_and_connect_to_a_running_container() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let a = d.run("holder", json!({"Image": "bb", "Cmd": ["sleep", "60"]}));
    let ip = d.req("GET", &format!("/containers/{a}/json"), None).1["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    // Joins holder's namespace: sees its eth0 and address.
    let b = d.run(
        "joiner",
        json!({"Image": "bb", "Cmd": ["sh", "-c", format!("ip -4 addr show eth0 | grep -q 'inet {ip}/'")],
               "HostConfig": {"NetworkMode": "container:holder"}}),
    );
    assert_eq!(
        d.wait(&b),
        0,
        "container: mode does not share holder's network"
    );
    // Host mode sees the host's interfaces, the daemon's bridge among them.
    let h = d.run(
        "hostnet",
        json!({"Image": "bb", "Cmd": ["test", "-e", format!("/sys/class/net/{}", d.bridge)],
               "HostConfig": {"NetworkMode": "host"}}),
    );
    assert_eq!(d.wait(&h), 0, "host mode does not see {}", d.bridge);

    // A running container joins a user network and leaves it again.
    let subnet = testutil::free_subnet();
    let (st, v) = d.req(
        "POST",
        "/networks/create",
        Some(json!({"Name": "extra", "IPAM": {"Config": [{"Subnet": subnet}]}})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = d.req(
        "POST",
        "/networks/extra/connect",
        Some(json!({"Container": "holder", "EndpointConfig": {"Aliases": ["h1"]}})),
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = d.req("GET", &format!("/containers/{a}/json"), None);
    let nets = v["NetworkSettings"]["Networks"].as_object().unwrap();
    assert!(
        nets.contains_key("bridge") && nets.contains_key("extra"),
        "{v}"
    );
    let (st, v) = d.req(
        "POST",
        "/networks/extra/connect",
        Some(json!({"Container": "holder"})),
    );
    assert_eq!(st, 409, "connected twice: {v}");
    let (st, v) = d.req(
        "POST",
        "/networks/extra/disconnect",
        Some(json!({"Container": "holder"})),
    );
    assert_eq!(st, 200, "{v}");
    let (_, v) = d.req("GET", "/networks/extra", None);
    assert_eq!(v["Containers"], json!({}));
    // A stopped container connected to a network joins it when it starts.
    let (st, v) = d.req(
        "POST",
        "/containers/create?name=late",
        Some(json!({"Image": "bb", "Cmd": ["sleep", "60"]})),
    );
    assert_eq!(st, 201, "{v}");
    let late = v["Id"].as_str().unwrap().to_string();
    let (st, v) = d.req(
        "POST",
        "/networks/extra/connect",
        Some(json!({"Container": "late"})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = d.req("POST", &format!("/containers/{late}/start"), None);
    assert_eq!(st, 204, "{v}");
    let (_, v) = d.req("GET", "/networks/extra", None);
    assert!(v["Containers"].get(&late).is_some(), "{v}");
    let (_, v) = d.req("GET", "/networks/bridge", None);
    assert!(v["Containers"].get(&late).is_some(), "{v}");
    let (st, _) = d.req("DELETE", &format!("/containers/{late}?force=1"), None);
    assert_eq!(st, 204);
    let (st, v) = d.req(
        "POST",
        "/networks/nosuch/connect",
        Some(json!({"Container": "holder"})),
    );
    assert_eq!(st, 404, "{v}");
    let (st, v) = d.req("POST", "/networks/prune", None);
    assert_eq!(st, 200);
    assert_eq!(v["NetworksDeleted"], json!(["extra"]), "{v}");
}

#[test]
fn publish_all_maps_exposed_ports_and_tmpfs_and_bind_propagation_apply() {
    if !host_ok() {
        return;
    }
    let d = Daemon::start();
    d.import_busybox("bb");
    let site = d.dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "all ports\n").unwrap();
    let id = d.run(
        "pall",
        json!({"Image": "bb",
               "Cmd": ["sh", "-c", "grep -q ' /scratch tmpfs ' /proc/mounts && exec httpd -f -p 80 -h /var/www"],
               "ExposedPorts": {"80/tcp": {}},
               "HostConfig": {"PublishAllPorts": true,
                 "Tmpfs": {"/scratch": "size=1m"},
                 "Mounts": [{"Type": "bind", "Source": site.display().to_string(), "Target": "/var/www",
                             "ReadOnly": true, "BindOptions": {"Propagation": "rslave"}}]}}),
    );
    let (_, v) = d.req("GET", &format!("/containers/{id}/json"), None);
    let port: u16 = v["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(port > 0);
    assert!(http_get_retry(port).contains("all ports"));
    let (st, v) = d.req(
        "POST",
        "/containers/create?name=badprop",
        Some(json!({"Image": "bb", "Cmd": ["true"],
            "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/x",
                                       "BindOptions": {"Propagation": "sideways"}}]}})),
    );
    assert_eq!(st, 400, "{v}");
}
