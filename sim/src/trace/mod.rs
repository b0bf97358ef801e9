//! A packet's way across the simulated hosts, and its reply's way back.
//!
//! [`Cluster`] is the compiled world (the network plus each host's loaded
//! ruleset); [`World`] is the mutable state one run carries (conntrack
//! tables, `recent` lists, load-balancer sessions), so a sequence of flows
//! shares it and later packets see what earlier ones left.
//!
//! A flow is traced as two legs:
//! 1. the request: the sender's stack (OUTPUT, routing, POSTROUTING), the
//!    link, each host it crosses (PREROUTING, routing, FORWARD or INPUT,
//!    POSTROUTING), VXLAN encapsulation as its own outer packet, until a
//!    socket takes it or something ends it;
//! 2. the reply, sent by the receiving socket to the address it saw, back
//!    through every host's conntrack, and judged: did it reach the sender
//!    with the tuple the sender expects?
//!
//! Every random decision goes through the [`Chooser`]; [`trace`] enumerates
//! all of them with exact probabilities, [`trace_seeded`] follows one.

pub mod json;
pub mod minimal;
pub mod pcapng;
pub mod summary;
pub mod text;

use crate::netfilter::{
    BaseChains, ChainSite, ChainStep, DropReason, Engine, EvalError, EvalOptions, Event, Hook,
    HostState, Martian, Outcome, Policy, RejectWith, Stack, Step, TableName, TableVerdict,
};
use crate::network::{Arrival, Delivery, HostKind, HttpAnswer, Network};
use crate::prob::{enumerate, ChoicePoint, Chooser, Probability, SeededChooser};
use crate::routing::HostNet;
use crate::wire::{
    self, Headers, ICMP_DEST_UNREACH, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_RST, TCP_SYN, VXLAN_PORT,
};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A leg longer than this is a forwarding loop.
pub const MAX_HOPS: usize = 64;

/// The default source port of the first flow; flow `i` of a sequence uses
/// `DEFAULT_SOURCE_PORT + i` unless given.
pub const DEFAULT_SOURCE_PORT: u16 = 40000;

/// The compiled world: hosts, links and rules.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub network: Network,
    /// One loaded ruleset per host (empty for pods and externals).
    pub engines: Vec<Engine>,
    /// Each host's nftables ruleset, if it has one (nodes in nftables
    /// mode).
    pub nft: Vec<Option<std::sync::Arc<crate::nftables::Engine>>>,
    /// Evaluation options for every host.
    pub opts: EvalOptions,
}

/// What one run carries from flow to flow.
///
/// A host's netfilter state exists from the first packet it handles: a
/// flow touches a few hosts of thousands, and a matrix starts a fresh
/// world for every path of every cell, so a world made of every host's
/// empty state up front would cost more than the tracing itself.
#[derive(Clone, Debug)]
pub struct World {
    /// The states of the hosts that have handled a packet, by host.
    hosts: BTreeMap<usize, HostState>,
    /// The simulated time of the flow being run.
    now: u64,
    lb_sessions: Vec<LbSession>,
}

impl World {
    /// Host `host`'s state: empty conntrack table, no `recent` entries,
    /// its own port seed, until a packet changes it.
    pub fn host(&mut self, host: usize) -> &mut HostState {
        let now = self.now;
        self.hosts.entry(host).or_insert_with(|| {
            let mut state = HostState {
                port_seed: host as u64,
                ..HostState::default()
            };
            state.matches.now = now;
            state
        })
    }

    /// Set the simulated clock every host's matches read.
    fn set_now(&mut self, now: u64) {
        self.now = now;
        for h in self.hosts.values_mut() {
            h.matches.now = now;
        }
    }
}

/// A connection a `nodePort`-delivery load balancer opened on a client's
/// behalf.
#[derive(Clone, Debug)]
struct LbSession {
    /// The LB's packet toward the node.
    backend: Headers,
    /// The client's packet to the frontend.
    client: Headers,
}

impl Cluster {
    /// A fresh world: empty conntrack tables, no `recent` entries.
    pub fn world(&self) -> World {
        World {
            hosts: BTreeMap::new(),
            now: 0,
            lb_sessions: Vec::new(),
        }
    }

    /// The rule languages loaded on `host`, iptables first, as the hooks
    /// take them.
    pub fn rulesets(&self, host: usize) -> Vec<&dyn BaseChains> {
        let mut v = vec![&self.engines[host] as &dyn BaseChains];
        if let Some(n) = self.nft.get(host).and_then(|n| n.as_deref()) {
            v.push(n);
        }
        v
    }

    pub fn host_name(&self, host: usize) -> &str {
        &self.network.hosts[host].name
    }
}

/// One flow to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The sending host.
    pub from: usize,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub dport: u16,
    /// `None`: [`DEFAULT_SOURCE_PORT`] (+ the flow's position in a sequence).
    pub sport: Option<u16>,
    /// Seconds since the start of the run (for `recent` timeouts).
    pub at: u64,
}

