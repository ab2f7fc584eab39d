//! Host port reservation for published ports.
//!
//! Published ports are forwarded by kernel NAT, so nothing would stop another process from
//! binding the same host port later and silently losing its traffic. The manager therefore
//! holds a bound (not listening) socket on every published host port for as long as the
//! mapping exists: binding it is also the check that the port is free. A bound, unlistened
//! TCP socket accepts nothing, and DNAT happens before local delivery, so it never sees
//! the traffic.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
use rand::Rng;

use crate::error::{NetError, Result};
use crate::Proto;

/// A bound socket that keeps a host port for us.
#[derive(Debug)]
pub(crate) struct Reservation {
    _fd: OwnedFd,
}

/// Binds `ip:port` for `proto`. `EADDRINUSE` becomes [`NetError::PortInUse`].
pub(crate) fn reserve(ip: Ipv4Addr, port: u16, proto: Proto) -> Result<Reservation> {
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None).map_err(|e| {
        NetError::Socket {
            what: format!("socket for port {port}/{}", proto.as_str()),
            source: e.into(),
        }
    })?;
    let addr = SockaddrIn::from(SocketAddrV4::new(ip, port));
    match bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Ok(Reservation { _fd: fd }),
        Err(Errno::EADDRINUSE) | Err(Errno::EACCES) => Err(NetError::PortInUse {
            host_ip: ip.to_string(),
            port,
            proto: proto.as_str().to_string(),
        }),
        Err(e) => Err(NetError::Socket {
            what: format!("bind {ip}:{port}/{}", proto.as_str()),
            source: e.into(),
        }),
    }
}

/// Finds and reserves a free port in `range` (inclusive), starting at a random place and
/// skipping ports for which `taken` says yes.
pub(crate) fn reserve_any(
    ip: Ipv4Addr,
    proto: Proto,
    range: (u16, u16),
    taken: impl Fn(u16) -> bool,
) -> Result<(u16, Reservation)> {
    let (lo, hi) = (range.0.min(range.1), range.0.max(range.1));
    let span = u32::from(hi - lo) + 1;
    let start = rand::rng().random_range(0..span);
    for i in 0..span {
        let port = lo + ((start + i) % span) as u16;
        if port == 0 || taken(port) {
            continue;
        }
        match reserve(ip, port, proto) {
            Ok(r) => return Ok((port, r)),
            Err(NetError::PortInUse { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(NetError::NoFreePort(format!("{ip}/{}", proto.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservation_blocks_and_releases() {
        let (port, r) =
            reserve_any(Ipv4Addr::LOCALHOST, Proto::Tcp, (40000, 60000), |_| false).unwrap();
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        assert!(matches!(
            reserve(Ipv4Addr::LOCALHOST, port, Proto::Tcp),
            Err(NetError::PortInUse { .. })
        ));
        drop(r);
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(matches!(
            reserve(Ipv4Addr::UNSPECIFIED, port, Proto::Tcp),
            Err(NetError::PortInUse { .. })
        ));
        drop(l);
    }
}
