//! Links: bridges on the host, veth pairs into container network namespaces.
//!
//! Everything goes through `ip -batch -` (one process for several changes): the host side
//! directly, the container side under `nsenter --net=<netns path>`. The container end of
//! a veth pair is created directly inside the target namespace under its final name
//! (`eth0`, `eth1`, ...), so no rename step is needed.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::cmd::{is_missing, run};
use crate::error::{NetError, Result};

/// Whether a network device of this name exists in the host namespace.
pub(crate) fn exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(NetError::InvalidArgument(format!(
            "invalid interface name {name:?} (1-15 characters of [A-Za-z0-9._-])"
        )));
    }
    Ok(())
}

/// Creates (or completes) bridge `name` with address `gateway/prefix_len`, brings it up
/// and enables `route_localnet` on it (needed to DNAT 127.0.0.1 to containers).
pub(crate) fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix_len: u8) -> Result<()> {
    check_ifname(name)?;
    let mut batch = String::new();
    if !exists(name) {
        batch.push_str(&format!("link add {name} type bridge\n"));
    }
    batch.push_str(&format!(
        "addr replace {gateway}/{prefix_len} dev {name}\nlink set {name} up\n"
    ));
    run("ip", &["-batch", "-"], Some(&batch))?;
    set_sysctl(&format!("net/ipv4/conf/{name}/route_localnet"), "1")?;
    Ok(())
}

/// Deletes a link (bridge or veth); a missing link is not an error.
pub(crate) fn delete(name: &str) -> Result<()> {
    check_ifname(name)?;
    match run("ip", &["link", "del", name], None) {
        Err(e) if is_missing(&e) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// Writes a sysctl under /proc/sys (`path` like `net/ipv4/ip_forward`).
pub(crate) fn set_sysctl(path: &str, value: &str) -> Result<()> {
    let p = Path::new("/proc/sys").join(path);
    if std::fs::read_to_string(&p)
        .map(|v| v.trim() == value)
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(&p, value).map_err(|e| NetError::io(p, e))
}

/// What to configure inside the container's namespace.
pub(crate) struct VethConfig<'a> {
    pub host_name: &'a str,
    pub bridge: &'a str,
    pub ifname: &'a str,
    pub mac: &'a str,
    pub netns: &'a Path,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub default_gw: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// Creates the veth pair: host end into the bridge and up, container end inside the
/// namespace with its address, up, plus `lo` up and the default route when asked.
/// On failure the host end (and with it the pair) is removed again.
pub(crate) fn create_veth(c: &VethConfig<'_>) -> Result<()> {
    check_ifname(c.host_name)?;
    check_ifname(c.ifname)?;
    let netns = c.netns.to_str().ok_or_else(|| {
        NetError::InvalidArgument(format!("netns path {} is not utf-8", c.netns.display()))
    })?;
    if netns.contains(char::is_whitespace) {
        return Err(NetError::InvalidArgument(format!(
            "netns path {netns:?} contains whitespace"
        )));
    }
    if !c.netns.exists() {
        return Err(NetError::InvalidArgument(format!(
            "netns path {netns} does not exist"
        )));
    }
    let host = format!(
        "link add {h} mtu {mtu} master {b} up type veth peer name {i} mtu {mtu} address {m} netns {netns}\n",
        h = c.host_name,
        b = c.bridge,
        i = c.ifname,
        m = c.mac,
        mtu = c.mtu,
    );
    run("ip", &["-batch", "-"], Some(&host))?;
    // Hairpin: with br_netfilter loaded, a container reaching its own published port is
    // DNATed at bridge level and must be bridged back out of the port it came in on.
    let hairpin = format!("/sys/class/net/{}/brport/hairpin_mode", c.host_name);
    if let Err(e) = std::fs::write(&hairpin, "1") {
        let _ = delete(c.host_name);
        return Err(NetError::io(hairpin, e));
    }
    let mut inner = format!(
        "link set lo up\naddr add {ip}/{len} dev {i}\nlink set {i} up\n",
        ip = c.ip,
        len = c.prefix_len,
        i = c.ifname
    );
    if let Some(gw) = c.default_gw {
        inner.push_str(&format!(
            "route replace default via {gw} dev {}\n",
            c.ifname
        ));
    }
    let netarg = format!("--net={netns}");
    if let Err(e) = run("nsenter", &[&netarg, "ip", "-batch", "-"], Some(&inner)) {
        let _ = delete(c.host_name);
        return Err(e);
    }
    Ok(())
}

/// Brings `lo` up inside a network namespace (what the `none` network gives a container).
pub(crate) fn loopback_up(netns: &Path) -> Result<()> {
    let netarg = format!("--net={}", netns.display());
    run("nsenter", &[&netarg, "ip", "link", "set", "lo", "up"], None).map(|_| ())
}
