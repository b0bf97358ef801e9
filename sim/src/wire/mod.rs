//! Packets as real bytes, and the header fields the rest of the simulator
//! reasons about.
//!
//! The engine decides on [`Headers`] (addresses, protocol, ports, TCP flags,
//! ICMP type): the fields netfilter, conntrack and routing look at. Every hop
//! of a trace is also materialised as real IPv4 bytes with valid checksums
//! ([`Headers::to_bytes`], built with `pnet_packet`), and VXLAN hops carry the
//! inner frame inside a real outer IPv4/UDP/VXLAN header
//! ([`vxlan_encapsulate`]). Parsing bytes back ([`Headers::parse`]) is the
//! inverse, so tests can prove that NAT rewrites give consistent packets.

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::tcp::{self, MutableTcpPacket, TcpPacket};
use pnet_packet::udp::{self, MutableUdpPacket, UdpPacket};
use pnet_packet::Packet;
use std::fmt;
use std::net::Ipv4Addr;

/// IP protocol numbers the simulator builds packets for.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// TCP flag bits as they sit in the header.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// ICMP types the simulator uses.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// Destination-unreachable code of `--reject-with icmp-port-unreachable`.
pub const ICMP_PORT_UNREACH: u8 = 3;

/// Whether an ICMP type is an error that quotes the offending datagram
/// (the kernel's `icmp_is_err`: destination unreachable, source quench,
/// redirect, time exceeded, parameter problem).
pub fn icmp_is_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACH
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROB
    )
}

/// The datagram an ICMP error quotes: its IP header and the first 8 bytes
/// of its payload (RFC 792), i.e. addresses, protocol and ports (or the
/// ICMP type, code and echo identifier). TCP flags lie beyond those 8
/// bytes and are not part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quoted {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ttl: u8,
}

impl Quoted {
    /// The quotable part of a packet.
    pub fn of(h: &Headers) -> Quoted {
        Quoted {
            src: h.src,
            dst: h.dst,
            proto: h.proto,
            sport: h.sport,
            dport: h.dport,
            icmp_type: h.icmp_type,
            icmp_code: h.icmp_code,
            ttl: h.ttl,
        }
    }

    /// The quoted datagram as headers (no TCP flags, nothing quoted).
    pub fn headers(&self) -> Headers {
        Headers {
            src: self.src,
            dst: self.dst,
            proto: self.proto,
            sport: self.sport,
            dport: self.dport,
            tcp_flags: 0,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            ttl: self.ttl,
            inner: None,
        }
    }

    /// Whether the quoted protocol carries ports.
    pub fn has_ports(&self) -> bool {
        matches!(self.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
    }
}

/// The UDP port flannel's VXLAN device uses (Linux's default is 8472 too).
pub const VXLAN_PORT: u16 = 8472;

/// The header fields of one IPv4 packet that the dataplane decides on.
///
/// For ICMP echo, `sport` holds the echo identifier and `dport` is 0: the
/// same convention conntrack uses for its ICMP tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Headers {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP type and code (0/0 for other protocols).
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub ttl: u8,
    /// For ICMP errors: the datagram the error is about (`None` for every
    /// other packet).
    pub inner: Option<Quoted>,
}

impl Headers {
    /// A TCP segment with the given flags.
    pub fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Self {
        Headers {
            src,
            dst,
            proto: PROTO_TCP,
            sport,
            dport,
            tcp_flags: flags,
            icmp_type: 0,
            icmp_code: 0,
            ttl: 64,
            inner: None,
        }
    }

