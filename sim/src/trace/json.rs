//! The machine-readable trace (`--format json`): serde types, one per thing
//! the trace says, with a JSON Schema generated from them (`kpsim schema
//! trace`). Verdicts and steps are tagged enums, numbers are numbers,
//! addresses and ports are separate fields, and every probability is given
//! both as a float and exactly (`"1/3"`).
//!
//! A document holds the first flow (`flow`), the flows that follow it on
//! the same conntrack state (`then`, from `--then`), and every joint path
//! through all of them (`outcomes`): each with the exact probability of that
//! whole path, the first flow's result at the top and the later flows'
//! results in `then`.

use super::text::{summary_line, FlowLabel};
use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent, RuleLanguage, RuleRef, Verdict};
use crate::conntrack::{Direction, State, Tuple};
use crate::netfilter::{
    ChainRun, ChainSite, ChainStep, CtFound, DropReason, Engine, Event, NatAction, NatKind,
    Outcome, Policy, Route, Step, TableName, TableVerdict,
};
use crate::prob::Probability;
use crate::wire::{self, Headers};
use schemars::JsonSchema;
use serde::Serialize;
use std::net::Ipv4Addr;

/// `kpsim trace --format json`.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TraceDocument {
    /// The (first) flow traced.
    pub flow: FlowInfo,
    /// Flows sent after it in the same run (`--then`), sharing conntrack
    /// and session-affinity state; empty for a single flow.
    pub then: Vec<FlowInfo>,
    /// Every distinct path through all flows, in a fixed order; their
    /// probabilities add up to exactly 1.
    pub outcomes: Vec<TraceOutcome>,
}

/// A flow as asked and as the sender built it.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FlowInfo {
    /// The sender as given (`--from`).
    pub from: String,
    /// The target as given (`--to`).
    pub to: String,
    pub protocol: String,
    /// The sender's address and port.
    pub src: SocketAddress,
    /// Where the sender sends it.
    pub dst: SocketAddress,
}

/// An address with an optional port (none for ICMP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SocketAddress {
    #[schemars(with = "String")]
    pub address: Ipv4Addr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// A probability as a float and exactly.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Chance {
    pub value: f64,
    /// Exact, as a fraction (`"1/3"`) or `"1"`.
    pub exact: String,
}

impl Chance {
    pub fn of(p: &Probability) -> Chance {
        Chance {
            value: p.to_f64(),
            exact: p.exact_string(),
        }
    }
}

/// One joint path through every flow of the document.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TraceOutcome {
    /// The probability of this whole path (all flows), as a float.
    pub probability: f64,
    /// The same, exactly (`"715827883/2147483648"`).
    pub probability_exact: String,
    /// The first flow's result on this path.
    #[serde(flatten)]
    pub result: FlowOutcome,
    /// The later flows' results on this same path, in order.
    pub then: Vec<FlowOutcome>,
}

/// What became of one flow, with every step on the way.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FlowOutcome {
    #[serde(flatten)]
    pub summary: OutcomeSummary,
    /// The request's way: hosts and links in order.
    pub hops: Vec<LegStepDoc>,
    /// The reply's (or a refusal's) way back; `null` when nothing answered.
    pub reply_hops: Option<Vec<LegStepDoc>>,
    /// What a real client may meet that the model leaves out (the kernel's
    /// ICMP rate limit on a refusal), in plain words.
    pub notes: Vec<String>,
}

