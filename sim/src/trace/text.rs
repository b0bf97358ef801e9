//! The trace as text, at three levels of detail ([`Detail`]), like
//! `ovn-trace`'s `--minimal`, `--summary` and `--detailed`:
//!
//! * full (this module): each host a heading, under it every hook and
//!   table, the rules that matched (as `iptables-save` prints them), marks,
//!   NAT before → after, routes, conntrack; then the result line;
//! * summary ([`super::summary`]): per host only the hooks that did
//!   something, each with its deciding rule and line;
//! * minimal ([`super::minimal`]): one line per host with what changed,
//!   load-balancing branches as a tree.
//!
//! Summary and minimal put the result first as well, like a test report.

use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent};
use crate::conntrack::Direction;
use crate::netfilter::{
    ChainRun, ChainStep, CtFound, Event, NatKind, Outcome, Route, Step, TableName, TableVerdict,
};
use crate::prob::Probability;
use crate::wire::Headers;
use std::fmt::Write;

/// How the flow is called in headings: what the user typed.
#[derive(Clone, Debug, Default)]
pub struct FlowLabel {
    pub from: String,
    pub to: String,
}

/// How much of the story to tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// One line per host: what changed, and the verdict.
    Minimal,
    /// Per host, the hooks that did something, with their deciding rules.
    Summary,
    /// Every hook, table, rule, route and conntrack step.
    #[default]
    Full,
}

impl Detail {
    pub const ALL: [Detail; 3] = [Detail::Minimal, Detail::Summary, Detail::Full];

    pub fn as_str(self) -> &'static str {
        match self {
            Detail::Minimal => "minimal",
            Detail::Summary => "summary",
            Detail::Full => "full",
        }
    }
}

impl std::str::FromStr for Detail {
    type Err = String;
    fn from_str(s: &str) -> Result<Detail, String> {
        Detail::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("expected minimal, summary or full, got {s:?}"))
    }
}

/// Every outcome's story at the given level of detail.
pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
    detail: Detail,
) -> String {
    match detail {
        Detail::Full => render_full(cluster, labels, results),
        Detail::Summary => super::summary::render(cluster, labels, results),
        Detail::Minimal => super::minimal::render(cluster, labels, results),
    }
}

/// The result of each flow before its story: one line when every outcome
/// agrees, else one line per distinct result with its total probability.
pub fn results_first(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> String {
    let mut out = String::new();
    let flows = results.first().map_or(0, |(_, f)| f.len());
    for j in 0..flows {
        let mut distinct: Vec<(String, Probability)> = Vec::new();
        for (p, fl) in results {
            let text = outcome_text(cluster, &fl[j]);
            match distinct.iter_mut().find(|(t, _)| *t == text) {
                Some((_, q)) => *q = &*q + p,
                None => distinct.push((text, p.clone())),
            }
        }
        let head = if flows == 1 {
            "result".to_string()
        } else {
            let label = labels.get(j).cloned().unwrap_or_default();
            format!("result of flow {} ({} -> {})", j + 1, label.from, label.to)
        };
        if let [(text, _)] = distinct.as_slice() {
            let _ = writeln!(out, "{head}: {text}");
        } else {
            let _ = writeln!(out, "{head}: {} outcomes", distinct.len());
            for (text, p) in &distinct {
                let _ = writeln!(out, "  {}  {text}", p.readable());
            }
        }
    }
    out
}

/// Which way a leg goes, for the words its ends are told in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplyKind {
    Request,
    /// The answer of the socket that took the request.
    Reply,
    /// A REJECT's ICMP error or reset, or a closed port's.
    Refusal,
}

impl ReplyKind {
    pub(super) fn heading(self) -> &'static str {
        match self {
            ReplyKind::Request => "request",
            ReplyKind::Reply => "reply",
            ReplyKind::Refusal => "refusal",
        }
    }
}

/// Which end of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Endpoint {
    Source,
    Destination,
}

