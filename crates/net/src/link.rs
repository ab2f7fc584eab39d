//! Links: bridges on the host, veth pairs into container network namespaces.
//!
//! Bridges are rare and go through `ip -batch -`; the per-container path (veth pairs,
//! addresses, routes) speaks rtnetlink directly (see `netlink`), so connecting spawns no
//! process. The container end of a veth pair is created directly inside the target
//! namespace under its final name (`eth0`, `eth1`, ...), so no rename step is needed.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::cmd::run;
use crate::error::{NetError, Result};
use crate::netlink::{self, parse_mac, Netlink};

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
    let nl = |source| NetError::Netlink {
        op: format!("delete link {name}"),
        source,
    };
    let mut sock = Netlink::open().map_err(nl)?;
    match sock.delete_link(name) {
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        r => r.map_err(nl),
    }
}

fn ifindex(name: &str) -> Result<u32> {
    let path = Path::new("/sys/class/net").join(name).join("ifindex");
    std::fs::read_to_string(&path)
        .map_err(|e| NetError::io(&path, e))?
        .trim()
        .parse()
        .map_err(|_| NetError::io(&path, std::io::Error::other("not a number")))
}

/// Puts an existing host-side veth back into its bridge (after the bridge was re-created);
/// does nothing when the link is gone or already in the bridge.
pub(crate) fn reattach(veth: &str, bridge: &str) -> Result<()> {
    check_ifname(veth)?;
    let base = Path::new("/sys/class/net").join(veth);
    if !base.exists() {
        return Ok(());
    }
    let master = std::fs::read_link(base.join("master")).ok();
    if master.as_deref().and_then(|m| m.file_name()) == Some(std::ffi::OsStr::new(bridge)) {
        return Ok(());
    }
    let (idx, master) = (ifindex(veth)?, ifindex(bridge)?);
    let nl = |source| NetError::Netlink {
        op: format!("attach {veth} to bridge {bridge}"),
        source,
    };
    let mut sock = Netlink::open().map_err(nl)?;
    sock.set_master_up(idx, master).map_err(nl)?;
    let hairpin = base.join("brport/hairpin_mode");
    std::fs::write(&hairpin, "1").map_err(|e| NetError::io(hairpin, e))
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

/// Creates the veth pair: host end into the bridge and up (hairpin on), container end
/// inside the namespace with its address, up, plus `lo` up and the default route when
/// asked. On failure the host end (and with it the pair) is removed again.
pub(crate) fn create_veth(c: &VethConfig<'_>) -> Result<()> {
    check_ifname(c.host_name)?;
    check_ifname(c.ifname)?;
    let mac = parse_mac(c.mac)
        .ok_or_else(|| NetError::InvalidArgument(format!("invalid mac address {:?}", c.mac)))?;
    let netns = std::fs::File::open(c.netns).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            NetError::InvalidArgument(format!("netns path {} does not exist", c.netns.display()))
        }
        _ => NetError::io(c.netns, e),
    })?;
    let master = ifindex(c.bridge)?;
    let mut sock = Netlink::open().map_err(|source| NetError::Netlink {
        op: "open socket".into(),
        source,
    })?;
    sock.create_veth(c.host_name, master, c.mtu, c.ifname, mac, &netns)
        .map_err(|source| NetError::Netlink {
            op: format!("create veth {} in bridge {}", c.host_name, c.bridge),
            source,
        })?;
    let res = configure(c, &netns);
    if res.is_err() {
        let _ = sock.delete_link(c.host_name);
    }
    res
}

fn configure(c: &VethConfig<'_>, netns: &std::fs::File) -> Result<()> {
    // Hairpin: with br_netfilter loaded, a container reaching its own published port is
    // DNATed at bridge level and must be bridged back out of the port it came in on.
    let hairpin = format!("/sys/class/net/{}/brport/hairpin_mode", c.host_name);
    std::fs::write(&hairpin, "1").map_err(|e| NetError::io(hairpin, e))?;
    let step = std::sync::Mutex::new("open socket");
    let set = |s: &'static str| {
        if let Ok(mut g) = step.lock() {
            *g = s;
        }
    };
    netlink::in_netns(netns, || {
        let mut s = Netlink::open()?;
        set("set lo up");
        s.set_up(netlink::index_of("lo")?)?;
        set("find interface");
        let idx = netlink::index_of(c.ifname)?;
        set("add address");
        s.add_addr(idx, c.ip, c.prefix_len)?;
        set("set interface up");
        s.set_up(idx)?;
        if let Some(gw) = c.default_gw {
            set("add default route");
            s.default_route(idx, gw)?;
        }
        Ok(())
    })
    .map_err(|source| NetError::Netlink {
        op: format!(
            "{} ({} in {})",
            step.lock().map(|g| *g).unwrap_or("configure"),
            c.ifname,
            c.netns.display()
        ),
        source,
    })
}

/// Brings `lo` up inside a network namespace (what the `none` network gives a container).
pub(crate) fn loopback_up(netns: &Path) -> Result<()> {
    let f = std::fs::File::open(netns).map_err(|e| NetError::io(netns, e))?;
    netlink::in_netns(&f, || {
        let mut s = Netlink::open()?;
        s.set_up(netlink::index_of("lo")?)
    })
    .map_err(|source| NetError::Netlink {
        op: format!("set lo up in {}", netns.display()),
        source,
    })
}