/// The result of one flow in a few fields (also used by `check` and
/// `matrix`).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct OutcomeSummary {
    /// The pod whose socket took it; `null` when none did.
    pub delivered_to: Option<String>,
    pub verdict: Verdict,
    /// Why it ended so, in plain words.
    pub reason: String,
    /// The source address the pod saw.
    #[schemars(with = "Option<String>")]
    pub source_seen: Option<Ipv4Addr>,
    /// The destination the pod's socket saw.
    pub destination_seen: Option<SocketAddress>,
    /// Whether the reply got home; `null` when nothing was delivered.
    pub reply: Option<ReplyVerdict>,
    pub reply_reason: String,
    /// Whether a source NAT happened on the way (SNAT/MASQUERADE, or a
    /// nodePort-delivery load balancer), even if the source seen is the
    /// sender's own address.
    pub snat: bool,
    /// The node whose nat table chose the endpoint.
    pub decided_by: Option<String>,
    /// The rule (or chain policy) that dropped or rejected it, when one
    /// did.
    pub ended_by: Option<DecidingRule>,
    /// What the listener that took it answered, where kpsim models it
    /// (kube-proxy's health-check servers).
    pub http_answer: Option<HttpAnswerDoc>,
    /// The one-line story, as the text trace ends.
    pub summary: String,
}

/// An HTTP answer of a modelled listener.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct HttpAnswerDoc {
    pub status: u16,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReplyVerdict {
    Ok,
    Broken,
}

impl OutcomeSummary {
    pub fn of(cluster: &Cluster, r: &FlowResult) -> OutcomeSummary {
        let seen = r.seen();
        OutcomeSummary {
            delivered_to: r.delivered_to().map(String::from),
            verdict: r.forward.verdict,
            reason: r.forward.reason.clone(),
            source_seen: seen.map(|h| h.src),
            destination_seen: seen.map(|h| destination(&h)),
            reply: r.reply_ok.map(|ok| {
                if ok {
                    ReplyVerdict::Ok
                } else {
                    ReplyVerdict::Broken
                }
            }),
            reply_reason: r.reply_reason.clone(),
            snat: r.snat(),
            decided_by: r.decided_by().map(|h| cluster.host_name(h).to_string()),
            ended_by: r
                .forward
                .ended_by
                .as_ref()
                .map(|rule| DecidingRule::of(cluster, rule)),
            http_answer: r.forward.served.as_ref().map(|a| HttpAnswerDoc {
                status: a.status,
                body: a.body.clone(),
            }),
            summary: summary_line(cluster, r),
        }
    }
}

fn port_of(h: &Headers, port: u16) -> Option<u16> {
    h.has_ports().then_some(port)
}

fn source(h: &Headers) -> SocketAddress {
    SocketAddress {
        address: h.src,
        port: port_of(h, h.sport),
    }
}

fn destination(h: &Headers) -> SocketAddress {
    SocketAddress {
        address: h.dst,
        port: port_of(h, h.dport),
    }
}

/// A packet's headers.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Packet {
    /// `tcp`, `udp`, `sctp`, `icmp` or the protocol number.
    pub protocol: String,
    pub source: SocketAddress,
    pub destination: SocketAddress,
    /// TCP flags set (`SYN`, `ACK`, `RST`, `FIN`); absent for other
    /// protocols.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp_flags: Vec<String>,
    /// ICMP type and code, for ICMP only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp: Option<Icmp>,
    /// For an ICMP error: the header of the datagram it quotes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quoted: Option<TupleDoc>,
    /// The packet in one line, as the text trace prints it.
    pub text: String,
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
pub struct Icmp {
    #[serde(rename = "type")]
    pub icmp_type: u8,
    pub code: u8,
}

impl Packet {
    pub fn of(h: &Headers) -> Packet {
        let flags = [
            (wire::TCP_SYN, "SYN"),
            (wire::TCP_ACK, "ACK"),
            (wire::TCP_RST, "RST"),
            (wire::TCP_FIN, "FIN"),
        ];
        Packet {
            protocol: h.proto_name(),
            source: source(h),
            destination: destination(h),
            tcp_flags: if h.proto == wire::PROTO_TCP {
                flags
                    .iter()
                    .filter(|(bit, _)| h.tcp_flags & bit != 0)
                    .map(|(_, n)| n.to_string())
                    .collect()
            } else {
                Vec::new()
            },
            icmp: (h.proto == wire::PROTO_ICMP).then_some(Icmp {
                icmp_type: h.icmp_type,
                code: h.icmp_code,
            }),
            quoted: h
                .inner
                .map(|q| TupleDoc::new(q.proto, (q.src, q.sport), (q.dst, q.dport))),
            text: h.to_string(),
        }
    }
}