    /// A UDP datagram.
    pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Headers {
            proto: PROTO_UDP,
            tcp_flags: 0,
            ..Headers::tcp(src, sport, dst, dport, 0)
        }
    }

    /// An SCTP packet (an INIT chunk when built into bytes).
    pub fn sctp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Headers {
            proto: PROTO_SCTP,
            tcp_flags: 0,
            ..Headers::tcp(src, sport, dst, dport, 0)
        }
    }

    /// An ICMP echo request with identifier `id`.
    pub fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Self {
        Headers {
            proto: PROTO_ICMP,
            sport: id,
            dport: 0,
            tcp_flags: 0,
            icmp_type: ICMP_ECHO_REQUEST,
            icmp_code: 0,
            ..Headers::tcp(src, 0, dst, 0, 0)
        }
    }

    /// An ICMP error from `src` to `dst` about `offending` (as it looked
    /// where the error was raised), e.g. `ICMP_DEST_UNREACH` /
    /// `ICMP_PORT_UNREACH` for a closed port or a REJECT.
    pub fn icmp_error(
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp_type: u8,
        icmp_code: u8,
        offending: &Headers,
    ) -> Self {
        Headers {
            proto: PROTO_ICMP,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type,
            icmp_code,
            inner: Some(Quoted::of(offending)),
            ..Headers::tcp(src, 0, dst, 0, 0)
        }
    }

    /// Whether the protocol carries ports (TCP, UDP, SCTP).
    pub fn has_ports(&self) -> bool {
        matches!(self.proto, PROTO_TCP | PROTO_UDP | PROTO_SCTP)
    }

    /// The answer a server gives: addresses and ports swapped, a SYN
    /// answered by SYN-ACK, an echo request by an echo reply.
    pub fn reply(&self) -> Self {
        let mut r = Headers {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ttl: 64,
            ..*self
        };
        if self.proto == PROTO_TCP {
            r.tcp_flags = if self.tcp_flags & TCP_SYN != 0 {
                TCP_SYN | TCP_ACK
            } else {
                TCP_ACK
            };
        }
        if self.proto == PROTO_ICMP && self.icmp_type == ICMP_ECHO_REQUEST {
            r.icmp_type = ICMP_ECHO_REPLY;
            r.sport = self.sport;
            r.dport = 0;
        }
        r
    }

    /// The protocol's name as iptables spells it.
    pub fn proto_name(&self) -> String {
        proto_name(self.proto)
    }

    /// Real IPv4 bytes for these headers, checksums filled in. TCP segments
    /// and UDP/SCTP datagrams carry no payload beyond their header (an SCTP
    /// INIT chunk for SCTP); ICMP echo carries 8 bytes of header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let l4 = self.l4_bytes();
        let total = 20 + l4.len();
        let mut buf = vec![0u8; total];
        let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer sized for IPv4");
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_total_length(total as u16);
        ip.set_ttl(self.ttl);
        ip.set_flags(ipv4::Ipv4Flags::DontFragment);
        ip.set_next_level_protocol(pnet_packet::ip::IpNextHeaderProtocol(self.proto));
        ip.set_source(self.src);
        ip.set_destination(self.dst);
        ip.set_payload(&l4);
        let checksum = ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(checksum);
        buf
    }

    fn l4_bytes(&self) -> Vec<u8> {
        match self.proto {
            PROTO_TCP => {
                let mut b = vec![0u8; 20];
                let mut t = MutableTcpPacket::new(&mut b).expect("20-byte TCP header");
                t.set_source(self.sport);
                t.set_destination(self.dport);
                t.set_sequence(if self.tcp_flags & TCP_ACK != 0 {
                    0x2000_0000
                } else {
                    0x1000_0000
                });
                t.set_acknowledgement(if self.tcp_flags & TCP_ACK != 0 {
                    0x1000_0001
                } else {
                    0
                });
                t.set_data_offset(5);
                t.set_flags(self.tcp_flags);
                t.set_window(64240);
                let c = tcp::ipv4_checksum(&t.to_immutable(), &self.src, &self.dst);
                t.set_checksum(c);
                b
            }
            PROTO_UDP => {
                let mut b = vec![0u8; 8];
                let mut u = MutableUdpPacket::new(&mut b).expect("8-byte UDP header");
                u.set_source(self.sport);
                u.set_destination(self.dport);
                u.set_length(8);
                let c = udp::ipv4_checksum(&u.to_immutable(), &self.src, &self.dst);
                u.set_checksum(c);
                b
            }
            PROTO_SCTP => sctp_init(self.sport, self.dport),
            PROTO_ICMP => {
                let mut b = vec![0u8; 8];
                b[0] = self.icmp_type;
                b[1] = self.icmp_code;
                if let Some(q) = &self.inner {
                    // Unused word, then the quoted IP header and 8 bytes.
                    let quoted = q.headers().to_bytes();
                    b.extend_from_slice(&quoted[..quoted.len().min(20 + 8)]);
                } else {
                    b[4..6].copy_from_slice(&self.sport.to_be_bytes());
                    b[6..8].copy_from_slice(&1u16.to_be_bytes());
                }
                let c = internet_checksum(&b);
                b[2..4].copy_from_slice(&c.to_be_bytes());
                b
            }
            _ => Vec::new(),
        }
    }

    /// Parse IPv4 bytes back into headers. `None` when the bytes are not a
    /// well-formed IPv4 packet of a protocol the simulator knows.
    pub fn parse(bytes: &[u8]) -> Option<Headers> {
        let ip = Ipv4Packet::new(bytes)?;
        if ip.get_version() != 4 {
            return None;
        }
        let proto = ip.get_next_level_protocol().0;
        let mut h = Headers {
            src: ip.get_source(),
            dst: ip.get_destination(),
            proto,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            icmp_type: 0,
            icmp_code: 0,
            ttl: ip.get_ttl(),
            inner: None,
        };
        let payload = ip.payload();
        match proto {
            p if p == IpNextHeaderProtocols::Tcp.0 => {
                let t = TcpPacket::new(payload)?;
                h.sport = t.get_source();
                h.dport = t.get_destination();
                h.tcp_flags = t.get_flags();
            }
            p if p == IpNextHeaderProtocols::Udp.0 => {
                let u = UdpPacket::new(payload)?;
                h.sport = u.get_source();
                h.dport = u.get_destination();
            }
            PROTO_SCTP => {
                if payload.len() < 4 {
                    return None;
                }
                h.sport = u16::from_be_bytes([payload[0], payload[1]]);
                h.dport = u16::from_be_bytes([payload[2], payload[3]]);
            }
            PROTO_ICMP => {
                if payload.len() < 8 {
                    return None;
                }
                h.icmp_type = payload[0];
                h.icmp_code = payload[1];
                if icmp_is_error(h.icmp_type) {
                    h.inner = Some(parse_quoted(&payload[8..])?);
                } else {
                    h.sport = u16::from_be_bytes([payload[4], payload[5]]);
                }
            }
            _ => {}
        }
        Some(h)
    }
}

