//! The trace as a story: each host a heading, under it every hook and table
//! that did something, the rules that matched (as `iptables-save` prints
//! them), marks, NAT before → after, routes, conntrack; then a summary line.

use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent};
use crate::netfilter::{
    ChainRun, ChainStep, CtFound, Event, NatKind, Outcome, Route, Step, TableName, TableVerdict,
};
use crate::prob::Probability;
use std::fmt::Write;

/// How the flow is called in headings: what the user typed.
#[derive(Clone, Debug, Default)]
pub struct FlowLabel {
    pub from: String,
    pub to: String,
}

/// The full story of every outcome.
pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> String {
    let mut out = String::new();
    let total = results.len();
    for (i, (p, flows)) in results.iter().enumerate() {
        if total > 1 {
            let _ = writeln!(
                out,
                "=== outcome {} of {} (probability {}) ===",
                i + 1,
                total,
                prob_text(p)
            );
        }
        for (j, r) in flows.iter().enumerate() {
            let label = labels.get(j).cloned().unwrap_or_default();
            render_flow(&mut out, cluster, &label, r);
        }
        if total > 1 && i + 1 < total {
            out.push('\n');
        }
    }
    out
}

/// `1/3 (0.333333)`, or `1` for certainty.
pub fn prob_text(p: &Probability) -> String {
    if p.is_one() {
        "1".into()
    } else {
        format!("{} ({})", p.exact_string(), p)
    }
}

fn render_flow(out: &mut String, cluster: &Cluster, label: &FlowLabel, r: &FlowResult) {
    let _ = writeln!(out, "flow: {} -> {}   [{}]", label.from, label.to, r.sent);
    render_leg(out, cluster, &r.forward);
    if let Some(reply) = &r.reply {
        let heading = if r.reply_ok.is_some() {
            "reply:"
        } else {
            "refusal:"
        };
        let _ = writeln!(out, "{heading}");
        render_leg(out, cluster, reply);
    }
    let _ = writeln!(out, "{}", summary_line(cluster, r));
}

/// The one-line result of a flow.
pub fn summary_line(cluster: &Cluster, r: &FlowResult) -> String {
    let mut s = String::from("result: ");
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

fn render_link(out: &mut String, cluster: &Cluster, l: &LinkEvent) {
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
                "  load balancer {frontend}: hands the packet unchanged to {} (one of {of} eligible nodes)",
                cluster.host_name(*node)
            ),
            Some(h) => writeln!(
                out,
                "  load balancer {frontend}: opens its own connection to {}: {h} (one of {of} eligible nodes)",
                cluster.host_name(*node)
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
        | Outcome::Martian(_)
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
                Route::MartianSource => writeln!(
                    out,
                    "  {again}: refused, the source is one of this host's own addresses (martian)"
                ),
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

/// An nftables base chain's walk: the rules that decided, with the map or
/// set element that chose, and `numgen` draws with their probability.
fn render_chain_run(out: &mut String, run: &ChainRun) {
    let quiet = run.verdict == TableVerdict::Accept
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
        });
    let head = format!("  {} {} {}", run.hook, run.table, run.chain);
    if quiet {
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
    for s in &run.steps {
        let _ = match s {
            ChainStep::Enter { .. } => Ok(()),
            ChainStep::Rule {
                chain, text, line, ..
            } => {
                if *line > 0 {
                    writeln!(out, "    [{chain}] {text}   (line {line})")
                } else {
                    writeln!(out, "    [{chain}] {text}")
                }
            }
            ChainStep::Missed {
                chain, index, why, ..
            } => writeln!(out, "    no match: {chain} rule {} ({why})", index + 1),
            ChainStep::Lookup { set, key, element } => match element {
                Some(e) => writeln!(out, "    {set}: {key} -> element {e}"),
                None => writeln!(out, "    {set}: {key} -> no element"),
            },
            ChainStep::Random {
                value,
                modulus,
                probability,
                ..
            } => writeln!(
                out,
                "    numgen random mod {modulus} = {value} with probability {}",
                prob_text(probability)
            ),
            ChainStep::Return { from, to } => writeln!(out, "    return from {from} to {to}"),
            ChainStep::Policy { chain, policy } => {
                writeln!(
                    out,
                    "    {chain} policy {}",
                    format!("{policy:?}").to_lowercase()
                )
            }
            ChainStep::MarkSet { from, to } => writeln!(out, "    mark 0x{from:x} -> 0x{to:x}"),
            ChainStep::ConnMarkSet { from, to } => {
                writeln!(out, "    ct mark 0x{from:x} -> 0x{to:x}")
            }
            ChainStep::SetUpdate { set, key } => writeln!(out, "    {set}: remember {key}"),
            ChainStep::Log { prefix } => writeln!(out, "    log {prefix:?}"),
            ChainStep::Notrack => writeln!(out, "    not tracked"),
        };
    }
}

/// A table that let the packet through by policy without doing anything
/// to it: worth one line, not a list of jumps and returns.
fn is_quiet(steps: &[Step], verdict: &TableVerdict) -> bool {
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