/// How a leg ended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Delivered,
    Dropped,
    Rejected,
    NoRoute,
    ClosedPort,
    Loop,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Delivered => "delivered",
            Verdict::Dropped => "dropped",
            Verdict::Rejected => "rejected",
            Verdict::NoRoute => "no-route",
            Verdict::ClosedPort => "closed-port",
            Verdict::Loop => "loop",
        }
    }
}

/// One host's handling of the packet.
#[derive(Clone, Debug, PartialEq)]
pub struct Hop {
    pub host: usize,
    /// `None` when the host itself sends the packet.
    pub in_iface: Option<String>,
    /// The packet as it arrived (or as sent).
    pub packet: Headers,
    pub events: Vec<Event>,
    pub outcome: Outcome,
    /// For a VXLAN outer packet: the inner packet it carries.
    pub carrying: Option<Headers>,
}

/// Something that happens between hosts.
#[derive(Clone, Debug, PartialEq)]
pub enum LinkEvent {
    /// VXLAN encapsulation on `host`'s `flannel.1`.
    Encapsulated { host: usize, outer: Headers },
    /// Decapsulation on `host`.
    Decapsulated { host: usize, inner: Headers },
    /// A load balancer handed the packet to `node`, one of `of` eligible
    /// nodes.
    LoadBalanced {
        frontend: Ipv4Addr,
        node: usize,
        of: usize,
        rewritten: Option<Headers>,
    },
    /// The load balancer's reply rewrite back to the client.
    LoadBalancerReply { rewritten: Headers },
}

#[derive(Clone, Debug, PartialEq)]
pub enum LegStep {
    Hop(Hop),
    Link(LinkEvent),
}

/// The rule, or built-in chain policy, that decided a table's verdict,
/// told so that a reader finds it in that host's `iptables-save` output
/// (`kpsim rules --node HOST`).
#[derive(Clone, Debug, PartialEq)]
pub struct RuleRef {
    pub host: usize,
    pub hook: Hook,
    /// The table: an iptables table's name (`filter`), or an nftables
    /// table with its family (`ip kube-proxy`).
    pub table: String,
    /// The chain holding the rule (the built-in chain for a policy).
    pub chain: String,
    /// The rule as `iptables-save` prints it (`-A CHAIN ... -j DROP`), or
    /// a policy's declaration (`:FORWARD DROP`).
    pub text: String,
    /// Its 1-based line in the host's `iptables-save` output; 0 when the
    /// rules carry no lines.
    pub line: usize,
    /// The rule's `--comment`: its author's words for why it exists.
    pub comment: Option<String>,
    /// The target's name (`DROP`, `REJECT`, `DNAT`, a chain), or the
    /// policy's verdict; `None` for a rule without a target.
    pub target: Option<String>,
    /// A chain policy rather than a rule.
    pub policy: bool,
    /// The rule language: `text` is `iptables-save` or `nft list ruleset`
    /// syntax.
    pub language: RuleLanguage,
}

/// The language a [`RuleRef`]'s text is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleLanguage {
    Iptables,
    Nftables,
}

impl RuleRef {
    /// What decided the walk of `table` at `hook` whose steps are `steps`,
    /// on `host` whose rules `engine` holds.
    pub fn deciding(
        engine: &Engine,
        host: usize,
        hook: Hook,
        table: TableName,
        steps: &[Step],
    ) -> Option<RuleRef> {
        RuleRef::of_step(engine, host, hook, table, Step::deciding(steps)?)
    }

    /// The rule a matched step, or the policy a policy step, refers to.
    pub fn of_step(
        engine: &Engine,
        host: usize,
        hook: Hook,
        table: TableName,
        step: &Step,
    ) -> Option<RuleRef> {
        match step {
            Step::Matched {
                chain, index, line, ..
            } => {
                let rule = engine.rule(table, chain, *index)?;
                Some(RuleRef {
                    host,
                    hook,
                    table: table.as_str().to_string(),
                    chain: chain.clone(),
                    text: rule.to_iptables_save(chain),
                    line: *line,
                    comment: rule.comment().map(str::to_string),
                    target: rule.target.as_ref().map(|t| t.name().to_string()),
                    policy: false,
                    language: RuleLanguage::Iptables,
                })
            }
            Step::Policy { chain, policy, .. } => {
                let verdict = match policy {
                    Policy::Accept => "ACCEPT",
                    Policy::Drop => "DROP",
                };
                Some(RuleRef {
                    host,
                    hook,
                    table: table.as_str().to_string(),
                    chain: chain.clone(),
                    text: format!(":{chain} {verdict}"),
                    line: engine.chain(table, chain).map_or(0, |c| c.line),
                    comment: None,
                    target: Some(verdict.to_string()),
                    policy: true,
                    language: RuleLanguage::Iptables,
                })
            }
            _ => None,
        }
    }