/// The quoted IP header and first 8 bytes inside an ICMP error (its total
/// length names the original datagram, which is longer than the quote).
fn parse_quoted(b: &[u8]) -> Option<Quoted> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let l4 = b.get(ihl..ihl + 8)?;
    let addr = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
    let proto = b[9];
    let mut q = Quoted {
        src: addr(12),
        dst: addr(16),
        proto,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_code: 0,
        ttl: b[8],
    };
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP => {
            q.sport = u16::from_be_bytes([l4[0], l4[1]]);
            q.dport = u16::from_be_bytes([l4[2], l4[3]]);
        }
        PROTO_ICMP => {
            q.icmp_type = l4[0];
            q.icmp_code = l4[1];
            q.sport = u16::from_be_bytes([l4[4], l4[5]]);
        }
        _ => {}
    }
    Some(q)
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.headers().fmt(f)
    }
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.has_ports() {
            write!(
                f,
                "{} {}:{} > {}:{}",
                proto_name(self.proto),
                self.src,
                self.sport,
                self.dst,
                self.dport
            )
        } else if let (PROTO_ICMP, Some(q)) = (self.proto, &self.inner) {
            write!(
                f,
                "icmp {} > {} type {}/{} about [{q}]",
                self.src, self.dst, self.icmp_type, self.icmp_code
            )
        } else if self.proto == PROTO_ICMP {
            write!(
                f,
                "icmp {} > {} type {} id {}",
                self.src, self.dst, self.icmp_type, self.sport
            )
        } else {
            write!(f, "proto {} {} > {}", self.proto, self.src, self.dst)
        }
    }
}

/// The protocol's name as iptables spells it, or its number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_SCTP => "sctp".into(),
        PROTO_ICMP => "icmp".into(),
        n => n.to_string(),
    }
}

/// A protocol by its name in any case (`tcp`, `UDP`, `sctp`, `icmp`), as
/// Kubernetes objects and iptables write them.
pub fn proto_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "tcp" => Some(PROTO_TCP),
        "udp" => Some(PROTO_UDP),
        "sctp" => Some(PROTO_SCTP),
        "icmp" => Some(PROTO_ICMP),
        _ => None,
    }
}

/// The RFC 1071 one's-complement sum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An SCTP common header followed by a minimal INIT chunk, with the CRC32c
/// checksum SCTP requires.
fn sctp_init(sport: u16, dport: u16) -> Vec<u8> {
    sctp_handshake(sport, dport, 0, SCTP_INIT, 0x1000_0000, None)
}

/// SCTP chunk type INIT.
pub const SCTP_INIT: u8 = 1;
/// SCTP chunk type INIT ACK.
pub const SCTP_INIT_ACK: u8 = 2;

