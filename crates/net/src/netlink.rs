//! A small rtnetlink client over a raw `NETLINK_ROUTE` socket: exactly the requests that
//! connecting a container needs (create a veth pair into a namespace, set links up, add
//! an address and a default route, delete a link), without spawning processes.
//!
//! Requests inside a container's network namespace run on a short-lived thread that first
//! joins the namespace (`setns`), so the netlink socket it opens belongs to that namespace;
//! the caller's threads never change namespace.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const IFF_UP: u32 = 1;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

/// A netlink message under construction (header filled in at send time).
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new() -> Msg {
        Msg { buf: vec![0; 16] }
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(ty, &d)
    }

    fn nest_start(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        at
    }

    fn nest_end(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

/// One rtnetlink socket in the namespace of the thread that opened it.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Netlink> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends `msg` as `ty` with `flags` (+ REQUEST, ACK) and waits for the kernel's ack.
    fn request(&mut self, ty: u16, flags: u16, mut msg: Msg) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let len = msg.buf.len() as u32;
        msg.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        msg.buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        msg.buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.buf[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        send(self.fd.as_raw_fd(), &msg.buf, MsgFlags::empty())?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut off = 0;
            while off + 16 <= n {
                let mlen = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]])
                    as usize;
                let mty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let mseq =
                    u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
                if mlen < 16 || off + mlen > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bad netlink reply",
                    ));
                }
                if mty == NLMSG_ERROR && mseq == self.seq && mlen >= 20 {
                    let code = i32::from_ne_bytes([
                        buf[off + 16],
                        buf[off + 17],
                        buf[off + 18],
                        buf[off + 19],
                    ]);
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                off += (mlen + 3) & !3;
            }
        }
    }

    /// Creates a veth pair: `host` (mtu, in bridge `master_index`, up) and its peer `peer`
    /// with `mac` directly inside the namespace open as `netns`.
    pub(crate) fn create_veth(
        &mut self,
        host: &str,
        master_index: u32,
        mtu: u32,
        peer: &str,
        mac: [u8; 6],
        netns: &File,
    ) -> io::Result<()> {
        let mut m = Msg::new();
        m.raw(&ifinfomsg(0, IFF_UP, IFF_UP));
        m.attr_str(IFLA_IFNAME, host)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_MASTER, &master_index.to_ne_bytes());
        let info = m.nest_start(IFLA_LINKINFO);
        m.attr_str(IFLA_INFO_KIND, "veth");
        let data = m.nest_start(IFLA_INFO_DATA);
        let p = m.nest_start(VETH_INFO_PEER);
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_ADDRESS, &mac)
            .attr(IFLA_NET_NS_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
        m.nest_end(p);
        m.nest_end(data);
        m.nest_end(info);
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, m)
    }

    /// Sets link `index` up.
    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut m = Msg::new();
        m.raw(&ifinfomsg(index as i32, IFF_UP, IFF_UP));
        self.request(RTM_NEWLINK, 0, m)
    }

    /// Puts link `index` into bridge `master_index` and sets it up.
    pub(crate) fn set_master_up(&mut self, index: u32, master_index: u32) -> io::Result<()> {
        let mut m = Msg::new();
        m.raw(&ifinfomsg(index as i32, IFF_UP, IFF_UP));
        m.attr(IFLA_MASTER, &master_index.to_ne_bytes());
        self.request(RTM_NEWLINK, 0, m)
    }

    /// Deletes link `name`.
    pub(crate) fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = Msg::new();
        m.raw(&ifinfomsg(0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        self.request(RTM_DELLINK, 0, m)
    }

    /// Adds `ip/prefix_len` (with broadcast) to link `index`.
    pub(crate) fn add_addr(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mask = if prefix_len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix_len))
        };
        let brd = Ipv4Addr::from(u32::from(ip) | !mask);
        let mut m = Msg::new();
        let mut h = [0u8; 8];
        h[0] = AF_INET;
        h[1] = prefix_len;
        h[4..8].copy_from_slice(&index.to_ne_bytes());
        m.raw(&h);
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets())
            .attr(IFA_BROADCAST, &brd.octets());
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, m)
    }

    /// Sets the default route via `gw` out of link `index` (replacing any).
    pub(crate) fn default_route(&mut self, index: u32, gw: Ipv4Addr) -> io::Result<()> {
        let mut m = Msg::new();
        m.raw(&[
            AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            0,
            RTN_UNICAST,
            0,
            0,
            0,
            0,
        ]);
        m.attr(RTA_GATEWAY, &gw.octets())
            .attr(RTA_OIF, &index.to_ne_bytes());
        self.request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, m)
    }
}

/// Runs `f` on a thread inside the network namespace open as `netns`.
pub(crate) fn in_netns<T: Send>(
    netns: &File,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(netns, CloneFlags::CLONE_NEWNET)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
    })
}

/// The index of link `name` in the calling thread's namespace.
pub(crate) fn index_of(name: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}