    /// What decided the last walk of `table` at `hook` among a hop's
    /// events.
    pub fn last_in(
        engine: &Engine,
        host: usize,
        events: &[Event],
        hook: Hook,
        table: TableName,
    ) -> Option<RuleRef> {
        events.iter().rev().find_map(|e| match e {
            Event::Table {
                hook: h,
                table: t,
                steps,
                ..
            } if *h == hook && *t == table => RuleRef::deciding(engine, host, hook, table, steps),
            _ => None,
        })
    }

    /// The rule whose NAT statement set up the binding that a hop's `Nat`
    /// event at `hook` applied: the last walk at that hook, iptables nat
    /// table or nftables base chain, that ended in NAT.
    pub fn nat_rule(engine: &Engine, host: usize, events: &[Event], hook: Hook) -> Option<RuleRef> {
        events.iter().rev().find_map(|e| match e {
            Event::Table {
                hook: h,
                table,
                steps,
                verdict: TableVerdict::Nat(_),
            } if *h == hook => RuleRef::deciding(engine, host, hook, *table, steps),
            Event::Chain(run)
                if run.hook == hook && matches!(run.verdict, TableVerdict::Nat(_)) =>
            {
                RuleRef::last_in_chain(host, std::slice::from_ref(e), hook, &run.table, &run.chain)
            }
            _ => None,
        })
    }

    /// What the rule is for, in its author's words: its comment, or (an
    /// nftables rule without one) the chain holding it, whose name
    /// kube-proxy makes from the service port.
    pub fn purpose(&self) -> Option<&str> {
        self.comment
            .as_deref()
            .or_else(|| (self.language == RuleLanguage::Nftables).then_some(self.chain.as_str()))
    }

    /// What decided the last walk of the nftables base chain `chain` of
    /// `table` at `hook` among a hop's events: its last matched rule, or
    /// the base chain's policy.
    pub fn last_in_chain(
        host: usize,
        events: &[Event],
        hook: Hook,
        table: &str,
        chain: &str,
    ) -> Option<RuleRef> {
        let run = events.iter().rev().find_map(|e| match e {
            Event::Chain(run) if run.hook == hook && run.table == table && run.chain == chain => {
                Some(run)
            }
            _ => None,
        })?;
        let at = |chain: &str, text: String, line, policy, target: Option<String>| RuleRef {
            host,
            hook,
            table: table.to_string(),
            chain: chain.to_string(),
            comment: nft_comment(&text),
            text,
            line,
            target,
            policy,
            language: RuleLanguage::Nftables,
        };
        run.steps.iter().rev().find_map(|s| match s {
            ChainStep::Rule {
                chain, text, line, ..
            } => Some(at(chain, text.to_string(), *line, false, nft_verb(text))),
            ChainStep::Policy { chain, policy } => {
                let verdict = match policy {
                    Policy::Accept => "accept",
                    Policy::Drop => "drop",
                };
                Some(at(
                    chain,
                    format!("chain {chain} {{ policy {verdict}; }}"),
                    0,
                    true,
                    Some(verdict.to_string()),
                ))
            }
            _ => None,
        })
    }
}

/// The verdict or NAT statement an nftables rule ends in, named as its
/// iptables twin is (`DNAT`, `MASQUERADE`, `DROP`, a jumped-to chain), so
/// that both languages read alike in traces.
fn nft_verb(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words.iter().enumerate().rev().find_map(|(i, w)| {
        Some(match *w {
            "dnat" => "DNAT".to_string(),
            "snat" => "SNAT".to_string(),
            "masquerade" => "MASQUERADE".to_string(),
            "drop" => "DROP".to_string(),
            "reject" => "REJECT".to_string(),
            "accept" => "ACCEPT".to_string(),
            "return" => "RETURN".to_string(),
            "jump" | "goto" => words.get(i + 1)?.to_string(),
            "vmap" => "vmap".to_string(),
            _ => return None,
        })
    })
}

/// The `comment "..."` of a rule as `nft` prints it.
fn nft_comment(text: &str) -> Option<String> {
    let (_, rest) = text.split_once(" comment \"")?;
    Some(rest.split_once('"').map_or(rest, |(c, _)| c).to_string())
}

impl std::fmt::Display for RuleRef {
    /// `-A CHAIN ... -j DROP (line 33)`; a policy reads `policy :FORWARD
    /// DROP (line 5)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.policy {
            f.write_str("policy ")?;
        }
        f.write_str(&self.text)?;
        if self.line > 0 {
            write!(f, " (line {})", self.line)?;
        }
        Ok(())
    }
}