/// `10.244.2.5:8080`, or the bare address for a packet without ports.
pub(super) fn endpoint(h: &Headers, which: Endpoint) -> String {
    let (a, p) = match which {
        Endpoint::Source => (h.src, h.sport),
        Endpoint::Destination => (h.dst, h.dport),
    };
    if h.has_ports() {
        format!("{a}:{p}")
    } else {
        a.to_string()
    }
}

/// The direction conntrack found a hop's packet in, if it belongs to a
/// known connection.
pub(super) fn conntrack_direction(events: &[Event]) -> Option<Direction> {
    events.iter().find_map(|e| match e {
        Event::Conntrack {
            found: CtFound::Existing { dir, .. },
            ..
        } => Some(*dir),
        _ => None,
    })
}

/// A NAT event in netfilter's words: the target that did it (`DNAT`,
/// `MASQUERADE`, `SNAT`), or, for a rewrite conntrack applies from a
/// stored binding to a reply, the translation it undoes (`un-SNAT`
/// restores the destination the reply must reach, `un-DNAT` the source
/// the client expects).
pub(super) fn nat_name(
    kind: NatKind,
    dir: Option<Direction>,
    rule: Option<&super::RuleRef>,
) -> String {
    let reply = dir == Some(Direction::Reply);
    match kind {
        NatKind::Dnat | NatKind::Snat => rule.and_then(|r| r.target.clone()).unwrap_or_else(|| {
            if kind == NatKind::Dnat {
                "DNAT"
            } else {
                "SNAT"
            }
            .into()
        }),
        NatKind::DnatFromConntrack if reply => "un-SNAT".into(),
        NatKind::SnatFromConntrack if reply => "un-DNAT".into(),
        NatKind::DnatFromConntrack => "DNAT (conntrack)".into(),
        NatKind::SnatFromConntrack => "SNAT (conntrack)".into(),
    }
}

