//! Connection tracking: one host's table of connections and their NAT
//! bindings.
//!
//! Modelled on the kernel's `nf_conntrack` + `nf_nat`:
//!
//! * A connection is stored under two tuples: the *original* one (as the
//!   first packet looked on arrival) and the *reply* one (what an answer must
//!   look like, after NAT). A lookup by either finds the entry and says in
//!   which direction the packet travels.
//! * The first packet of a connection gets an *unconfirmed* entry
//!   ([`Conn`] held by the caller, not yet in the table). Only such a packet
//!   traverses the nat table; NAT targets rewrite the entry's reply tuple.
//!   The entry enters the table when the packet leaves the host or is
//!   delivered locally ([`ConntrackTable::confirm`]), like the kernel's
//!   `__nf_conntrack_confirm` at the last hook; a dropped first packet leaves
//!   no trace.
//! * Later packets (either direction) take their NAT from the entry: each
//!   hook rewrites the packet toward the inverse of the other direction's
//!   tuple (`nf_nat_manip_pkt`), which un-DNATs and un-SNATs replies.
//! * Source-port choice for SNAT/MASQUERADE follows `get_unique_tuple`: keep
//!   the original port when the resulting reply tuple is free; otherwise, or
//!   always under `--random`/`--random-fully`, pick a port. The kernel picks
//!   with a hash or a random draw; here the pick is a documented
//!   deterministic function ([`pick_port`]) of the tuple and the host's seed,
//!   then probing upward for a free one.
//!
//! * An ICMP error (destination unreachable, source quench, redirect, time
//!   exceeded, parameter problem) never starts or looks up a connection by
//!   its own addresses: it is RELATED to the connection its quoted datagram
//!   belongs to, in either direction, or it has no connection at all
//!   ([`ConntrackTable::lookup`]).
//!
//! Iteration over the table ([`ConntrackTable::entries`]) is in insertion
//! order, never hash order, so output is deterministic.

use crate::wire::{
    icmp_is_error, Headers, Quoted, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, PROTO_ICMP, PROTO_TCP,
    TCP_ACK, TCP_RST, TCP_SYN,
};
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A conntrack tuple. For ICMP echo, `sport` holds the identifier and
/// `dport` is 0 in both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

impl Tuple {
    pub fn of(h: &Headers) -> Tuple {
        Tuple {
            src: h.src,
            dst: h.dst,
            proto: h.proto,
            sport: h.sport,
            dport: h.dport,
        }
    }

    /// The tuple of a quoted datagram (as `nf_ct_get_tuplepr` reads it from
    /// inside an ICMP error).
    pub fn of_quoted(q: &Quoted) -> Tuple {
        Tuple {
            src: q.src,
            dst: q.dst,
            proto: q.proto,
            sport: q.sport,
            dport: if q.proto == PROTO_ICMP { 0 } else { q.dport },
        }
    }

    /// The tuple of the answer to this one.
    pub fn invert(&self) -> Tuple {
        if self.proto == PROTO_ICMP {
            return Tuple {
                src: self.dst,
                dst: self.src,
                ..*self
            };
        }
        Tuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proto == PROTO_ICMP {
            write!(
                f,
                "icmp src={} dst={} id={}",
                self.src, self.dst, self.sport
            )
        } else {
            write!(
                f,
                "{} src={} dst={} sport={} dport={}",
                crate::wire::proto_name(self.proto),
                self.src,
                self.dst,
                self.sport,
                self.dport
            )
        }
    }
}

/// Which way a packet travels relative to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Original,
    Reply,
}

/// The state `-m conntrack --ctstate` / `-m state` sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    New,
    Established,
    Related,
    Invalid,
    Untracked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "NEW",
            State::Established => "ESTABLISHED",
            State::Related => "RELATED",
            State::Invalid => "INVALID",
            State::Untracked => "UNTRACKED",
        }
    }
}

