//! Embedded DNS server of user-defined networks.
//!
//! One server per user-defined bridge network, listening on the network's gateway address,
//! port 53, UDP and TCP, each on a thread of its own (independent of any async runtime).
//! It answers A queries for the names of the network's containers (container name, short
//! id, aliases) from a record table the manager replaces whenever an endpoint comes or
//! goes; other query types for those names get an empty NOERROR answer. Every other name
//! is forwarded verbatim to the upstream resolvers (the host's, from `/etc/resolv.conf`,
//! with a 2 s timeout per upstream); without upstreams the answer is NXDOMAIN.
//!
//! Message handling is deliberately small: one question per query, no compression in the
//! question, answers point back at the question's name.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{NetError, Result};

/// Names (lower case, no trailing dot) to addresses.
pub(crate) type Records = HashMap<String, Vec<Ipv4Addr>>;

const TYPE_A: u16 = 1;
const TYPE_ANY: u16 = 255;
const RCODE_SERVFAIL: u16 = 2;
const RCODE_NXDOMAIN: u16 = 3;
const RCODE_NOTIMP: u16 = 4;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The first question of a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Question {
    /// Lower-cased name without the trailing dot.
    pub name: String,
    /// Query type.
    pub qtype: u16,
    /// Offset just past the question.
    pub end: usize,
}

/// Parses the header and first question of a DNS query; `None` for anything malformed.
pub(crate) fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if flags & 0x8000 != 0 || qdcount == 0 {
        return None;
    }
    let mut pos = 12;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *msg.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        let label = msg.get(pos..pos + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += len;
        if pos > 255 + 12 {
            return None;
        }
    }
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    let end = pos + 4;
    if msg.len() < end {
        return None;
    }
    Some(Question {
        name: labels.join("."),
        qtype,
        end,
    })
}

/// Builds a response to `query` (whose question is `q`) with `rcode` and A answers.
pub(crate) fn build_response(
    query: &[u8],
    q: &Question,
    rcode: u16,
    answers: &[Ipv4Addr],
) -> Vec<u8> {
    let qflags = u16::from_be_bytes([query[2], query[3]]);
    // QR, opcode copied, AA, RD copied, RA, rcode.
    let flags = 0x8000 | (qflags & 0x7800) | 0x0400 | (qflags & 0x0100) | 0x0080 | (rcode & 0xF);
    let mut out = Vec::with_capacity(q.end + answers.len() * 16);
    out.extend_from_slice(&query[0..2]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&query[12..q.end]);
    for ip in answers {
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&600u32.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&ip.octets());
    }
    out
}

/// What to do with a query.
enum Action {
    Reply(Vec<u8>),
    Forward,
    Drop,
}

fn decide(msg: &[u8], records: &RwLock<Records>, has_upstreams: bool) -> Action {
    let Some(q) = parse_query(msg) else {
        return Action::Drop;
    };
    let opcode = (u16::from_be_bytes([msg[2], msg[3]]) >> 11) & 0xF;
    if opcode != 0 {
        return Action::Reply(build_response(msg, &q, RCODE_NOTIMP, &[]));
    }
    let found = records.read().ok().and_then(|r| r.get(&q.name).cloned());
    match found {
        Some(ips) => {
            let answers = if q.qtype == TYPE_A || q.qtype == TYPE_ANY {
                ips
            } else {
                Vec::new()
            };
            Action::Reply(build_response(msg, &q, 0, &answers))
        }
        None if has_upstreams => Action::Forward,
        None => Action::Reply(build_response(msg, &q, RCODE_NXDOMAIN, &[])),
    }
}