/// One step of a leg: a host's handling, or something between hosts.
// A document is built once and written; boxing the big variant buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum LegStepDoc {
    /// A host received (or sent) the packet and ran its hooks.
    Hop {
        host: String,
        /// The interface it arrived on; `null` when the host sent it.
        in_interface: Option<String>,
        packet: Packet,
        /// For a VXLAN outer packet: the packet inside.
        #[serde(skip_serializing_if = "Option::is_none")]
        carrying: Option<Packet>,
        events: Vec<HookEvent>,
        outcome: HopOutcome,
    },
    /// Encapsulated in VXLAN on the host's `flannel.1`.
    VxlanEncapsulate { host: String, outer: Packet },
    /// Decapsulated on the host.
    VxlanDecapsulate { host: String, inner: Packet },
    /// A load balancer handed it to one of its eligible nodes.
    LoadBalancer {
        #[schemars(with = "String")]
        frontend: Ipv4Addr,
        node: String,
        eligible_nodes: usize,
        /// The packet as a `nodePort`-delivery load balancer rewrote it.
        rewritten: Option<Packet>,
    },
    /// The load balancer rewrote a reply back to the client.
    LoadBalancerReply { rewritten: Packet },
}

/// How a host's handling ended.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum HopOutcome {
    /// Taken by the host itself (a socket, or decapsulation).
    Local {
        packet: Packet,
    },
    /// Sent out of an interface.
    Transmit {
        packet: Packet,
        out_interface: String,
        #[schemars(with = "String")]
        nexthop: Ipv4Addr,
    },
    /// Dropped or rejected by netfilter.
    Dropped {
        hook: String,
        /// The iptables table (`filter`), or the nftables table and base
        /// chain (`ip kube-proxy filter-input`).
        table: String,
        reason: DropCause,
        /// The rule that decided, where a rule did.
        rule: Option<DecidingRule>,
    },
    NoRoute {
        packet: Packet,
    },
    /// Refused by the route lookup for its addresses (a martian).
    Martian {
        /// `source` or `destination`: the address at fault.
        address: String,
        /// Why, in plain words.
        reason: String,
        packet: Packet,
    },
    /// Not for this host, and it does not forward.
    NotForwarded,
}

/// Why netfilter dropped a packet.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "cause", rename_all = "kebab-case")]
pub enum DropCause {
    /// The built-in chain's policy.
    Policy,
    /// A `-j DROP` rule.
    Rule,
    /// A `-j REJECT` rule: what it answers with.
    Reject {
        with: String,
    },
    NoMasqueradeAddress,
    NoFreePort,
    ConfirmClash,
    NattedRedirect,
}

/// The rule whose target ended a packet's way.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct DecidingRule {
    /// The host whose rule it is.
    pub host: String,
    pub hook: String,
    /// The iptables table (`filter`) or nftables table (`ip kube-proxy`).
    pub table: String,
    pub chain: String,
    /// The rule's line in that node's `kpsim rules` output (`iptables-save`
    /// or `nft list ruleset`); 0 when unknown.
    pub line: usize,
    /// The rule as `iptables-save` or `nft list ruleset` prints it, or the
    /// chain's policy (`:FORWARD DROP`).
    pub rule: String,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// A chain policy rather than a rule.
    pub policy: bool,
    /// `iptables` or `nftables`: the syntax of `rule`.
    pub language: String,
}

impl DecidingRule {
    fn of(cluster: &Cluster, r: &RuleRef) -> DecidingRule {
        DecidingRule {
            host: cluster.host_name(r.host).to_string(),
            hook: r.hook.chain().to_string(),
            table: r.table.clone(),
            chain: r.chain.clone(),
            line: r.line,
            rule: r.text.clone(),
            comment: r.comment.clone(),
            policy: r.policy,
            language: match r.language {
                RuleLanguage::Iptables => "iptables",
                RuleLanguage::Nftables => "nftables",
            }
            .into(),
        }
    }
}