/// One connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Stable identity: the order in which the host created it.
    pub id: u64,
    pub original: Tuple,
    pub reply: Tuple,
    /// A reply has been seen (the connection is ESTABLISHED).
    pub seen_reply: bool,
    /// The nat table has run for the destination manipulation
    /// (PREROUTING/OUTPUT) and the source manipulation
    /// (INPUT/POSTROUTING); once set, no nat chain runs again.
    pub dnat_initialized: bool,
    pub snat_initialized: bool,
    /// `ctmark`.
    pub mark: u32,
}

impl Conn {
    /// Whether the binding changed the destination (conntrack's DNAT status).
    pub fn is_dnat(&self) -> bool {
        self.reply.src != self.original.dst
            || (self.original.proto != PROTO_ICMP && self.reply.sport != self.original.dport)
    }

    /// Whether the binding changed the source (conntrack's SNAT status).
    pub fn is_snat(&self) -> bool {
        self.reply.dst != self.original.src
            || (self.original.proto != PROTO_ICMP && self.reply.dport != self.original.sport)
    }

    /// Where a packet in `dir` must be addressed after destination NAT.
    pub fn dnat_target(&self, dir: Direction) -> (Ipv4Addr, u16) {
        let other = match dir {
            Direction::Original => self.reply.invert(),
            Direction::Reply => self.original.invert(),
        };
        (other.dst, other.dport)
    }

    /// Where a packet in `dir` must come from after source NAT.
    pub fn snat_target(&self, dir: Direction) -> (Ipv4Addr, u16) {
        let other = match dir {
            Direction::Original => self.reply.invert(),
            Direction::Reply => self.original.invert(),
        };
        (other.src, other.sport)
    }
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {} | reply {}", self.id, self.original, self.reply)?;
        if self.is_dnat() {
            f.write_str(" [DNAT]")?;
        }
        if self.is_snat() {
            f.write_str(" [SNAT]")?;
        }
        if self.seen_reply {
            f.write_str(" [ASSURED]")?;
        }
        if self.mark != 0 {
            write!(f, " mark=0x{:x}", self.mark)?;
        }
        Ok(())
    }
}

/// What a lookup found for a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A confirmed connection, and the packet's direction in it.
    Existing { id: u64, dir: Direction },
    /// An ICMP error about a packet of a confirmed connection: the packet is
    /// RELATED to it (`IP_CT_RELATED`, or `IP_CT_RELATED_REPLY` when `dir`
    /// is `Reply`).
    Related { id: u64, dir: Direction },
    /// No connection: this packet starts one (the entry is not in the table
    /// until confirmed).
    New(Conn),
    /// The packet cannot start a connection (a TCP SYN-ACK or RST with no
    /// entry, as `nf_conntrack_proto_tcp`'s state table says), or is an
    /// ICMP error about no known connection. The packet gets no conntrack
    /// entry, which `--ctstate INVALID` matches.
    Invalid,
}

/// One host's conntrack table.
#[derive(Clone, Debug, Default)]
pub struct ConntrackTable {
    conns: Vec<Conn>,
    /// Tuple → (position in `conns`, direction). Only looked up, never
    /// iterated.
    index: HashMap<Tuple, (usize, Direction)>,
    next_id: u64,
}

