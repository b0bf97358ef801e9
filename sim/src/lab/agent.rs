//! The lab's sockets: listeners standing in for pods, observers recording
//! what reaches each namespace, and the client that opens a connection.
//!
//! Each runs on a thread of its own that first enters its namespace
//! (`setns`), so one process drives the whole lab. Listeners answer with
//! their pod's name; observers (raw sockets, which get a copy of every
//! locally delivered packet of their protocol before the transport layer
//! sees it) record the source address a pod's SYN or datagram arrived
//! with, even when the handshake never completes (a broken reply).

use super::netns::{enter, NetnsError};
use crate::wire::{
    Headers, ICMP_DEST_UNREACH, PROTO_SCTP, PROTO_TCP, SCTP_INIT, SCTP_INIT_ACK, TCP_ACK, TCP_SYN,
};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(50);

/// A packet that reached a listening pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub pod: String,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// One listening socket the lab opens for a pod or a node daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Whom it stands for (a pod, `kube-proxy`); it answers with this name.
    pub owner: String,
    pub proto: u8,
    pub port: u16,
    /// The addresses it is bound to; empty: every local address.
    pub addresses: Vec<Ipv4Addr>,
}

impl Listen {
    fn takes(&self, dst: Ipv4Addr, port: u16) -> bool {
        self.port == port && (self.addresses.is_empty() || self.addresses.contains(&dst))
    }
}

/// What one namespace listens on.
#[derive(Clone, Debug, Default)]
pub struct ListenSpec {
    pub netns: String,
    pub listens: Vec<Listen>,
    /// Local addresses (UDP answers from the address it was asked on).
    pub addresses: Vec<Ipv4Addr>,
}