/// One direction of a flow.
#[derive(Clone, Debug, PartialEq)]
pub struct Leg {
    pub steps: Vec<LegStep>,
    pub verdict: Verdict,
    /// Plain words: why it ended so. A drop or reject by a rule or policy
    /// quotes it, as [`Leg::ended_by`] holds it.
    pub reason: String,
    /// The rule or policy that dropped or rejected the packet (also for a
    /// NAT rule whose translation failed); `None` when no rule ended the
    /// leg.
    pub ended_by: Option<RuleRef>,
    /// Where it ended and how the packet looked there.
    pub end: Option<(usize, Headers)>,
    /// The pod whose socket took it (request legs).
    pub socket: Option<String>,
    /// What the host that ended the leg sends back to the sender: a
    /// REJECT's ICMP error or TCP reset (`(host, packet)`).
    pub answer: Option<(usize, Headers)>,
    /// What the listener that took it answers, where kpsim models it
    /// (kube-proxy's health checks).
    pub served: Option<HttpAnswer>,
}

/// The result of one flow along one path of random choices.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowResult {
    pub flow: Flow,
    /// The packet as the sender built it.
    pub sent: Headers,
    pub forward: Leg,
    pub reply: Option<Leg>,
    /// `Some(true)` when the reply reached the sender with the expected
    /// tuple; `None` when there was nothing to reply to.
    pub reply_ok: Option<bool>,
    pub reply_reason: String,
    /// What is true of this flow on a real kernel beyond its hops.
    pub notes: Vec<Note>,
}

/// Something a real kernel does to a flow that the hops do not show.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Note {
    /// The refusal is an ICMP error from `host` to `peer`, and the kernel
    /// rate-limits those (`icmpv4_xrlim_allow`): per peer a token bucket of
    /// `net.ipv4.icmp_ratelimit` ms a token with a burst of six
    /// (`XRLIM_BURST_FACTOR`), and `net.ipv4.icmp_msgs_per_sec` overall.
    /// An error routed to the host itself (through `lo`) is exempt.
    IcmpRateLimit { host: String, peer: Ipv4Addr },
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::IcmpRateLimit { host, peer } => write!(
                f,
                "{host} refuses with an ICMP error to {peer}, and the kernel rate-limits those: one per net.ipv4.icmp_ratelimit (1000 ms) to a peer after a burst of 6, and net.ipv4.icmp_msgs_per_sec (1000) overall; a client refused more often than that sees the other attempts time out"
            ),
        }
    }
}

impl FlowResult {
    /// The pod that received the request.
    pub fn delivered_to(&self) -> Option<&str> {
        self.forward.socket.as_deref()
    }

    /// The packet as the receiving socket saw it.
    pub fn seen(&self) -> Option<Headers> {
        match self.forward.verdict {
            Verdict::Delivered => self.forward.end.map(|(_, h)| h),
            _ => None,
        }
    }

    /// Whether the request's source was translated on the way: a SNAT or
    /// MASQUERADE verdict in some host's nat table, or a `nodePort`-delivery load
    /// balancer opening its own connection. True even when the address the
    /// pod sees happens to equal the sender's (a node masqueraded to its own
    /// address).
    pub fn snat(&self) -> bool {
        self.forward.steps.iter().any(|s| match s {
            // The nat table's verdict, not the rewrite: a MASQUERADE that
            // keeps the address and port changes no byte but is still a
            // source NAT decision.
            LegStep::Hop(h) => h.events.iter().any(|e| {
                matches!(
                    e,
                    Event::Table {
                        verdict: crate::netfilter::TableVerdict::Nat(
                            crate::netfilter::NatAction::Snat(_)
                                | crate::netfilter::NatAction::Masquerade { .. }
                        ),
                        ..
                    }
                )
            }),
            LegStep::Link(LinkEvent::LoadBalanced {
                rewritten: Some(_), ..
            }) => true,
            LegStep::Link(_) => false,
        })
    }

    /// The host (node) whose rules decided where the packet went: the last
    /// host that rewrote its destination, or `None`.
    pub fn decided_by(&self) -> Option<usize> {
        self.forward.steps.iter().rev().find_map(|s| match s {
            LegStep::Hop(h)
                if h.events.iter().any(|e| {
                    matches!(
                        e,
                        Event::Nat {
                            kind: crate::netfilter::NatKind::Dnat,
                            ..
                        }
                    )
                }) =>
            {
                Some(h.host)
            }
            _ => None,
        })
    }
}

/// An error that stops a trace (not a verdict: a broken ruleset).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("on {host}: {source}")]
    Eval { host: String, source: EvalError },
}

