//! Dispatch indexes for large chains.
//!
//! kube-proxy's `KUBE-SERVICES` holds one rule per service port, each of the
//! shape `-d VIP/32 -p PROTO -m PROTO --dport PORT ...`, and
//! `KUBE-NODEPORTS` one per node port (`-p PROTO -m PROTO --dport PORT`).
//! Walking them linearly makes a first packet cost O(services). An index
//! keys each such rule by what it *requires* of the packet; a rule whose
//! key differs from the packet's cannot match, so it is skipped. Every
//! other rule ("generic") is always a candidate. Candidates are visited in
//! rule order, so the outcome is exactly the linear walk's.
//!
//! Invariant: `candidates(p)` is a superset, in ascending order, of the
//! rules of the chain that can match `p`.

use super::rule::*;
use crate::wire::Headers;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Chains shorter than this are walked linearly: an index costs more than
/// it saves.
pub const INDEX_MIN_RULES: usize = 32;

#[derive(Clone, Debug, Default)]
pub struct ChainIndex {
    /// Rules keyed by (destination, protocol, destination port).
    exact: HashMap<(Ipv4Addr, u8, u16), Vec<usize>>,
    /// Rules keyed by (protocol, destination port) only.
    by_port: HashMap<(u8, u16), Vec<usize>>,
    /// Rules keyed by destination only.
    by_dst: HashMap<Ipv4Addr, Vec<usize>>,
    /// Rules every packet must be tried against.
    generic: Vec<usize>,
}

/// What a rule demands of every packet it matches.
enum Key {
    Exact(Ipv4Addr, u8, u16),
    Port(u8, u16),
    Dst(Ipv4Addr),
    Generic,
}

impl ChainIndex {
    /// An index for `chain`, or `None` when it is too small to need one.
    pub fn build(chain: &Chain) -> Option<ChainIndex> {
        if chain.rules.len() < INDEX_MIN_RULES {
            return None;
        }
        let mut ix = ChainIndex::default();
        for (i, rule) in chain.rules.iter().enumerate() {
            match key_of(rule) {
                Key::Exact(a, p, port) => ix.exact.entry((a, p, port)).or_default().push(i),
                Key::Port(p, port) => ix.by_port.entry((p, port)).or_default().push(i),
                Key::Dst(a) => ix.by_dst.entry(a).or_default().push(i),
                Key::Generic => ix.generic.push(i),
            }
        }
        Some(ix)
    }

    /// Rules that may match `h`, ascending.
    pub fn candidates(&self, h: &Headers) -> Vec<usize> {
        let empty: &[usize] = &[];
        let exact = self
            .exact
            .get(&(h.dst, h.proto, h.dport))
            .map_or(empty, Vec::as_slice);
        let port = self
            .by_port
            .get(&(h.proto, h.dport))
            .map_or(empty, Vec::as_slice);
        let dst = self.by_dst.get(&h.dst).map_or(empty, Vec::as_slice);
        let mut out = Vec::with_capacity(self.generic.len() + exact.len() + port.len() + dst.len());
        out.extend_from_slice(&self.generic);
        out.extend_from_slice(exact);
        out.extend_from_slice(port);
        out.extend_from_slice(dst);
        out.sort_unstable();
        out
    }
}

/// The strongest key the rule's non-negated, packet-only conditions give.
fn key_of(rule: &Rule) -> Key {
    let dst = rule
        .destination
        .as_ref()
        .filter(|d| !d.negated && d.value.prefix_len() == 32)
        .map(|d| d.value.addr());
    let proto = rule
        .protocol
        .as_ref()
        .filter(|p| !p.negated)
        .map(|p| p.value.number())
        .filter(|&p| matches!(p, 6 | 17 | 132));
    let dport = proto.and_then(|p| single_dport(rule, p));
    match (dst, proto, dport) {
        (Some(a), Some(p), Some(port)) => Key::Exact(a, p, port),
        (None, Some(p), Some(port)) => Key::Port(p, port),
        (Some(a), _, _) => Key::Dst(a),
        _ => Key::Generic,
    }
}

/// The single destination port a `-m tcp/udp/sctp --dport P` match of the
/// rule's own protocol demands.
fn single_dport(rule: &Rule, proto: u8) -> Option<u16> {
    rule.matches.iter().find_map(|m| match &m.kind {
        MatchKind::Ports { dport: Some(d), .. }
            if !d.negated
                && d.value.first == d.value.last
                && module_proto(m.module) == Some(proto) =>
        {
            Some(d.value.first)
        }
        _ => None,
    })
}

fn module_proto(module: &str) -> Option<u8> {
    match module {
        "tcp" => Some(6),
        "udp" => Some(17),
        "sctp" => Some(132),
        _ => None,
    }
}