/// Something a host's netfilter did to the packet.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum HookEvent {
    /// A table ran at a hook.
    Table {
        hook: String,
        table: String,
        verdict: TableVerdictDoc,
        rules: Vec<RuleStep>,
    },
    /// An nftables base chain ran at a hook (at its priority).
    Chain {
        hook: String,
        priority: i32,
        /// The table with its family (`ip kube-proxy`).
        table: String,
        chain: String,
        verdict: TableVerdictDoc,
        steps: Vec<ChainStepDoc>,
    },
    /// The nat table was skipped: not the connection's first packet.
    NatSkipped { hook: String },
    /// The conntrack lookup.
    Conntrack { hook: String, found: ConntrackFound },
    /// A NAT rewrite.
    Nat {
        hook: String,
        kind: NatRewrite,
        before: Packet,
        after: Packet,
    },
    /// A routing decision.
    Route { route: RouteDoc, reroute: bool },
    /// The connection entered the conntrack table.
    ConntrackConfirmed { connection: Connection },
    /// The first packet's entry clashed with another and was dropped.
    ConntrackClash { connection: Connection },
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum TableVerdictDoc {
    Accept,
    Drop,
    Reject {
        with: String,
    },
    Dnat {
        to: Vec<NatTarget>,
    },
    Snat {
        to: Vec<NatTarget>,
    },
    Masquerade {
        to_ports: Option<PortRangeDoc>,
        random: bool,
        random_fully: bool,
    },
}

/// `--to-destination`/`--to-source` ADDR[-ADDR][:PORT[-PORT]].
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct NatTarget {
    #[schemars(with = "String")]
    pub first_address: Ipv4Addr,
    #[schemars(with = "String")]
    pub last_address: Ipv4Addr,
    pub ports: Option<PortRangeDoc>,
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
pub struct PortRangeDoc {
    pub first: u16,
    pub last: u16,
}

#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NatRewrite {
    /// The nat table's DNAT on a new connection.
    Dnat,
    /// The nat table's SNAT or MASQUERADE on a new connection.
    Snat,
    /// A destination rewritten from the stored binding.
    ConntrackDestination,
    /// A source rewritten from the stored binding.
    ConntrackSource,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum ConntrackFound {
    New,
    Existing {
        id: u64,
        direction: String,
        ct_state: String,
    },
    Invalid,
    Untracked,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "to", rename_all = "kebab-case")]
pub enum RouteDoc {
    Local,
    Forward {
        out_interface: String,
        #[schemars(with = "String")]
        nexthop: Ipv4Addr,
    },
    Unreachable,
    /// Refused for its addresses: `address` (`source` or `destination`)
    /// is at fault, for `reason`.
    Martian {
        address: String,
        reason: String,
    },
}

/// One step of an nftables chain walk.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ChainStepDoc {
    /// A rule whose matches held.
    Rule {
        chain: String,
        /// 1-based position in its chain.
        rule_number: usize,
        line: usize,
        rule: String,
    },
    /// A rule that did not match, and why (`--explain-misses`).
    Missed {
        chain: String,
        rule_number: usize,
        line: usize,
        why: String,
    },
    /// A set or map lookup that decided: the key the packet gave and the
    /// element it found (`null`: none).
    Lookup {
        set: String,
        key: String,
        element: Option<String>,
    },
    /// `numgen random mod N`: the value drawn, with its probability.
    Random {
        chain: String,
        rule_number: usize,
        value: u32,
        modulus: u32,
        probability: Chance,
    },
    Return {
        from: String,
        to: String,
    },
    Policy {
        chain: String,
        policy: String,
    },
    MarkSet {
        from: u32,
        to: u32,
    },
    ConnmarkSet {
        from: u32,
        to: u32,
    },
    /// `update @set { key }`.
    SetUpdate {
        set: String,
        key: String,
    },
    Log {
        prefix: String,
    },
    Notrack,
}