impl ConntrackTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Find the packet's connection, or describe the one it would start.
    pub fn lookup(&self, h: &Headers) -> Lookup {
        if h.proto == PROTO_ICMP && icmp_is_error(h.icmp_type) {
            return self.lookup_icmp_error(h);
        }
        let t = Tuple::of(h);
        if let Some(&(pos, dir)) = self.index.get(&t) {
            return Lookup::Existing {
                id: self.conns[pos].id,
                dir,
            };
        }
        if h.proto == PROTO_TCP && !can_start_tcp(h.tcp_flags) {
            return Lookup::Invalid;
        }
        if h.proto == PROTO_ICMP && h.icmp_type != ICMP_ECHO_REQUEST {
            return Lookup::Invalid;
        }
        Lookup::New(Conn {
            id: self.next_id,
            original: t,
            reply: t.invert(),
            seen_reply: false,
            dnat_initialized: false,
            snat_initialized: false,
            mark: 0,
        })
    }

    /// A packet that came back through `lo`: the kernel keeps the
    /// connection it was sent with attached to it, so a packet whose
    /// addresses NAT rewrote on the way out (its tuple is the inverse of the
    /// reply tuple) is still that connection's original direction, not a
    /// new connection.
    pub fn lookup_looped(&self, h: &Headers) -> Lookup {
        match self.lookup(h) {
            Lookup::New(conn) => match self.index.get(&conn.reply) {
                Some(&(pos, Direction::Reply)) => Lookup::Existing {
                    id: self.conns[pos].id,
                    dir: Direction::Original,
                },
                _ => Lookup::New(conn),
            },
            other => other,
        }
    }

    /// An ICMP error, as `nf_conntrack_icmpv4_error` and
    /// `nf_conntrack_inet_error` (net/netfilter/nf_conntrack_proto_icmp.c,
    /// nf_conntrack_proto.c) treat it: the quoted datagram's tuple is
    /// inverted (it travelled the other way) and looked up; the error is
    /// RELATED to the entry found, in that tuple's direction, provided the
    /// error's outer destination is that tuple's destination (the kernel
    /// refuses "outer daddr != inner" so a forged error cannot reach a
    /// third host). With no entry, or a quote that cannot be inverted (an
    /// ICMP error quoting something other than an echo), the kernel returns
    /// `-NF_ACCEPT` without attaching a conntrack: the error is not tracked,
    /// not NEW, and `--ctstate INVALID` matches it.
    fn lookup_icmp_error(&self, h: &Headers) -> Lookup {
        let Some(q) = &h.inner else {
            return Lookup::Invalid;
        };
        if q.proto == PROTO_ICMP && !matches!(q.icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) {
            return Lookup::Invalid;
        }
        let inner = Tuple::of_quoted(q).invert();
        match self.index.get(&inner) {
            Some(&(pos, dir)) if inner.dst == h.dst => Lookup::Related {
                id: self.conns[pos].id,
                dir,
            },
            _ => Lookup::Invalid,
        }
    }

    pub fn get(&self, id: u64) -> Option<&Conn> {
        self.position(id).map(|p| &self.conns[p])
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.position(id).map(move |p| &mut self.conns[p])
    }

    fn position(&self, id: u64) -> Option<usize> {
        self.conns.binary_search_by_key(&id, |c| c.id).ok()
    }

    /// Whether a connection already answers to `reply` (so a new binding
    /// producing it would clash): `nf_conntrack_tuple_taken`.
    pub fn reply_taken(&self, reply: &Tuple) -> bool {
        self.index.contains_key(reply) || self.index.contains_key(&reply.invert())
    }

    /// Insert a new connection at the end of its first packet's journey.
    /// Returns false (and inserts nothing) when either tuple clashes with an
    /// existing entry, which the kernel counts as `insert_failed` and drops.
    pub fn confirm(&mut self, conn: Conn) -> bool {
        if self.index.contains_key(&conn.original) || self.index.contains_key(&conn.reply) {
            return false;
        }
        let pos = self.conns.len();
        self.index.insert(conn.original, (pos, Direction::Original));
        self.index.insert(conn.reply, (pos, Direction::Reply));
        self.next_id = self.next_id.max(conn.id + 1);
        self.conns.push(conn);
        true
    }

    /// Entries in creation order.
    pub fn entries(&self) -> &[Conn] {
        &self.conns
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// Whether a TCP packet with these flags may create a connection. The
/// kernel's TCP state table marks SYN-ACK and RST from `NONE` as invalid;
/// with `nf_conntrack_tcp_loose=1` (the default) a bare ACK is picked up.
fn can_start_tcp(flags: u8) -> bool {
    if flags & TCP_RST != 0 {
        return false;
    }
    !(flags & TCP_SYN != 0 && flags & TCP_ACK != 0)
}

/// The source port SNAT gives a new connection, as `nf_nat` would:
/// `original` when `keep_if_free` and the port is free, otherwise a port in
/// `range` starting from a deterministic offset (a fold of the tuple and
/// `seed`), probing upward with wrap-around until `is_free` says yes.
/// Returns `None` when every port of the range is taken.
pub fn pick_port(
    tuple: &Tuple,
    original: u16,
    range: (u16, u16),
    keep_if_free: bool,
    seed: u64,
    mut is_free: impl FnMut(u16) -> bool,
) -> Option<u16> {
    let (lo, hi) = range;
    if keep_if_free && (lo..=hi).contains(&original) && is_free(original) {
        return Some(original);
    }
    let span = u32::from(hi - lo) + 1;
    let mut x = seed ^ u64::from(u32::from(tuple.src)) << 32 ^ u64::from(u32::from(tuple.dst));
    x ^= u64::from(tuple.sport) << 16 | u64::from(tuple.dport);
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let start = (x >> 33) as u32 % span;
    (0..span)
        .map(|i| lo + ((start + i) % span) as u16)
        .find(|&p| is_free(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Headers;

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn syn() -> Headers {
        Headers::tcp(a("10.0.0.1"), 40000, a("10.96.0.10"), 80, TCP_SYN)
    }

    #[test]
    fn new_connection_is_not_in_table_until_confirmed() {
        let mut t = ConntrackTable::new();
        let Lookup::New(c) = t.lookup(&syn()) else {
            panic!("expected new")
        };
        assert!(t.is_empty());
        assert!(t.confirm(c));
        assert_eq!(
            t.lookup(&syn()),
            Lookup::Existing {
                id: 0,
                dir: Direction::Original
            }
        );
    }

    #[test]
    fn reply_is_found_by_reply_tuple_after_dnat() {
        let mut t = ConntrackTable::new();
        let Lookup::New(mut c) = t.lookup(&syn()) else {
            panic!()
        };
        // DNAT to 10.244.1.5:8080
        c.reply.src = a("10.244.1.5");
        c.reply.sport = 8080;
        assert!(c.is_dnat() && !c.is_snat());
        assert!(t.confirm(c));
        let reply = Headers::tcp(
            a("10.244.1.5"),
            8080,
            a("10.0.0.1"),
            40000,
            TCP_SYN | TCP_ACK,
        );
        let Lookup::Existing { id, dir } = t.lookup(&reply) else {
            panic!()
        };
        assert_eq!(dir, Direction::Reply);
        // The reply is rewritten to come from the service address.
        assert_eq!(t.get(id).unwrap().snat_target(dir), (a("10.96.0.10"), 80));
        // The original direction is sent to the endpoint.
        assert_eq!(
            t.get(id).unwrap().dnat_target(Direction::Original),
            (a("10.244.1.5"), 8080)
        );
    }

    #[test]
    fn syn_ack_or_rst_without_entry_is_invalid_but_ack_is_picked_up() {
        let t = ConntrackTable::new();
        let mut h = syn();
        h.tcp_flags = TCP_SYN | TCP_ACK;
        assert_eq!(t.lookup(&h), Lookup::Invalid);
        h.tcp_flags = TCP_RST;
        assert_eq!(t.lookup(&h), Lookup::Invalid);
        h.tcp_flags = TCP_ACK;
        assert!(matches!(t.lookup(&h), Lookup::New(_)));
    }

    #[test]
    fn icmp_error_is_related_to_the_connection_it_quotes_in_either_direction() {
        use crate::wire::{ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMP_TIME_EXCEEDED};
        let mut t = ConntrackTable::new();
        let Lookup::New(mut c) = t.lookup(&syn()) else {
            panic!()
        };
        // DNAT to 10.244.1.5:8080.
        c.reply.src = a("10.244.1.5");
        c.reply.sport = 8080;
        assert!(t.confirm(c));
        // The backend refuses the DNATed SYN: reply direction.
        let at_backend = Headers::tcp(a("10.0.0.1"), 40000, a("10.244.1.5"), 8080, TCP_SYN);
        let unreach = |src: &str, dst: &str, about: &Headers| {
            Headers::icmp_error(a(src), a(dst), ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, about)
        };
        assert_eq!(
            t.lookup(&unreach("10.244.1.5", "10.0.0.1", &at_backend)),
            Lookup::Related {
                id: 0,
                dir: Direction::Reply
            }
        );
        // A router between node and client cannot deliver the (un-DNATed)
        // answer and tells its source, the service address: the quote is a
        // reply-direction packet, so the error travels in the original
        // direction.
        let answer = Headers::tcp(a("10.96.0.10"), 80, a("10.0.0.1"), 40000, TCP_ACK);
        let ttl = Headers::icmp_error(
            a("10.0.0.254"),
            a("10.96.0.10"),
            ICMP_TIME_EXCEEDED,
            0,
            &answer,
        );
        assert_eq!(
            t.lookup(&ttl),
            Lookup::Related {
                id: 0,
                dir: Direction::Original
            }
        );
        // Outer destination other than the inner source: not related.
        assert_eq!(
            t.lookup(&unreach("10.244.1.5", "10.0.0.99", &at_backend)),
            Lookup::Invalid
        );
        // About a connection nobody has: no entry, INVALID, never NEW.
        let other = Headers::tcp(a("10.0.0.1"), 40001, a("10.244.1.5"), 8080, TCP_SYN);
        assert_eq!(
            t.lookup(&unreach("10.244.1.5", "10.0.0.1", &other)),
            Lookup::Invalid
        );
        // An error without a quote, or quoting an error, is INVALID too.
        let mut bare = unreach("10.244.1.5", "10.0.0.1", &at_backend);
        bare.inner = None;
        assert_eq!(t.lookup(&bare), Lookup::Invalid);
        let nested = unreach(
            "10.0.0.1",
            "10.244.1.5",
            &unreach("10.244.1.5", "10.0.0.1", &at_backend),
        );
        assert_eq!(t.lookup(&nested), Lookup::Invalid);
    }

    #[test]
    fn icmp_error_about_a_ping_is_related_and_not_confused_with_echo_id_zero() {
        use crate::wire::{ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST};
        let mut t = ConntrackTable::new();
        let ping = Headers::icmp_echo(a("10.0.0.1"), a("10.0.0.2"), 0);
        let Lookup::New(c) = t.lookup(&ping) else {
            panic!()
        };
        assert!(t.confirm(c));
        let err = Headers::icmp_error(a("10.0.0.2"), a("10.0.0.1"), ICMP_DEST_UNREACH, 1, &ping);
        assert_eq!(
            t.lookup(&err),
            Lookup::Related {
                id: 0,
                dir: Direction::Reply
            }
        );
        assert_eq!(ping.icmp_type, ICMP_ECHO_REQUEST);
        // An error about another host's ping: its own addresses equal the
        // echo connection's reply tuple, yet it is not ESTABLISHED.
        let stray = Headers::icmp_error(
            a("10.0.0.2"),
            a("10.0.0.1"),
            ICMP_DEST_UNREACH,
            1,
            &Headers::icmp_echo(a("10.0.0.1"), a("10.0.0.3"), 0),
        );
        assert_eq!(t.lookup(&stray), Lookup::Invalid);
    }

    #[test]
    fn clashing_confirm_is_refused() {
        let mut t = ConntrackTable::new();
        let Lookup::New(c) = t.lookup(&syn()) else {
            panic!()
        };
        assert!(t.confirm(c.clone()));
        let mut d = c;
        d.id = 1;
        assert!(!t.confirm(d));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pick_port_keeps_free_port_and_probes_deterministically() {
        let tup = Tuple::of(&syn());
        assert_eq!(
            pick_port(&tup, 40000, (1024, 65535), true, 0, |_| true),
            Some(40000)
        );
        let p1 = pick_port(&tup, 40000, (1024, 65535), true, 0, |p| p != 40000).unwrap();
        let p2 = pick_port(&tup, 40000, (1024, 65535), true, 0, |p| p != 40000).unwrap();
        assert_eq!(p1, p2);
        assert_ne!(p1, 40000);
        assert!((1024..=65535).contains(&p1));
        assert_eq!(pick_port(&tup, 5, (10, 12), true, 0, |_| false), None);
        // The only free port is found whatever the start.
        assert_eq!(pick_port(&tup, 5, (10, 12), true, 7, |p| p == 11), Some(11));
    }
}