/// Every listener and observer of the lab.
pub struct Agents {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Observation>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Agents {
    pub fn start(specs: &[ListenSpec]) -> Result<Agents, NetnsError> {
        let mut a = Agents {
            stop: Arc::new(AtomicBool::new(false)),
            log: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        for spec in specs.iter().filter(|s| !s.listens.is_empty()) {
            for proto in [
                crate::wire::PROTO_TCP,
                crate::wire::PROTO_UDP,
                crate::wire::PROTO_SCTP,
            ] {
                let listens: Vec<Listen> = spec
                    .listens
                    .iter()
                    .filter(|l| l.proto == proto)
                    .cloned()
                    .collect();
                if listens.is_empty() {
                    continue;
                }
                a.spawn(spec, proto, listens)?;
            }
        }
        // Every thread has reported its socket bound: ready.
        Ok(a)
    }

    fn spawn(
        &mut self,
        spec: &ListenSpec,
        proto: u8,
        listens: Vec<Listen>,
    ) -> Result<(), NetnsError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = spec.netns.clone();
        let stop = self.stop.clone();
        let log = self.log.clone();
        let l = listens.clone();
        self.threads.push(std::thread::spawn(move || {
            match enter(&netns).and_then(|_| raw_socket(&netns, proto)) {
                Ok(sock) => {
                    let _ = tx.send(Ok(()));
                    observe(sock, proto, &l, &stop, &log);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }));
        rx.recv().expect("observer reports")?;
        for l in listens {
            // Bound to its addresses, or to every address (TCP: the
            // wildcard; UDP: each address, so answers leave from the
            // address that was asked).
            let wildcard = vec![Ipv4Addr::UNSPECIFIED];
            let addrs = match (proto, l.addresses.is_empty()) {
                (_, false) => l.addresses.clone(),
                (crate::wire::PROTO_UDP, true) => spec.addresses.clone(),
                _ => wildcard,
            };
            for addr in addrs {
                let owner = l.owner.clone();
                let port = l.port;
                match proto {
                    crate::wire::PROTO_TCP => {
                        self.server(&spec.netns, move || tcp_server(&owner, addr, port))?
                    }
                    crate::wire::PROTO_UDP => {
                        self.server(&spec.netns, move || udp_server(&owner, addr, port))?
                    }
                    // SCTP: the raw observer answers INITs itself (this
                    // kernel may have no SCTP sockets).
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn server<F>(&mut self, netns: &str, body: F) -> Result<(), NetnsError>
    where
        F: FnOnce() -> std::io::Result<Loop> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let netns = netns.to_string();
        let stop = self.stop.clone();
        self.threads.push(std::thread::spawn(move || {
            let started = enter(&netns).and_then(|_| {
                body().map_err(|e| NetnsError::Command {
                    command: format!("listen in {netns}"),
                    message: e.to_string(),
                })
            });
            match started {
                Ok(mut run) => {
                    let _ = tx.send(Ok(()));
                    run(&stop);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }));
        rx.recv().expect("server reports")
    }

    /// Everything observed since the last call.
    pub fn take(&self) -> Vec<Observation> {
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn raw_socket(netns: &str, proto: u8) -> Result<Socket, NetnsError> {
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(proto))),
    )
    .and_then(|s| s.set_read_timeout(Some(POLL)).map(|_| s))
    .map_err(|e| NetnsError::Command {
        command: format!("raw socket in {netns}"),
        message: e.to_string(),
    })?;
    Ok(s)
}

/// Record the first packet of each connection to a listening port: a TCP
/// SYN (without ACK), any UDP datagram, an SCTP packet.
fn observe(
    sock: Socket,
    proto: u8,
    listens: &[Listen],
    stop: &AtomicBool,
    log: &Mutex<Vec<Observation>>,
) {
    let mut sock = sock;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::SeqCst) {
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(_) => continue,
        };
        let Some(o) = parse_first_packet(&buf[..n], proto) else {
            continue;
        };
        if let Some(l) = listens.iter().find(|l| l.takes(o.dst, o.dport)) {
            if proto == crate::wire::PROTO_SCTP {
                answer_sctp_init(&sock, &buf[..n], &o, &l.owner);
            }
            log.lock().expect("log").push(Observation {
                pod: l.owner.clone(),
                ..o
            });
        }
    }
}

/// The first packet of a connection, read with the project's own view of
/// packet bytes: a TCP SYN (without ACK), any UDP datagram, an SCTP INIT.
fn parse_first_packet(b: &[u8], proto: u8) -> Option<Observation> {
    let h = Headers::parse(b).filter(|h| h.proto == proto)?;
    let opens = match proto {
        PROTO_TCP => h.tcp_flags & TCP_SYN != 0 && h.tcp_flags & TCP_ACK == 0,
        PROTO_SCTP => sctp_chunk(b).is_some_and(|c| c.first() == Some(&SCTP_INIT)),
        _ => true,
    };
    opens.then(|| Observation {
        pod: String::new(),
        proto,
        src: h.src,
        sport: h.sport,
        dst: h.dst,
        dport: h.dport,
    })
}

/// The bytes of an SCTP packet from its common header on (IPv4 header
/// skipped).
fn sctp_common(b: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*b.first()? & 0x0f) * 4;
    b.get(ihl..).filter(|t| t.len() >= 12)
}

/// An SCTP packet's first chunk.
fn sctp_chunk(b: &[u8]) -> Option<&[u8]> {
    sctp_common(b)?.get(12..)
}

/// This kernel may have no SCTP stack, so the pod's side of the handshake
/// is played here: an INIT ACK to the INIT's sender, from the address the
/// INIT was sent to, its State Cookie naming the pod.
fn answer_sctp_init(sock: &Socket, packet: &[u8], o: &Observation, pod: &str) {
    // The INIT chunk's initiate tag (after type, flags and length).
    let Some(tag) = sctp_chunk(packet)
        .and_then(|c| c.get(4..8))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    else {
        return;
    };
    let sctp = crate::wire::sctp_handshake(
        o.dport,
        o.sport,
        tag,
        crate::wire::SCTP_INIT_ACK,
        0x6b70_0001,
        Some(pod.as_bytes()),
    );
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + sctp.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = crate::wire::PROTO_SCTP;
    ip[12..16].copy_from_slice(&o.dst.octets());
    ip[16..20].copy_from_slice(&o.src.octets());
    ip.extend_from_slice(&sctp);
    // With IP_HDRINCL the kernel fills in the header checksum.
    let _ = sock.set_header_included_v4(true);
    let _ = sock.send_to(&ip, &SocketAddrV4::new(o.src, 0).into());
}

/// A bound server's serving loop, run until the stop flag is set.
type Loop = Box<dyn FnMut(&AtomicBool) + Send>;

fn tcp_server(pod: &str, addr: Ipv4Addr, port: u16) -> std::io::Result<Loop> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddrV4::new(addr, port).into())?;
    s.listen(128)?;
    s.set_read_timeout(Some(POLL))?;
    let answer = format!("{pod}\n");
    Ok(Box::new(move |stop: &AtomicBool| {
        while !stop.load(Ordering::SeqCst) {
            if let Ok((mut conn, _)) = s.accept() {
                let _ = conn.set_write_timeout(Some(POLL));
                let _ = conn.write_all(answer.as_bytes());
            }
        }
    }))
}

fn udp_server(pod: &str, addr: Ipv4Addr, port: u16) -> std::io::Result<Loop> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddrV4::new(addr, port).into())?;
    s.set_read_timeout(Some(POLL))?;
    let answer = format!("{pod}\n");
    Ok(Box::new(move |stop: &AtomicBool| {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 512];
        while !stop.load(Ordering::SeqCst) {
            if let Ok((_, peer)) = s.recv_from(&mut buf) {
                let _ = s.send_to(answer.as_bytes(), &peer);
            }
        }
    }))
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientResult {
    /// The pod's answer came back on the connection.
    Answered(String),
    /// Connection refused (a TCP reset or an ICMP port unreachable).
    Refused,
    /// An ICMP host/network unreachable, or no route on the sender.
    Unreachable,
    /// Nothing came back in time.
    Timeout,
    /// The probe could not run (the message says why).
    Error(String),
}