/// A conntrack entry.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Connection {
    pub id: u64,
    pub original: TupleDoc,
    pub reply: TupleDoc,
    pub dnat: bool,
    pub snat: bool,
    /// As `conntrack -L` would show it, roughly.
    pub text: String,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TupleDoc {
    pub protocol: String,
    pub source: SocketAddress,
    pub destination: SocketAddress,
}

impl TupleDoc {
    /// A protocol with its two ends; ports only for protocols that have
    /// them.
    fn new(proto: u8, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> TupleDoc {
        let ports = matches!(proto, wire::PROTO_TCP | wire::PROTO_UDP | wire::PROTO_SCTP);
        TupleDoc {
            protocol: wire::proto_name(proto),
            source: SocketAddress {
                address: src.0,
                port: ports.then_some(src.1),
            },
            destination: SocketAddress {
                address: dst.0,
                port: ports.then_some(dst.1),
            },
        }
    }

    fn of(t: &Tuple) -> TupleDoc {
        TupleDoc::new(t.proto, (t.src, t.sport), (t.dst, t.dport))
    }
}

/// One step of a table's walk.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RuleStep {
    /// A rule whose matches all held.
    Matched {
        chain: String,
        /// 1-based position in its chain.
        rule_number: usize,
        line: usize,
        rule: String,
        comment: Option<String>,
    },
    /// A rule that did not match, and why (`--explain-misses`).
    Missed {
        chain: String,
        rule_number: usize,
        line: usize,
        why: String,
    },
    /// A `statistic --mode random` decision.
    Random {
        chain: String,
        rule_number: usize,
        probability: Chance,
        matched: bool,
    },
    Return {
        from: String,
        to: String,
    },
    Policy {
        chain: String,
        policy: String,
    },
    MarkSet {
        from: u32,
        to: u32,
    },
    ConnmarkSet {
        from: u32,
        to: u32,
    },
    Log {
        target: String,
        prefix: String,
    },
    Notrack,
    RecentSet {
        name: String,
        #[schemars(with = "String")]
        address: Ipv4Addr,
    },
}

/// The JSON document of a traced sequence of flows.
pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> TraceDocument {
    let flows = results.first().map_or(0, |(_, f)| f.len());
    let info = |j: usize| {
        let label = labels.get(j).cloned().unwrap_or_default();
        let sent = &results[0].1[j].sent;
        FlowInfo {
            from: label.from,
            to: label.to,
            protocol: sent.proto_name(),
            src: source(sent),
            dst: destination(sent),
        }
    };
    let outcomes = results
        .iter()
        .map(|(p, fl)| {
            let mut per_flow = fl.iter().map(|r| flow_outcome(cluster, r));
            TraceOutcome {
                probability: p.to_f64(),
                probability_exact: p.exact_string(),
                result: per_flow.next().expect("a run has at least one flow"),
                then: per_flow.collect(),
            }
        })
        .collect();
    TraceDocument {
        flow: info(0),
        then: (1..flows).map(info).collect(),
        outcomes,
    }
}

fn flow_outcome(cluster: &Cluster, r: &FlowResult) -> FlowOutcome {
    FlowOutcome {
        summary: OutcomeSummary::of(cluster, r),
        hops: leg(cluster, &r.forward),
        reply_hops: r.reply.as_ref().map(|l| leg(cluster, l)),
        notes: r.notes.iter().map(|n| n.to_string()).collect(),
    }
}

fn leg(cluster: &Cluster, leg: &Leg) -> Vec<LegStepDoc> {
    leg.steps
        .iter()
        .map(|s| match s {
            LegStep::Hop(h) => hop(cluster, h),
            LegStep::Link(l) => link(cluster, l),
        })
        .collect()
}