/// The full story of every outcome.
fn render_full(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> String {
    let mut out = String::new();
    each_outcome(&mut out, labels, results, prob_text, |out, label, r| {
        render_flow(out, cluster, label, r, |out, leg, _| {
            render_leg(out, cluster, leg)
        })
    });
    out
}

/// Every outcome in turn, headed by its number and probability (in words
/// `probability` gives) when there is more than one, each flow of it told
/// by `flow`.
pub(super) fn each_outcome(
    out: &mut String,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
    probability: fn(&Probability) -> String,
    mut flow: impl FnMut(&mut String, &FlowLabel, &FlowResult),
) {
    let total = results.len();
    for (i, (p, flows)) in results.iter().enumerate() {
        if total > 1 {
            let _ = writeln!(
                out,
                "=== outcome {} of {} (probability {}) ===",
                i + 1,
                total,
                probability(p)
            );
        }
        for (j, r) in flows.iter().enumerate() {
            let label = labels.get(j).cloned().unwrap_or_default();
            flow(out, &label, r);
        }
        if total > 1 && i + 1 < total {
            out.push('\n');
        }
    }
}

/// `1/3 (0.333333)`, or `1` for certainty.
pub fn prob_text(p: &Probability) -> String {
    if p.is_one() {
        "1".into()
    } else {
        format!("{} ({})", p.exact_string(), p)
    }
}

/// A flow's heading, its request leg, its reply or refusal leg (each told
/// by `leg`), and its result line.
pub(super) fn render_flow(
    out: &mut String,
    cluster: &Cluster,
    label: &FlowLabel,
    r: &FlowResult,
    mut leg: impl FnMut(&mut String, &Leg, ReplyKind),
) {
    let _ = writeln!(out, "flow: {} -> {}   [{}]", label.from, label.to, r.sent);
    leg(out, &r.forward, ReplyKind::Request);
    if let Some(reply) = &r.reply {
        let kind = if r.reply_ok.is_some() {
            ReplyKind::Reply
        } else {
            ReplyKind::Refusal
        };
        let _ = writeln!(out, "{}:", kind.heading());
        leg(out, reply, kind);
    }
    let _ = writeln!(out, "{}", summary_line(cluster, r));
    for n in &r.notes {
        let _ = writeln!(out, "note: {n}");
    }
}

/// The one-line result of a flow.
pub fn summary_line(cluster: &Cluster, r: &FlowResult) -> String {
    format!("result: {}", outcome_text(cluster, r))
}

/// What happened to a flow, in one line: who got it and what they saw, or
/// why nobody did; the reply; the node that chose the endpoint.
pub fn outcome_text(cluster: &Cluster, r: &FlowResult) -> String {
    let mut s = String::new();
    match (r.delivered_to(), r.seen()) {
        (Some(pod), Some(seen)) => {
            let _ = write!(
                s,
                "delivered to {pod}, source seen {}, destination seen {}:{}",
                seen.src, seen.dst, seen.dport
            );
        }
        _ => {
            let _ = write!(s, "{} ({})", r.forward.verdict.as_str(), r.forward.reason);
        }
    }
    match r.reply_ok {
        Some(true) => s.push_str(", reply ok"),
        Some(false) => {
            let _ = write!(s, ", reply broken ({})", r.reply_reason);
        }
        None if r.reply.is_some() => {
            let _ = write!(s, "; {}", r.reply_reason);
        }
        None => {}
    }
    if let Some(n) = r.decided_by() {
        let _ = write!(s, ", decided by {}", cluster.host_name(n));
    }
    s
}

fn render_leg(out: &mut String, cluster: &Cluster, leg: &Leg) {
    for step in &leg.steps {
        match step {
            LegStep::Hop(h) => render_hop(out, cluster, h),
            LegStep::Link(l) => render_link(out, cluster, l),
        }
    }
    let _ = writeln!(out, "  => {}: {}", leg.verdict.as_str(), leg.reason);
}

/// `one of 3 eligible nodes`, or `the only eligible node`.
pub(super) fn eligible(of: usize) -> String {
    if of == 1 {
        "the only eligible node".into()
    } else {
        format!("one of {of} eligible nodes")
    }
}

pub(super) fn render_link(out: &mut String, cluster: &Cluster, l: &LinkEvent) {
    let _ = match l {
        LinkEvent::Encapsulated { host, outer } => writeln!(
            out,
            "  {}: flannel.1 encapsulates it in VXLAN (VNI 1): outer {}",
            cluster.host_name(*host),
            outer
        ),
        LinkEvent::Decapsulated { host, inner } => writeln!(
            out,
            "  {}: VXLAN decapsulated; inner {} arrives on flannel.1",
            cluster.host_name(*host),
            inner
        ),
        LinkEvent::LoadBalanced {
            frontend,
            node,
            of,
            rewritten,
        } => match rewritten {
            None => writeln!(
                out,
                "  load balancer {frontend}: hands the packet unchanged to {} ({})",
                cluster.host_name(*node),
                eligible(*of)
            ),
            Some(h) => writeln!(
                out,
                "  load balancer {frontend}: opens its own connection to {}: {h} ({})",
                cluster.host_name(*node),
                eligible(*of)
            ),
        },
        LinkEvent::LoadBalancerReply { rewritten } => writeln!(
            out,
            "  load balancer: answers the client as the frontend: {rewritten}"
        ),
    };
}

fn render_hop(out: &mut String, cluster: &Cluster, hop: &Hop) {
    let name = cluster.host_name(hop.host);
    let _ = match &hop.in_iface {
        None => writeln!(out, "{name}: sends {}", hop.packet),
        Some(i) => writeln!(out, "{name}: receives on {i}: {}", hop.packet),
    };
    let engine = &cluster.engines[hop.host];
    for e in &hop.events {
        render_event(out, engine, e);
    }
    let _ = match &hop.outcome {
        Outcome::Local(h) => writeln!(out, "  local delivery: {h}"),
        Outcome::Transmit {
            headers,
            out_iface,
            nexthop,
        } => writeln!(out, "  out {out_iface} to {nexthop}: {headers}"),
        Outcome::Dropped { .. }
        | Outcome::NoRoute(_)
        | Outcome::Martian(..)
        | Outcome::NotForwarded => Ok(()),
    };
}

fn render_event(out: &mut String, engine: &crate::netfilter::Engine, e: &Event) {
    match e {
        Event::Table {
            hook,
            table,
            steps,
            verdict,
        } => {
            if is_quiet(steps, verdict) {
                let passed: Vec<&str> = steps
                    .iter()
                    .filter_map(|s| match s {
                        Step::EnterChain { chain, .. } if chain != hook.chain() => {
                            Some(chain.as_str())
                        }
                        _ => None,
                    })
                    .collect();
                if !passed.is_empty() {
                    let _ = writeln!(
                        out,
                        "  {hook} {table}: no rule applies (passed {}; policy ACCEPT)",
                        passed.join(", ")
                    );
                }
                return;
            }
            let _ = writeln!(out, "  {hook} {table}:");
            for s in steps {
                render_step(out, engine, *table, s);
            }
        }
        Event::Chain(run) => render_chain_run(out, run),
        Event::NatSkipped { hook } => {
            let _ = writeln!(
                out,
                "  {hook} nat: skipped (not the connection's first packet; conntrack applies the stored binding)"
            );
        }
        Event::Conntrack { hook, found } => {
            let text = match found {
                CtFound::New => "new connection".to_string(),
                CtFound::Existing { id, dir, state } => {
                    format!("connection [{id}] {dir:?} direction, {}", state.as_str())
                }
                CtFound::Invalid => "INVALID (cannot start a connection)".into(),
                CtFound::Untracked => "untracked (NOTRACK)".into(),
            };
            let _ = writeln!(out, "  {hook} conntrack: {text}");
        }
        Event::Nat {
            hook,
            kind,
            before,
            after,
        } => {
            let what = match kind {
                NatKind::Dnat => "DNAT",
                NatKind::Snat => "SNAT",
                NatKind::DnatFromConntrack => "conntrack rewrites destination",
                NatKind::SnatFromConntrack => "conntrack rewrites source",
            };
            let _ = writeln!(out, "  {hook} {what}: {before} -> {after}");
        }
        Event::Routed { route, reroute } => {
            let again = if *reroute { "re-route" } else { "route" };
            let _ = match route {
                Route::Local => writeln!(out, "  {again}: local"),
                Route::Forward { out_iface, nexthop } => {
                    writeln!(out, "  {again}: out {out_iface} via {nexthop}")
                }
                Route::Unreachable => writeln!(out, "  {again}: unreachable"),
                Route::Martian(m) => {
                    writeln!(out, "  {again}: refused, {} (martian)", m.why())
                }
            };
        }
        Event::Confirmed { conn } => {
            let _ = writeln!(out, "  conntrack confirms {conn}");
        }
        Event::ConfirmFailed { conn } => {
            let _ = writeln!(out, "  conntrack clash, dropped: {conn}");
        }
    }
}

/// An nftables base chain's walk that accepted by policy with nothing
/// done on the way (only jumps, returns and misses): worth one line.
pub(super) fn is_quiet_chain(run: &ChainRun) -> bool {
    run.verdict == TableVerdict::Accept
        && matches!(run.steps.last(), Some(ChainStep::Policy { .. }))
        && run.steps.iter().all(|s| {
            matches!(
                s,
                ChainStep::Enter { .. }
                    | ChainStep::Rule { .. }
                    | ChainStep::Return { .. }
                    | ChainStep::Policy { .. }
                    | ChainStep::Missed { .. }
            )
        })
}

/// One step of an nftables chain walk as a line (without indentation);
/// `None` for entering a chain, which the rule that jumped already says.
pub(super) fn chain_step_line(s: &ChainStep) -> Option<String> {
    Some(match s {
        ChainStep::Enter { .. } => return None,
        ChainStep::Rule {
            chain, text, line, ..
        } => {
            if *line > 0 {
                format!("[{chain}] {text}   (line {line})")
            } else {
                format!("[{chain}] {text}")
            }
        }
        ChainStep::Missed {
            chain, index, why, ..
        } => format!("no match: {chain} rule {} ({why})", index + 1),
        ChainStep::Lookup { set, key, element } => match element {
            Some(e) => format!("{set}: {key} -> element {e}"),
            None => format!("{set}: {key} -> no element"),
        },
        ChainStep::Random {
            value,
            modulus,
            probability,
            ..
        } => format!(
            "numgen random mod {modulus} = {value} with probability {}",
            prob_text(probability)
        ),
        ChainStep::Return { from, to } => format!("return from {from} to {to}"),
        ChainStep::Policy { chain, policy } => {
            format!("{chain} policy {}", format!("{policy:?}").to_lowercase())
        }
        ChainStep::MarkSet { from, to } => format!("mark 0x{from:x} -> 0x{to:x}"),
        ChainStep::ConnMarkSet { from, to } => format!("ct mark 0x{from:x} -> 0x{to:x}"),
        ChainStep::SetUpdate { set, key } => format!("{set}: remember {key}"),
        ChainStep::Log { prefix } => format!("log {prefix:?}"),
        ChainStep::Notrack => "not tracked".to_string(),
    })
}

/// An nftables base chain's walk: the rules that decided, with the map or
/// set element that chose, and `numgen` draws with their probability.
fn render_chain_run(out: &mut String, run: &ChainRun) {
    let head = format!("  {} {} {}", run.hook, run.table, run.chain);
    if is_quiet_chain(run) {
        let passed: Vec<&str> = run
            .steps
            .iter()
            .filter_map(|s| match s {
                ChainStep::Enter { chain } if *chain != run.chain => Some(chain.as_str()),
                _ => None,
            })
            .collect();
        if !passed.is_empty() {
            let _ = writeln!(
                out,
                "{head}: no rule applies (passed {}; policy accept)",
                passed.join(", ")
            );
        }
        return;
    }
    let _ = writeln!(out, "{head} (priority {}):", run.priority);
    for line in run.steps.iter().filter_map(chain_step_line) {
        let _ = writeln!(out, "    {line}");
    }
}

/// A table that let the packet through by policy without doing anything
/// to it: worth one line, not a list of jumps and returns.
pub(super) fn is_quiet(steps: &[Step], verdict: &TableVerdict) -> bool {
    *verdict == TableVerdict::Accept
        && matches!(steps.last(), Some(Step::Policy { .. }))
        && steps.iter().all(|s| {
            matches!(
                s,
                Step::EnterChain { .. }
                    | Step::Matched { .. }
                    | Step::Return { .. }
                    | Step::Policy { .. }
                    | Step::Missed { .. }
            )
        })
}

fn render_step(out: &mut String, engine: &crate::netfilter::Engine, table: TableName, s: &Step) {
    let _ = match s {
        Step::EnterChain { .. } => Ok(()),
        Step::Matched {
            chain, index, line, ..
        } => {
            let text = engine
                .rule(table, chain, *index)
                .map(|r| r.to_iptables_save(chain))
                .unwrap_or_default();
            if *line > 0 {
                writeln!(out, "    {text}   (line {line})")
            } else {
                writeln!(out, "    {text}")
            }
        }
        Step::Missed {
            chain, index, why, ..
        } => writeln!(out, "    no match: {chain} rule {} ({why})", index + 1),
        Step::Random {
            chain,
            index,
            probability,
            matched,
        } => writeln!(
            out,
            "    {chain} rule {}: statistic {} with probability {}",
            index + 1,
            if *matched { "matched" } else { "did not match" },
            prob_text(&if *matched {
                probability.clone()
            } else {
                probability.complement()
            })
        ),
        Step::Return { from, to, .. } => writeln!(out, "    return from {from} to {to}"),
        Step::Policy { chain, policy, .. } => writeln!(out, "    {chain} policy {policy:?}"),
        Step::MarkSet { from, to } => writeln!(out, "    mark 0x{from:x} -> 0x{to:x}"),
        Step::ConnMarkSet { from, to } => writeln!(out, "    ctmark 0x{from:x} -> 0x{to:x}"),
        Step::Log { target, prefix } => writeln!(out, "    {target} {prefix:?}"),
        Step::Notrack => writeln!(out, "    not tracked"),
        Step::RecentSet { name, addr } => writeln!(out, "    recent list {name}: remember {addr}"),
    };
}