/// Sends `msg` to each upstream in turn (UDP) and returns the first answer.
fn forward_udp(msg: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = UdpSocket::bind(bind) else {
            continue;
        };
        if s.set_read_timeout(Some(UPSTREAM_TIMEOUT)).is_err() || s.connect(up).is_err() {
            continue;
        }
        if s.send(msg).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(n) = s.recv(&mut buf) {
            if n >= 2 && buf[0..2] == msg[0..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

fn servfail(msg: &[u8]) -> Option<Vec<u8>> {
    parse_query(msg).map(|q| build_response(msg, &q, RCODE_SERVFAIL, &[]))
}

/// A running server; stopping it (or dropping it) closes its sockets and joins its threads.
pub(crate) struct DnsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    records: Arc<RwLock<Records>>,
}

impl DnsServer {
    /// Binds `addr` (UDP and TCP) and starts serving.
    pub(crate) fn start(addr: SocketAddr, upstreams: Vec<SocketAddr>) -> Result<Self> {
        let udp = UdpSocket::bind(addr).map_err(|source| NetError::Socket {
            what: format!("dns bind udp {addr}"),
            source,
        })?;
        let tcp = TcpListener::bind(addr).map_err(|source| NetError::Socket {
            what: format!("dns bind tcp {addr}"),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(RwLock::new(Records::new()));
        let upstreams = Arc::new(upstreams);
        let mut threads = Vec::new();
        {
            let (stop, records, upstreams) = (stop.clone(), records.clone(), upstreams.clone());
            threads.push(std::thread::spawn(move || {
                serve_udp(udp, &stop, &records, &upstreams)
            }));
        }
        {
            let (stop, records, upstreams) = (stop.clone(), records.clone(), upstreams.clone());
            threads.push(std::thread::spawn(move || {
                serve_tcp(tcp, &stop, &records, &upstreams)
            }));
        }
        Ok(DnsServer {
            addr,
            stop,
            threads,
            records,
        })
    }

    /// Replaces the record table.
    pub(crate) fn set_records(&self, records: Records) {
        if let Ok(mut r) = self.records.write() {
            *r = records;
        }
    }

    /// Stops the threads and closes the sockets.
    pub(crate) fn stop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking receivers.
        if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
            let _ = s.send_to(&[], self.addr);
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_udp(
    sock: UdpSocket,
    stop: &AtomicBool,
    records: &Arc<RwLock<Records>>,
    up: &Arc<Vec<SocketAddr>>,
) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let msg = &buf[..n];
        match decide(msg, records, !up.is_empty()) {
            Action::Reply(r) => {
                let _ = sock.send_to(&r, peer);
            }
            Action::Forward => {
                let (msg, up) = (msg.to_vec(), up.clone());
                let Ok(reply_sock) = sock.try_clone() else {
                    continue;
                };
                std::thread::spawn(move || {
                    if let Some(r) = forward_udp(&msg, &up).or_else(|| servfail(&msg)) {
                        let _ = reply_sock.send_to(&r, peer);
                    }
                });
            }
            Action::Drop => {}
        }
    }
}

fn serve_tcp(
    l: TcpListener,
    stop: &AtomicBool,
    records: &Arc<RwLock<Records>>,
    up: &Arc<Vec<SocketAddr>>,
) {
    for conn in l.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(mut c) = conn else { continue };
        let (records, up) = (records.clone(), up.clone());
        std::thread::spawn(move || {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            loop {
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    return;
                }
                let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut msg).is_err() {
                    return;
                }
                let reply = match decide(&msg, &records, !up.is_empty()) {
                    Action::Reply(r) => Some(r),
                    Action::Forward => forward_udp(&msg, &up).or_else(|| servfail(&msg)),
                    Action::Drop => None,
                };
                let Some(r) = reply else { return };
                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&r);
                if c.write_all(&out).is_err() {
                    return;
                }
            }
        });
    }
}

/// Builds an A query for `name` with id `id` (used by tests and benchmarks).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// The response code and A answers of a DNS response (used by tests and benchmarks);
/// `None` when the message is not a response.
pub fn parse_response(msg: &[u8]) -> Option<(u16, Vec<Ipv4Addr>)> {
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let rcode = u16::from(msg[3] & 0x0F);
    let ancount = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    // Skip the question.
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            pos += 2;
            break;
        }
        pos += 1 + len;
    }
    pos += 4;
    let mut ips = Vec::new();
    for _ in 0..ancount {
        // Name: pointer or labels.
        loop {
            let len = *msg.get(pos)? as usize;
            if len == 0 {
                pos += 1;
                break;
            }
            if len & 0xC0 == 0xC0 {
                pos += 2;
                break;
            }
            pos += 1 + len;
        }
        let rtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        let rdlen = u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]) as usize;
        let data = msg.get(pos + 10..pos + 10 + rdlen)?;
        if rtype == TYPE_A && rdlen == 4 {
            ips.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += 10 + rdlen;
    }
    Some((rcode, ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_known_names_and_nxdomain() {
        let mut r = Records::new();
        r.insert("web".into(), vec![Ipv4Addr::new(10, 0, 0, 2)]);
        let records = RwLock::new(r);
        let q = build_query(7, "WEB.", TYPE_A);
        let Action::Reply(resp) = decide(&q, &records, false) else {
            panic!("expected reply")
        };
        assert_eq!(&resp[0..2], &[0, 7]);
        assert_eq!(
            parse_response(&resp),
            Some((0, vec![Ipv4Addr::new(10, 0, 0, 2)]))
        );
        let q6 = build_query(8, "web", 28);
        let Action::Reply(resp) = decide(&q6, &records, false) else {
            panic!("expected reply")
        };
        assert_eq!(parse_response(&resp), Some((0, vec![])));
        let qx = build_query(9, "nope.example", TYPE_A);
        let Action::Reply(resp) = decide(&qx, &records, false) else {
            panic!("expected reply")
        };
        assert_eq!(parse_response(&resp), Some((RCODE_NXDOMAIN, vec![])));
        assert!(matches!(decide(&qx, &records, true), Action::Forward));
        assert!(matches!(decide(&[1, 2, 3], &records, true), Action::Drop));
    }
}