fn link(cluster: &Cluster, l: &LinkEvent) -> LegStepDoc {
    let name = |h: usize| cluster.host_name(h).to_string();
    match l {
        LinkEvent::Encapsulated { host, outer } => LegStepDoc::VxlanEncapsulate {
            host: name(*host),
            outer: Packet::of(outer),
        },
        LinkEvent::Decapsulated { host, inner } => LegStepDoc::VxlanDecapsulate {
            host: name(*host),
            inner: Packet::of(inner),
        },
        LinkEvent::LoadBalanced {
            frontend,
            node,
            of,
            rewritten,
        } => LegStepDoc::LoadBalancer {
            frontend: *frontend,
            node: name(*node),
            eligible_nodes: *of,
            rewritten: rewritten.as_ref().map(Packet::of),
        },
        LinkEvent::LoadBalancerReply { rewritten } => LegStepDoc::LoadBalancerReply {
            rewritten: Packet::of(rewritten),
        },
    }
}

fn hop(cluster: &Cluster, h: &Hop) -> LegStepDoc {
    let engine = &cluster.engines[h.host];
    let outcome = match &h.outcome {
        Outcome::Local(p) => HopOutcome::Local {
            packet: Packet::of(p),
        },
        Outcome::Transmit {
            headers,
            out_iface,
            nexthop,
        } => HopOutcome::Transmit {
            packet: Packet::of(headers),
            out_interface: out_iface.clone(),
            nexthop: *nexthop,
        },
        Outcome::Dropped {
            hook,
            table,
            reason,
        } => HopOutcome::Dropped {
            hook: hook.chain().to_string(),
            table: table.to_string(),
            reason: drop_cause(reason),
            rule: match table {
                ChainSite::Iptables(t) => RuleRef::last_in(engine, h.host, &h.events, *hook, *t),
                ChainSite::Chain { table, chain } => {
                    RuleRef::last_in_chain(h.host, &h.events, *hook, table, chain)
                }
            }
            .map(|r| DecidingRule::of(cluster, &r)),
        },
        Outcome::NoRoute(p) => HopOutcome::NoRoute {
            packet: Packet::of(p),
        },
        Outcome::Martian(m, p) => HopOutcome::Martian {
            address: m.side().to_string(),
            reason: m.why().to_string(),
            packet: Packet::of(p),
        },
        Outcome::NotForwarded => HopOutcome::NotForwarded,
    };
    LegStepDoc::Hop {
        host: cluster.host_name(h.host).to_string(),
        in_interface: h.in_iface.clone(),
        packet: Packet::of(&h.packet),
        carrying: h.carrying.as_ref().map(Packet::of),
        events: h.events.iter().map(|e| event(engine, e)).collect(),
        outcome,
    }
}

fn drop_cause(r: &DropReason) -> DropCause {
    match r {
        DropReason::Policy => DropCause::Policy,
        DropReason::Rule => DropCause::Rule,
        DropReason::Reject { with, .. } => DropCause::Reject {
            with: with.as_str().into(),
        },
        DropReason::NoMasqueradeAddress => DropCause::NoMasqueradeAddress,
        DropReason::NoFreePort => DropCause::NoFreePort,
        DropReason::ConfirmClash => DropCause::ConfirmClash,
        DropReason::NattedRedirect => DropCause::NattedRedirect,
    }
}

fn comment(rule: &crate::netfilter::Rule) -> Option<String> {
    rule.matches.iter().find_map(|m| match &m.kind {
        crate::netfilter::MatchKind::Comment(c) => Some(c.clone()),
        _ => None,
    })
}