enum Action {
    Output(Headers),
    Receive(Headers, String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Request,
    Reply,
}

/// Every outcome of a sequence of flows run in one world, with its exact
/// probability, in deterministic (depth-first, first alternative first)
/// order.
pub fn trace(
    cluster: &Cluster,
    flows: &[Flow],
) -> Result<Vec<(Probability, Vec<FlowResult>)>, TraceError> {
    let runs = enumerate(|chooser| run_sequence(cluster, flows, chooser));
    runs.into_iter()
        .map(|(p, r)| r.map(|results| (p, results)))
        .collect()
}

/// One path of a sequence of flows, drawn with a seeded generator.
pub fn trace_seeded(
    cluster: &Cluster,
    flows: &[Flow],
    seed: u64,
) -> Result<Vec<FlowResult>, TraceError> {
    let mut chooser = SeededChooser::new(seed);
    run_sequence(cluster, flows, &mut chooser)
}

fn run_sequence(
    cluster: &Cluster,
    flows: &[Flow],
    chooser: &mut dyn Chooser,
) -> Result<Vec<FlowResult>, TraceError> {
    let mut world = cluster.world();
    flows
        .iter()
        .enumerate()
        .map(|(i, flow)| run_flow(cluster, &mut world, flow, i, chooser))
        .collect()
}

/// Build the packet a flow's sender puts on the wire.
pub fn build_packet(cluster: &Cluster, flow: &Flow, index: usize) -> Headers {
    let host = &cluster.network.hosts[flow.from];
    let src = host
        .net
        .select_source(flow.dst)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let sport = flow
        .sport
        .unwrap_or(DEFAULT_SOURCE_PORT.wrapping_add(index as u16));
    match flow.proto {
        wire::PROTO_TCP => Headers::tcp(src, sport, flow.dst, flow.dport, TCP_SYN),
        wire::PROTO_UDP => Headers::udp(src, sport, flow.dst, flow.dport),
        wire::PROTO_SCTP => Headers::sctp(src, sport, flow.dst, flow.dport),
        _ => Headers::icmp_echo(src, flow.dst, sport),
    }
}

/// Run one flow in `world`: the request, then the reply.
pub fn run_flow(
    cluster: &Cluster,
    world: &mut World,
    flow: &Flow,
    index: usize,
    chooser: &mut dyn Chooser,
) -> Result<FlowResult, TraceError> {
    world.set_now(flow.at);
    let sent = build_packet(cluster, flow, index);
    let forward = leg(cluster, world, flow.from, sent, Mode::Request, chooser)?;
    let (reply, reply_ok, reply_reason) = match (&forward.verdict, forward.end) {
        (Verdict::Delivered, Some((host, seen))) => {
            let answer = seen.reply();
            let back = leg(cluster, world, host, answer, Mode::Reply, chooser)?;
            let (ok, why) = judge_reply(cluster, flow.from, &sent, &back);
            (Some(back), Some(ok), why)
        }
        (Verdict::Rejected | Verdict::ClosedPort, _) => match forward.answer {
            Some((host, answer)) => {
                let back = leg(cluster, world, host, answer, Mode::Reply, chooser)?;
                let why = judge_refusal(cluster, flow.from, &sent, &back);
                (Some(back), None, why)
            }
            None => (None, None, "no reply: the request was rejected".into()),
        },
        _ => (None, None, "no reply: the request was not delivered".into()),
    };
    let notes = icmp_rate_limit(cluster, &forward).into_iter().collect();
    Ok(FlowResult {
        flow: flow.clone(),
        sent,
        forward,
        reply,
        reply_ok,
        reply_reason,
        notes,
    })
}

/// The rate limit a refusal sent as an ICMP error meets, unless it is
/// routed to the refusing host itself.
fn icmp_rate_limit(cluster: &Cluster, forward: &Leg) -> Option<Note> {
    let (host, answer) = forward.answer?;
    if answer.proto != wire::PROTO_ICMP {
        return None;
    }
    let net = &cluster.network.hosts[host].net;
    (net.decide(answer.dst) != crate::routing::Decision::Local).then(|| Note::IcmpRateLimit {
        host: cluster.host_name(host).to_string(),
        peer: answer.dst,
    })
}

fn judge_reply(cluster: &Cluster, sender: usize, sent: &Headers, back: &Leg) -> (bool, String) {
    let expect = sent.reply();
    match (back.verdict, back.end) {
        (Verdict::Delivered, Some((host, got))) => {
            if host != sender {
                return (
                    false,
                    format!(
                        "the reply went to {} instead of {}",
                        cluster.host_name(host),
                        cluster.host_name(sender)
                    ),
                );
            }
            let same = got.src == expect.src
                && got.dst == expect.dst
                && (!got.has_ports() || (got.sport == expect.sport && got.dport == expect.dport));
            if same {
                (
                    true,
                    "the reply reached the sender with the expected addresses".into(),
                )
            } else {
                (
                    false,
                    format!(
                        "the reply arrived as {got}, but the sender expects {expect}: the connection does not match"
                    ),
                )
            }
        }
        _ => (
            false,
            format!("the reply did not get back: {}", back.reason),
        ),
    }
}

fn leg(
    cluster: &Cluster,
    world: &mut World,
    start: usize,
    first: Headers,
    mode: Mode,
    chooser: &mut dyn Chooser,
) -> Result<Leg, TraceError> {
    let net = &cluster.network;
    let mut steps = Vec::new();
    let mut host = start;
    let mut action = Action::Output(first);
    // For an outer VXLAN packet: the inner packet it carries.
    let mut carrying: Option<Headers> = None;
    for _ in 0..MAX_HOPS {
        let mut events = Vec::new();
        let (packet, in_iface) = match &action {
            Action::Output(h) => (*h, None),
            Action::Receive(h, i) => (*h, Some(i.clone())),
        };
        let hnet = &net.hosts[host].net;
        let mut stack = Stack {
            rulesets: cluster.rulesets(host),
            state: world.host(host),
            opts: cluster.opts,
        };
        let result = match &action {
            Action::Output(h) => stack.output(*h, 0, hnet, chooser, &mut events),
            Action::Receive(h, i) => stack.receive(*h, i, 0, hnet, chooser, &mut events),
        };
        let outcome = result.map_err(|source| TraceError::Eval {
            host: cluster.host_name(host).to_string(),
            source,
        })?;
        steps.push(LegStep::Hop(Hop {
            host,
            in_iface,
            packet,
            events,
            outcome: outcome.clone(),
            carrying,
        }));
        match outcome {
            Outcome::Local(h) => {
                if let Some(inner) = carrying.take() {
                    if h.proto == PROTO_UDP && h.dport == VXLAN_PORT {
                        steps.push(LegStep::Link(LinkEvent::Decapsulated { host, inner }));
                        action = Action::Receive(inner, crate::network::VXLAN_DEVICE.into());
                        continue;
                    }
                }
                return Ok(end_local(cluster, steps, host, h, mode));
            }
            Outcome::Transmit {
                headers,
                out_iface,
                nexthop,
            } => match net.arrival(host, &out_iface, nexthop) {
                Arrival::Host {
                    host: next,
                    in_iface,
                } => {
                    host = next;
                    action = Action::Receive(headers, in_iface);
                }
                Arrival::Loopback => {
                    action = Action::Receive(headers, "lo".into());
                }
                Arrival::Vxlan {
                    host: _peer,
                    outer_src,
                    outer_dst,
                } => {
                    let outer = Headers::udp(
                        outer_src,
                        wire::vxlan_source_port(&headers),
                        outer_dst,
                        VXLAN_PORT,
                    );
                    steps.push(LegStep::Link(LinkEvent::Encapsulated { host, outer }));
                    carrying = Some(headers);
                    action = Action::Output(outer);
                }
                Arrival::LoadBalancer { address } => {
                    let Some(fe) = net.load_balancer.frontends.iter().find(|f| {
                        f.address == address && f.proto == headers.proto && f.port == headers.dport
                    }) else {
                        return Ok(ended(
                            steps,
                            Verdict::Dropped,
                            format!(
                                "the load balancer at {address} has no listener for {} port {}",
                                headers.proto_name(),
                                headers.dport
                            ),
                        ));
                    };
                    if fe.nodes.is_empty() {
                        return Ok(ended(
                            steps,
                            Verdict::Dropped,
                            format!("the load balancer for {} has no healthy node", fe.address),
                        ));
                    }
                    let n = fe.nodes.len();
                    let pick = if n == 1 {
                        0
                    } else {
                        let weights = vec![Probability::ratio(1, n as u64); n];
                        chooser.choose(
                            &ChoicePoint {
                                label: format!("load balancer {} node", fe.address),
                            },
                            &weights,
                        )
                    };
                    let node = fe.nodes[pick];
                    let mut pkt = headers;
                    let mut rewritten = None;
                    if let Delivery::NodePort { address } = net.load_balancer.delivery {
                        let Some(np) = fe.node_port else {
                            return Ok(ended(
                                steps,
                                Verdict::Dropped,
                                format!(
                                    "the load balancer for {} has no node port to use",
                                    fe.address
                                ),
                            ));
                        };
                        pkt.src = address;
                        pkt.dst = net.node_address(node);
                        pkt.dport = np;
                        world.lb_sessions.push(LbSession {
                            backend: pkt,
                            client: headers,
                        });
                        rewritten = Some(pkt);
                    }
                    steps.push(LegStep::Link(LinkEvent::LoadBalanced {
                        frontend: fe.address,
                        node,
                        of: n,
                        rewritten,
                    }));
                    host = node;
                    action = Action::Receive(pkt, "eth0".into());
                }
                Arrival::Nobody => {
                    if let Some((client_host, back)) =
                        lb_reply(net, world, &headers, &out_iface, nexthop)
                    {
                        steps.push(LegStep::Link(LinkEvent::LoadBalancerReply {
                            rewritten: back,
                        }));
                        host = client_host;
                        action = Action::Receive(back, "eth0".into());
                        continue;
                    }
                    return Ok(ended(
                        steps,
                        Verdict::NoRoute,
                        format!(
                            "{} sent it out of {} to {}, but no host there has that address",
                            cluster.host_name(host),
                            out_iface,
                            nexthop
                        ),
                    ));
                }
            },
            Outcome::Dropped {
                hook,
                table,
                reason,
            } => {
                let name = cluster.host_name(host);
                // A table's walk ended it; a clash or an untranslatable
                // redirect is no rule's doing.
                let by_table = !matches!(
                    reason,
                    DropReason::ConfirmClash | DropReason::NattedRedirect
                );
                let rule = by_table
                    .then(|| match &table {
                        ChainSite::Iptables(t) => RuleRef::last_in(
                            &cluster.engines[host],
                            host,
                            hop_events(&steps),
                            hook,
                            *t,
                        ),
                        ChainSite::Chain { table, chain } => {
                            RuleRef::last_in_chain(host, hop_events(&steps), hook, table, chain)
                        }
                    })
                    .flatten();
                let by = rule.as_ref().map(|r| format!(": {r}")).unwrap_or_default();
                let (verdict, why) = match reason {
                    DropReason::Reject { with, packet } => {
                        let mut leg = ended(
                            steps,
                            Verdict::Rejected,
                            if by.is_empty() {
                                format!("{name} rejected it in {table} {hook} ({})", with.as_str())
                            } else {
                                format!("{name} rejected it in {table} {hook}{by}")
                            },
                        );
                        leg.answer =
                            reject_answer(&net.hosts[host].net, with, &packet).map(|a| (host, a));
                        leg.ended_by = rule;
                        return Ok(leg);
                    }
                    DropReason::Policy | DropReason::Rule => (
                        Verdict::Dropped,
                        format!("{name} dropped it in {table} {hook}{by}"),
                    ),
                    DropReason::NoMasqueradeAddress => (
                        Verdict::Dropped,
                        format!("{name} dropped it in {hook}: MASQUERADE found no address on the outgoing interface{by}"),
                    ),
                    DropReason::NoFreePort => (
                        Verdict::Dropped,
                        format!("{name} dropped it in {hook}: no free port to translate to{by}"),
                    ),
                    DropReason::ConfirmClash => (
                        Verdict::Dropped,
                        format!("{name} dropped it in {hook}: its new conntrack entry clashed with an existing one"),
                    ),
                    DropReason::NattedRedirect => (
                        Verdict::Dropped,
                        format!("{name} dropped it in {hook}: NAT does not translate an ICMP redirect about a NATed connection"),
                    ),
                };
                let mut leg = ended(steps, verdict, why);
                leg.ended_by = rule;
                return Ok(leg);
            }
            Outcome::Martian(m, h) => {
                return Ok(ended(
                    steps,
                    Verdict::Dropped,
                    martian_reason(cluster.host_name(host), m, &h),
                ))
            }
            Outcome::NoRoute(h) => {
                return Ok(ended(
                    steps,
                    Verdict::NoRoute,
                    format!("{} has no route to {}", cluster.host_name(host), h.dst),
                ))
            }
            Outcome::NotForwarded => {
                return Ok(ended(
                    steps,
                    Verdict::Dropped,
                    format!(
                        "{} is not the destination and does not forward",
                        cluster.host_name(host)
                    ),
                ))
            }
        }
    }
    Ok(ended(
        steps,
        Verdict::Loop,
        format!("still travelling after {MAX_HOPS} hops: a forwarding loop"),
    ))
}

/// Why a host's route lookup refused the packet, in plain words.
fn martian_reason(name: &str, m: Martian, h: &Headers) -> String {
    match m {
        Martian::OwnSource => format!(
            "{name} dropped it as a martian: its source {} is one of {name}'s own addresses",
            h.src
        ),
        Martian::LoopbackSource => format!(
            "{name} dropped it: its source {} is a loopback address, which may not travel between hosts (route_localnet lets a host send it, no host accepts it)",
            h.src
        ),
        Martian::LoopbackDestination => format!(
            "{name} dropped it as a martian: its destination {} is a loopback address and route_localnet is off",
            h.dst
        ),
    }
}

/// A reply addressed to a `nodePort`-delivery load balancer: undo its
/// rewrite and hand it to the client.
fn lb_reply(
    net: &Network,
    world: &World,
    h: &Headers,
    out_iface: &str,
    nexthop: Ipv4Addr,
) -> Option<(usize, Headers)> {
    let Delivery::NodePort { address } = net.load_balancer.delivery else {
        return None;
    };
    if out_iface != "eth0" || nexthop != address || h.dst != address {
        return None;
    }
    let session = world.lb_sessions.iter().rev().find(|s| {
        s.backend.dst == h.src
            && s.backend.dport == h.sport
            && s.backend.sport == h.dport
            && s.backend.proto == h.proto
    })?;
    let back = Headers {
        src: session.client.dst,
        sport: session.client.dport,
        dst: session.client.src,
        dport: session.client.sport,
        ..*h
    };
    let client = net.host_by_address(back.dst)?;
    Some((client, back))
}

/// The events of the last hop of a leg so far.
fn hop_events(steps: &[LegStep]) -> &[Event] {
    match steps.last() {
        Some(LegStep::Hop(h)) => &h.events,
        _ => &[],
    }
}

fn ended(steps: Vec<LegStep>, verdict: Verdict, reason: String) -> Leg {
    Leg {
        steps,
        verdict,
        reason,
        ended_by: None,
        end: None,
        socket: None,
        answer: None,
        served: None,
    }
}

/// What REJECT sends back, as the kernel builds it: `nf_send_reset` answers
/// from the address and port the packet was sent to; `nf_send_unreach`
/// (`icmp_send`) quotes the packet, from its destination when that is local,
/// else from the address this host would use to reach the sender.
fn reject_answer(net: &HostNet, with: RejectWith, p: &Headers) -> Option<Headers> {
    let code = match with {
        RejectWith::TcpReset => {
            return (p.proto == PROTO_TCP)
                .then(|| Headers::tcp(p.dst, p.dport, p.src, p.sport, TCP_RST | TCP_ACK));
        }
        RejectWith::IcmpNetUnreachable => 0,
        RejectWith::IcmpHostUnreachable => 1,
        RejectWith::IcmpProtoUnreachable => 2,
        RejectWith::IcmpPortUnreachable => 3,
        RejectWith::IcmpNetProhibited => 9,
        RejectWith::IcmpHostProhibited => 10,
        RejectWith::IcmpAdminProhibited => 13,
    };
    let src = if net.is_local(p.dst) {
        p.dst
    } else {
        net.select_source(p.src)?
    };
    Some(Headers::icmp_error(src, p.src, ICMP_DEST_UNREACH, code, p))
}

/// A closed port's answer: a TCP reset, or an ICMP port unreachable for
/// UDP (SCTP answers with an ABORT, not modelled).
fn closed_port_answer(h: &Headers) -> Option<Headers> {
    match h.proto {
        PROTO_TCP => Some(Headers::tcp(
            h.dst,
            h.dport,
            h.src,
            h.sport,
            TCP_RST | TCP_ACK,
        )),
        PROTO_UDP => Some(Headers::icmp_error(h.dst, h.src, ICMP_DEST_UNREACH, 3, h)),
        _ => None,
    }
}

/// Whether the refusal reaches the sender in a form its socket takes: an
/// ICMP error quoting the packet it sent, or a reset from the address and
/// port it sent to.
fn judge_refusal(cluster: &Cluster, sender: usize, sent: &Headers, back: &Leg) -> String {
    let name = cluster.host_name(sender);
    let got = match (back.verdict, back.end) {
        (Verdict::Delivered, Some((host, got))) if host == sender => got,
        (Verdict::Delivered, Some((host, _))) => {
            return format!(
                "the refusal went to {} instead of {name}",
                cluster.host_name(host)
            )
        }
        _ => return format!("the refusal did not get back: {}", back.reason),
    };
    let answers_us = match got.inner {
        Some(q) => {
            q.src == sent.src
                && q.dst == sent.dst
                && q.proto == sent.proto
                && (!sent.has_ports() || (q.sport == sent.sport && q.dport == sent.dport))
        }
        None => got.src == sent.dst && got.sport == sent.dport && got.dport == sent.sport,
    };
    let what = if got.inner.is_some() {
        format!(
            "ICMP destination unreachable (code {}) from {}",
            got.icmp_code, got.src
        )
    } else {
        format!("a TCP reset from {}:{}", got.src, got.sport)
    };
    if answers_us {
        format!("{what} reaches {name}: its socket gets \"connection refused\"")
    } else {
        format!("{what} reaches {name}, but does not match what it sent ({got}): ignored, the sender waits")
    }
}

fn end_local(cluster: &Cluster, steps: Vec<LegStep>, host: usize, h: Headers, mode: Mode) -> Leg {
    let name = cluster.host_name(host);
    if mode == Mode::Reply {
        return Leg {
            steps,
            verdict: Verdict::Delivered,
            reason: format!("the reply reached {name}"),
            ended_by: None,
            end: Some((host, h)),
            socket: None,
            answer: None,
            served: None,
        };
    }
    let node = &cluster.network.hosts[host];
    let port = if h.has_ports() { h.dport } else { 0 };
    match node.listener(h.proto, h.dst, port) {
        Some(sock) if node.kind != HostKind::External => {
            let mut reason = format!("{} accepted it on {}:{}", sock.owner, h.dst, port);
            if let Some(a) = &sock.answer {
                reason.push_str(&format!(" and answers HTTP {}: {}", a.status, a.body));
            }
            Leg {
                steps,
                verdict: Verdict::Delivered,
                reason,
                ended_by: None,
                end: Some((host, h)),
                socket: Some(sock.owner.clone()),
                answer: None,
                served: sock.answer.clone(),
            }
        }
        _ => Leg {
            steps,
            verdict: Verdict::ClosedPort,
            reason: format!(
                "it reached {name}, but nothing listens on {} port {}",
                h.proto_name(),
                port
            ),
            ended_by: None,
            end: Some((host, h)),
            socket: None,
            answer: closed_port_answer(&h).map(|a| (host, a)),
            served: None,
        },
    }
}