/// One connection attempt from `netns` (source port `sport`) to
/// `dst:dport`, with every step bounded by `timeout`.
pub fn probe(
    netns: &str,
    proto: u8,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    timeout: Duration,
) -> ClientResult {
    let netns = netns.to_string();
    let handle = std::thread::spawn(move || {
        if let Err(e) = enter(&netns) {
            return ClientResult::Error(e.to_string());
        }
        let to: SockAddr = SocketAddrV4::new(dst, dport).into();
        let from: SockAddr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport).into();
        let r = match proto {
            crate::wire::PROTO_TCP => tcp_probe(&from, &to, timeout),
            crate::wire::PROTO_UDP => udp_probe(&from, &to, timeout),
            crate::wire::PROTO_SCTP => sctp_probe(sport, dst, dport, timeout),
            _ => return ClientResult::Error("only TCP, UDP and SCTP are probed".into()),
        };
        r.unwrap_or_else(classify)
    });
    handle
        .join()
        .unwrap_or_else(|_| ClientResult::Error("probe thread panicked".into()))
}

fn classify(e: std::io::Error) -> ClientResult {
    match e.kind() {
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset => ClientResult::Refused,
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ClientResult::Timeout,
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => ClientResult::Unreachable,
        _ => ClientResult::Error(e.to_string()),
    }
}

fn tcp_probe(from: &SockAddr, to: &SockAddr, timeout: Duration) -> std::io::Result<ClientResult> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(from)?;
    s.connect_timeout(to, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut answer = String::new();
    let mut s = s;
    s.read_to_string(&mut answer)?;
    Ok(ClientResult::Answered(answer.trim().to_string()))
}

fn udp_probe(from: &SockAddr, to: &SockAddr, timeout: Duration) -> std::io::Result<ClientResult> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind(from)?;
    // Connected: the kernel delivers only answers from `to` (a reply with
    // another source is a broken reply) and reports ICMP errors.
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    // A datagram netfilter drops on its way out (a REJECT in OUTPUT) fails
    // the send with EPERM; a REJECT's ICMP error still arrives, and the
    // next read reports it (connection refused), as it would to the
    // client. A DROP leaves the read to time out.
    if let Err(e) = s.send(b"kpsim-lab\n") {
        if e.kind() != ErrorKind::PermissionDenied {
            return Err(e);
        }
    }
    let mut buf = [0u8; 512];
    let mut s = s;
    let n = s.read(&mut buf)?;
    Ok(ClientResult::Answered(
        String::from_utf8_lossy(&buf[..n]).trim().to_string(),
    ))
}

/// The client side of an SCTP handshake over raw sockets: send an INIT,
/// wait for the INIT ACK (answered) or an ICMP error about it (refused or
/// unreachable).
fn sctp_probe(
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    timeout: Duration,
) -> std::io::Result<ClientResult> {
    let tag = 0x6b70_0000 | u32::from(sport);
    let sctp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(132)))?;
    let icmp = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let slice = Duration::from_millis(10);
    sctp.set_read_timeout(Some(slice))?;
    icmp.set_read_timeout(Some(slice))?;
    let init = crate::wire::sctp_handshake(sport, dport, 0, crate::wire::SCTP_INIT, tag, None);
    sctp.send_to(&init, &SocketAddrV4::new(dst, 0).into())?;
    let deadline = std::time::Instant::now() + timeout;
    let (mut sctp, mut icmp) = (sctp, icmp);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        if let Ok(n) = sctp.read(&mut buf) {
            if let Some(name) = init_ack_for(&buf[..n], dst, dport, sport, tag) {
                return Ok(ClientResult::Answered(name));
            }
        }
        if let Ok(n) = icmp.read(&mut buf) {
            if let Some(r) = icmp_error_for(&buf[..n], sport, dport) {
                return Ok(r);
            }
        }
    }
    Ok(ClientResult::Timeout)
}