fn event(engine: &Engine, e: &Event) -> HookEvent {
    match e {
        Event::Table {
            hook,
            table,
            steps,
            verdict,
        } => HookEvent::Table {
            hook: hook.chain().to_string(),
            table: table.as_str().to_string(),
            verdict: table_verdict(verdict),
            rules: steps
                .iter()
                .filter_map(|s| step(engine, *table, s))
                .collect(),
        },
        Event::Chain(run) => chain_run(run),
        Event::NatSkipped { hook } => HookEvent::NatSkipped {
            hook: hook.chain().to_string(),
        },
        Event::Conntrack { hook, found } => HookEvent::Conntrack {
            hook: hook.chain().to_string(),
            found: match found {
                CtFound::New => ConntrackFound::New,
                CtFound::Existing { id, dir, state } => ConntrackFound::Existing {
                    id: *id,
                    direction: match dir {
                        Direction::Original => "original",
                        Direction::Reply => "reply",
                    }
                    .into(),
                    ct_state: ct_state(*state).into(),
                },
                CtFound::Invalid => ConntrackFound::Invalid,
                CtFound::Untracked => ConntrackFound::Untracked,
            },
        },
        Event::Nat {
            hook,
            kind,
            before,
            after,
        } => HookEvent::Nat {
            hook: hook.chain().to_string(),
            kind: match kind {
                NatKind::Dnat => NatRewrite::Dnat,
                NatKind::Snat => NatRewrite::Snat,
                NatKind::DnatFromConntrack => NatRewrite::ConntrackDestination,
                NatKind::SnatFromConntrack => NatRewrite::ConntrackSource,
            },
            before: Packet::of(before),
            after: Packet::of(after),
        },
        Event::Routed { route, reroute } => HookEvent::Route {
            route: match route {
                Route::Local => RouteDoc::Local,
                Route::Forward { out_iface, nexthop } => RouteDoc::Forward {
                    out_interface: out_iface.clone(),
                    nexthop: *nexthop,
                },
                Route::Unreachable => RouteDoc::Unreachable,
                Route::Martian(m) => RouteDoc::Martian {
                    address: m.side().to_string(),
                    reason: m.why().to_string(),
                },
            },
            reroute: *reroute,
        },
        Event::Confirmed { conn } => HookEvent::ConntrackConfirmed {
            connection: connection(conn),
        },
        Event::ConfirmFailed { conn } => HookEvent::ConntrackClash {
            connection: connection(conn),
        },
    }
}

fn ct_state(s: State) -> &'static str {
    s.as_str()
}

fn connection(c: &crate::conntrack::Conn) -> Connection {
    Connection {
        id: c.id,
        original: TupleDoc::of(&c.original),
        reply: TupleDoc::of(&c.reply),
        dnat: c.is_dnat(),
        snat: c.is_snat(),
        text: c.to_string(),
    }
}

fn table_verdict(v: &TableVerdict) -> TableVerdictDoc {
    let targets = |spec: &crate::netfilter::NatSpec| {
        spec.ranges
            .iter()
            .map(|r| NatTarget {
                first_address: r.first_addr,
                last_address: r.last_addr,
                ports: r.ports.map(|p| PortRangeDoc {
                    first: p.first,
                    last: p.last,
                }),
            })
            .collect()
    };
    match v {
        TableVerdict::Accept => TableVerdictDoc::Accept,
        TableVerdict::Drop => TableVerdictDoc::Drop,
        TableVerdict::Reject(w) => TableVerdictDoc::Reject {
            with: w.as_str().into(),
        },
        TableVerdict::Nat(NatAction::Dnat(spec)) => TableVerdictDoc::Dnat { to: targets(spec) },
        TableVerdict::Nat(NatAction::Snat(spec)) => TableVerdictDoc::Snat { to: targets(spec) },
        TableVerdict::Nat(NatAction::Masquerade {
            to_ports,
            random,
            random_fully,
        }) => TableVerdictDoc::Masquerade {
            to_ports: to_ports.map(|p| PortRangeDoc {
                first: p.first,
                last: p.last,
            }),
            random: *random,
            random_fully: *random_fully,
        },
    }
}