/// An SCTP packet carrying one INIT or INIT ACK chunk: verification tag
/// `vtag` (0 on an INIT, the peer's initiate tag on an INIT ACK), our
/// `initiate_tag`, and for an INIT ACK the State Cookie parameter it must
/// carry (any bytes the sender chooses). CRC32c filled in.
pub fn sctp_handshake(
    sport: u16,
    dport: u16,
    vtag: u32,
    chunk_type: u8,
    initiate_tag: u32,
    cookie: Option<&[u8]>,
) -> Vec<u8> {
    let param_len = cookie.map_or(0, |c| 4 + c.len());
    let padded = param_len.div_ceil(4) * 4;
    let chunk_len = 20 + param_len;
    let mut b = vec![0u8; 12 + 20 + padded];
    b[0..2].copy_from_slice(&sport.to_be_bytes());
    b[2..4].copy_from_slice(&dport.to_be_bytes());
    b[4..8].copy_from_slice(&vtag.to_be_bytes());
    let chunk = &mut b[12..];
    chunk[0] = chunk_type;
    chunk[2..4].copy_from_slice(&(chunk_len as u16).to_be_bytes());
    chunk[4..8].copy_from_slice(&initiate_tag.to_be_bytes());
    chunk[8..12].copy_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    chunk[12..14].copy_from_slice(&1u16.to_be_bytes()); // outbound streams
    chunk[14..16].copy_from_slice(&1u16.to_be_bytes()); // inbound streams
    chunk[16..20].copy_from_slice(&initiate_tag.to_be_bytes()); // initial TSN
    if let Some(c) = cookie {
        chunk[20..22].copy_from_slice(&7u16.to_be_bytes()); // State Cookie
        chunk[22..24].copy_from_slice(&((4 + c.len()) as u16).to_be_bytes());
        chunk[24..24 + c.len()].copy_from_slice(c);
    }
    let crc = crc32c(&b);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    b
}

/// CRC32c (Castagnoli), bitwise; SCTP packets are tiny.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc: u32 = !0;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Wrap an inner IPv4 packet in Ethernet + VXLAN + UDP + IPv4 between two
/// node addresses, as flannel's `flannel.1` device does (VNI 1, UDP 8472).
/// The UDP source port is derived from the inner flow like the kernel's
/// `udp_flow_src_port` does (a hash into the ephemeral range); here a
/// documented deterministic fold of the inner addresses and ports.
pub fn vxlan_encapsulate(
    inner: &[u8],
    inner_headers: &Headers,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    vni: u32,
) -> Vec<u8> {
    let mut vx = Vec::with_capacity(8 + 14 + inner.len());
    vx.extend_from_slice(&[0x08, 0, 0, 0]);
    vx.extend_from_slice(&(vni << 8).to_be_bytes());
    // Inner Ethernet header: locally administered MACs derived from the
    // outer addresses, EtherType IPv4.
    vx.extend_from_slice(&mac_for(outer_dst));
    vx.extend_from_slice(&mac_for(outer_src));
    vx.extend_from_slice(&[0x08, 0x00]);
    vx.extend_from_slice(inner);
    let sport = vxlan_source_port(inner_headers);
    let udp_len = 8 + vx.len();
    let mut udp_buf = vec![0u8; udp_len];
    {
        let mut u = MutableUdpPacket::new(&mut udp_buf).expect("sized");
        u.set_source(sport);
        u.set_destination(VXLAN_PORT);
        u.set_length(udp_len as u16);
        u.set_payload(&vx);
        let c = udp::ipv4_checksum(&u.to_immutable(), &outer_src, &outer_dst);
        u.set_checksum(c);
    }
    let total = 20 + udp_len;
    let mut buf = vec![0u8; total];
    let mut ip = MutableIpv4Packet::new(&mut buf).expect("sized");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length(total as u16);
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Udp);
    ip.set_source(outer_src);
    ip.set_destination(outer_dst);
    ip.set_payload(&udp_buf);
    let c = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(c);
    buf
}

/// The outer UDP source port for a VXLAN packet: a fold of the inner flow
/// into 32768..=60999 (the kernel's default ephemeral range), so one flow
/// always uses one port.
pub fn vxlan_source_port(h: &Headers) -> u16 {
    let mut x: u32 = u32::from(h.src) ^ u32::from(h.dst).rotate_left(7);
    x ^= (u32::from(h.sport) << 16) | u32::from(h.dport);
    x ^= u32::from(h.proto).rotate_left(11);
    x = x.wrapping_mul(0x9E37_79B1);
    32768 + (x >> 16) as u16 % (61000 - 32768)
}