/// The pod name in an INIT ACK answering our INIT, if `b` is one.
fn init_ack_for(b: &[u8], from: Ipv4Addr, sport: u16, dport: u16, tag: u32) -> Option<String> {
    let h = Headers::parse(b)?;
    let common = sctp_common(b)?;
    let vtag = u32::from_be_bytes(common.get(4..8)?.try_into().ok()?);
    let chunk = sctp_chunk(b)?;
    if h.proto != PROTO_SCTP
        || (h.src, h.sport, h.dport) != (from, sport, dport)
        || vtag != tag
        || chunk.first() != Some(&SCTP_INIT_ACK)
    {
        return None;
    }
    // The State Cookie parameter follows the chunk's 20 fixed bytes.
    let len = usize::from(u16::from_be_bytes([*chunk.get(22)?, *chunk.get(23)?]));
    let cookie = chunk.get(24..20 + len)?;
    Some(String::from_utf8_lossy(cookie).into_owned())
}

/// An ICMP destination unreachable about our SCTP packet.
fn icmp_error_for(b: &[u8], sport: u16, dport: u16) -> Option<ClientResult> {
    let h = Headers::parse(b)?;
    let q = h.inner?;
    if h.icmp_type != ICMP_DEST_UNREACH
        || q.proto != PROTO_SCTP
        || (q.sport, q.dport) != (sport, dport)
    {
        return None;
    }
    Some(match h.icmp_code {
        2 | 3 => ClientResult::Refused,
        _ => ClientResult::Unreachable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_is_a_first_packet_but_ack_is_not() {
        let syn = Headers::tcp(
            "10.0.0.1".parse().unwrap(),
            40000,
            "10.0.0.2".parse().unwrap(),
            80,
            crate::wire::TCP_SYN,
        );
        let o = parse_first_packet(&syn.to_bytes(), 6).unwrap();
        assert_eq!((o.src, o.sport, o.dport), (syn.src, 40000, 80));
        let ack = Headers::tcp(syn.src, 40000, syn.dst, 80, 0x10);
        assert_eq!(parse_first_packet(&ack.to_bytes(), 6), None);
        let udp = Headers::udp(syn.src, 5353, syn.dst, 53);
        assert!(parse_first_packet(&udp.to_bytes(), 17).is_some());
        assert!(parse_first_packet(&udp.to_bytes(), 6).is_none());
    }

    #[test]
    fn sctp_handshake_packets_are_recognised() {
        let (c, p) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let init = Headers::sctp(c, 40000, p, 9000).to_bytes();
        let o = parse_first_packet(&init, PROTO_SCTP).unwrap();
        assert_eq!((o.src, o.sport, o.dst, o.dport), (c, 40000, p, 9000));
        // An INIT ACK naming the pod in its cookie, behind an IPv4 header.
        let sctp = crate::wire::sctp_handshake(9000, 40000, 7, SCTP_INIT_ACK, 9, Some(b"sig-1"));
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, PROTO_SCTP, 0, 0];
        ip.extend_from_slice(&p.octets());
        ip.extend_from_slice(&c.octets());
        ip.extend_from_slice(&sctp);
        let total = (ip.len() as u16).to_be_bytes();
        ip[2..4].copy_from_slice(&total);
        assert_eq!(
            init_ack_for(&ip, p, 9000, 40000, 7).as_deref(),
            Some("sig-1")
        );
        assert_eq!(init_ack_for(&ip, p, 9000, 40000, 8), None, "wrong tag");
        assert_eq!(parse_first_packet(&ip, PROTO_SCTP), None, "not an INIT");
        let unreachable = Headers::icmp_error(
            p,
            c,
            ICMP_DEST_UNREACH,
            3,
            &Headers::sctp(c, 40000, p, 9000),
        );
        assert_eq!(
            icmp_error_for(&unreachable.to_bytes(), 40000, 9000),
            Some(ClientResult::Refused)
        );
        assert_eq!(icmp_error_for(&unreachable.to_bytes(), 40001, 9000), None);
    }
}