fn step(engine: &Engine, table: TableName, s: &Step) -> Option<RuleStep> {
    Some(match s {
        Step::EnterChain { .. } => return None,
        Step::Matched {
            chain, index, line, ..
        } => {
            let rule = engine.rule(table, chain, *index);
            RuleStep::Matched {
                chain: chain.clone(),
                rule_number: index + 1,
                line: *line,
                rule: rule.map(|r| r.to_iptables_save(chain)).unwrap_or_default(),
                comment: rule.and_then(comment),
            }
        }
        Step::Missed {
            chain,
            index,
            line,
            why,
            ..
        } => RuleStep::Missed {
            chain: chain.clone(),
            rule_number: index + 1,
            line: *line,
            why: why.clone(),
        },
        Step::Random {
            chain,
            index,
            probability,
            matched,
        } => RuleStep::Random {
            chain: chain.clone(),
            rule_number: index + 1,
            probability: Chance::of(probability),
            matched: *matched,
        },
        Step::Return { from, to, .. } => RuleStep::Return {
            from: from.clone(),
            to: to.clone(),
        },
        Step::Policy { chain, policy, .. } => RuleStep::Policy {
            chain: chain.clone(),
            policy: match policy {
                Policy::Accept => "ACCEPT",
                Policy::Drop => "DROP",
            }
            .into(),
        },
        Step::MarkSet { from, to } => RuleStep::MarkSet {
            from: *from,
            to: *to,
        },
        Step::ConnMarkSet { from, to } => RuleStep::ConnmarkSet {
            from: *from,
            to: *to,
        },
        Step::Log { target, prefix } => RuleStep::Log {
            target: target.to_string(),
            prefix: prefix.clone(),
        },
        Step::Notrack => RuleStep::Notrack,
        Step::RecentSet { name, addr } => RuleStep::RecentSet {
            name: name.clone(),
            address: *addr,
        },
    })
}

fn chain_run(run: &ChainRun) -> HookEvent {
    HookEvent::Chain {
        hook: run.hook.chain().to_string(),
        priority: run.priority,
        table: run.table.clone(),
        chain: run.chain.clone(),
        verdict: table_verdict(&run.verdict),
        steps: run.steps.iter().filter_map(chain_step).collect(),
    }
}

fn chain_step(s: &ChainStep) -> Option<ChainStepDoc> {
    Some(match s {
        ChainStep::Enter { .. } => return None,
        ChainStep::Rule {
            chain,
            index,
            line,
            text,
        } => ChainStepDoc::Rule {
            chain: chain.clone(),
            rule_number: index + 1,
            line: *line,
            rule: text.to_string(),
        },
        ChainStep::Missed {
            chain,
            index,
            line,
            why,
        } => ChainStepDoc::Missed {
            chain: chain.clone(),
            rule_number: index + 1,
            line: *line,
            why: why.clone(),
        },
        ChainStep::Lookup { set, key, element } => ChainStepDoc::Lookup {
            set: set.clone(),
            key: key.clone(),
            element: element.clone(),
        },
        ChainStep::Random {
            chain,
            index,
            value,
            modulus,
            probability,
        } => ChainStepDoc::Random {
            chain: chain.clone(),
            rule_number: index + 1,
            value: *value,
            modulus: *modulus,
            probability: Chance::of(probability),
        },
        ChainStep::Return { from, to } => ChainStepDoc::Return {
            from: from.clone(),
            to: to.clone(),
        },
        ChainStep::Policy { chain, policy } => ChainStepDoc::Policy {
            chain: chain.clone(),
            policy: match policy {
                Policy::Accept => "accept",
                Policy::Drop => "drop",
            }
            .into(),
        },
        ChainStep::MarkSet { from, to } => ChainStepDoc::MarkSet {
            from: *from,
            to: *to,
        },
        ChainStep::ConnMarkSet { from, to } => ChainStepDoc::ConnmarkSet {
            from: *from,
            to: *to,
        },
        ChainStep::SetUpdate { set, key } => ChainStepDoc::SetUpdate {
            set: set.clone(),
            key: key.clone(),
        },
        ChainStep::Log { prefix } => ChainStepDoc::Log {
            prefix: prefix.clone(),
        },
        ChainStep::Notrack => ChainStepDoc::Notrack,
    })
}