/// A locally administered MAC address derived from an IPv4 address.
pub fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Wrap an IPv4 packet in an Ethernet II header (for pcap output).
pub fn ethernet_frame(src_mac: [u8; 6], dst_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(ip);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_round_trips_through_bytes_with_valid_checksums() {
        let h = Headers::tcp(a("10.0.0.1"), 40000, a("10.96.0.10"), 80, TCP_SYN);
        let b = h.to_bytes();
        assert_eq!(Headers::parse(&b), Some(h));
        let ip = Ipv4Packet::new(&b).unwrap();
        assert_eq!(ipv4::checksum(&ip), ip.get_checksum());
        let t = TcpPacket::new(ip.payload()).unwrap();
        assert_eq!(
            tcp::ipv4_checksum(&t, &h.src, &h.dst),
            t.get_checksum(),
            "TCP checksum must be valid"
        );
    }

    #[test]
    fn udp_sctp_icmp_round_trip() {
        for h in [
            Headers::udp(a("1.2.3.4"), 5, a("5.6.7.8"), 53),
            Headers::sctp(a("1.2.3.4"), 5, a("5.6.7.8"), 9000),
            Headers::icmp_echo(a("1.2.3.4"), a("5.6.7.8"), 77),
        ] {
            assert_eq!(Headers::parse(&h.to_bytes()), Some(h));
        }
    }

    #[test]
    fn icmp_error_quotes_header_and_eight_bytes_and_parses_back() {
        let offending = Headers::udp(a("203.0.113.7"), 40000, a("10.244.2.5"), 5353);
        let err = Headers::icmp_error(
            a("10.244.2.5"),
            a("203.0.113.7"),
            ICMP_DEST_UNREACH,
            ICMP_PORT_UNREACH,
            &offending,
        );
        let b = err.to_bytes();
        // IP 20 + ICMP 8 + quoted IP 20 + 8 bytes of UDP.
        assert_eq!(b.len(), 56);
        assert_eq!(&b[28..56], &offending.to_bytes()[..28]);
        let icmp = &b[20..];
        assert_eq!(internet_checksum(icmp), 0, "ICMP checksum must be valid");
        assert_eq!(Headers::parse(&b), Some(err));
        assert_eq!(err.inner.unwrap().headers(), offending);
        assert_eq!(
            err.to_string(),
            "icmp 10.244.2.5 > 203.0.113.7 type 3/3 about [udp 203.0.113.7:40000 > 10.244.2.5:5353]"
        );
        // A quoted echo request keeps its identifier.
        let ping = Headers::icmp_echo(a("1.1.1.1"), a("2.2.2.2"), 42);
        let ttl = Headers::icmp_error(a("9.9.9.9"), a("1.1.1.1"), ICMP_TIME_EXCEEDED, 0, &ping);
        assert_eq!(Headers::parse(&ttl.to_bytes()), Some(ttl));
        assert!(icmp_is_error(ICMP_TIME_EXCEEDED) && !icmp_is_error(ICMP_ECHO_REPLY));
    }

    #[test]
    fn reply_swaps_and_answers_syn_with_syn_ack() {
        let h = Headers::tcp(a("10.0.0.1"), 40000, a("10.0.0.2"), 80, TCP_SYN);
        let r = h.reply();
        assert_eq!((r.src, r.sport, r.dst, r.dport), (h.dst, 80, h.src, 40000));
        assert_eq!(r.tcp_flags, TCP_SYN | TCP_ACK);
        let e = Headers::icmp_echo(a("1.1.1.1"), a("2.2.2.2"), 9).reply();
        assert_eq!((e.icmp_type, e.sport), (ICMP_ECHO_REPLY, 9));
    }

    #[test]
    fn checksum_known_value() {
        // RFC 1071 example header words.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2u16);
    }

    #[test]
    fn vxlan_outer_header_carries_inner_packet() {
        let h = Headers::tcp(a("10.244.1.5"), 40000, a("10.244.2.5"), 80, TCP_SYN);
        let inner = h.to_bytes();
        let outer = vxlan_encapsulate(&inner, &h, a("192.168.1.1"), a("192.168.1.2"), 1);
        let oh = Headers::parse(&outer).unwrap();
        assert_eq!((oh.proto, oh.dport), (PROTO_UDP, VXLAN_PORT));
        assert_eq!(&outer[20 + 8 + 8 + 14..], &inner[..]);
    }
}
