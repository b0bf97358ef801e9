//! The summary trace: every host the packet crosses, and under it only
//! the hooks that did something to it (a mark, a NAT, a verdict by a rule,
//! a load-balancing pick), each told by its deciding rule as
//! `iptables-save` prints it, with its line. Hooks whose chains were
//! entered and left without effect are left out, so a host that merely
//! forwarded is one line.
//!
//! Like the other views it is made from the trace's events alone: a rule
//! that has no comment of its own is shown with the commented rule that
//! called it, which is where rule authors (kube-proxy among them) say why.

use super::text::{
    chain_step_line, conntrack_direction, each_outcome, is_quiet, is_quiet_chain, nat_name,
    render_flow, render_link, results_first, FlowLabel,
};
use super::{Cluster, FlowResult, Hop, Leg, LegStep, RuleRef};
use crate::netfilter::{ChainStep, CtFound, Engine, Event, Hook, Outcome, Route, Step, TableName};
use crate::prob::Probability;
use std::collections::BTreeMap;
use std::fmt::Write;

pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> String {
    let mut out = results_first(cluster, labels, results);
    each_outcome(
        &mut out,
        labels,
        results,
        Probability::readable,
        |out, label, r| {
            render_flow(out, cluster, label, r, |out, leg, _| {
                render_leg(out, cluster, leg)
            })
        },
    );
    out
}

fn render_leg(out: &mut String, cluster: &Cluster, leg: &Leg) {
    for step in &leg.steps {
        match step {
            LegStep::Hop(h) => render_hop(out, cluster, h),
            LegStep::Link(l) => render_link(out, cluster, l),
        }
    }
    let _ = match &leg.ended_by {
        // The rule was just shown under its hook.
        Some(_) => writeln!(out, "  => {} (by the rule above)", leg.verdict.as_str()),
        None => writeln!(out, "  => {}: {}", leg.verdict.as_str(), leg.reason),
    };
}

fn render_hop(out: &mut String, cluster: &Cluster, hop: &Hop) {
    let name = cluster.host_name(hop.host);
    let head = match &hop.in_iface {
        None => format!("{name}: sends {}", hop.packet),
        Some(i) => format!("{name}: receives on {i}: {}", hop.packet),
    };
    let engine = &cluster.engines[hop.host];
    let dir = conntrack_direction(&hop.events);
    let mut body = String::new();
    for e in &hop.events {
        event_lines(&mut body, engine, hop.host, e, dir);
    }
    let end = match &hop.outcome {
        Outcome::Local(h) => Some(("local".to_string(), *h)),
        Outcome::Transmit {
            headers,
            out_iface,
            nexthop,
        } => Some((format!("out {out_iface} to {nexthop}"), *headers)),
        Outcome::Dropped { .. }
        | Outcome::NoRoute(_)
        | Outcome::Martian(..)
        | Outcome::NotForwarded => None,
    };
    if body.is_empty() {
        // Nothing happened here: the host passed it on as it came.
        let _ = match end {
            Some((how, h)) if h == hop.packet => writeln!(out, "{head}, {how}"),
            Some((how, h)) => writeln!(out, "{head}, {how}: {h}"),
            None => writeln!(out, "{head}"),
        };
        return;
    }
    let _ = writeln!(out, "{head}");
    out.push_str(&body);
    if let Some((how, h)) = end {
        let _ = writeln!(out, "  {how}: {h}");
    }
}

/// The lines an event is worth in the summary: nothing when it changed
/// nothing.
fn event_lines(
    out: &mut String,
    engine: &Engine,
    host: usize,
    e: &Event,
    dir: Option<crate::conntrack::Direction>,
) {
    match e {
        Event::Table {
            hook,
            table,
            steps,
            verdict,
        } if !is_quiet(steps, verdict) => table_lines(out, engine, host, *hook, *table, steps),
        // An nftables base chain that acted: its rules, lookups, draws and
        // marks (not the returns and misses on the way).
        Event::Chain(run) if !is_quiet_chain(run) => {
            let _ = writeln!(out, "  {} {} {}:", run.hook, run.table, run.chain);
            for s in &run.steps {
                if matches!(s, ChainStep::Return { .. } | ChainStep::Missed { .. }) {
                    continue;
                }
                if let Some(line) = chain_step_line(s) {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        Event::Nat {
            hook,
            kind,
            before,
            after,
        } => {
            let _ = writeln!(
                out,
                "  {hook} {}: {before} -> {after}",
                nat_name(*kind, dir, None)
            );
        }
        Event::Conntrack { hook, found } => {
            let text = match found {
                CtFound::Invalid => "INVALID (cannot start a connection)",
                CtFound::Untracked => "untracked (NOTRACK)",
                CtFound::Existing { state, .. } if *state == crate::conntrack::State::Related => {
                    "RELATED to a known connection"
                }
                _ => return,
            };
            let _ = writeln!(out, "  {hook} conntrack: {text}");
        }
        Event::ConfirmFailed { conn } => {
            let _ = writeln!(out, "  conntrack clash, dropped: {conn}");
        }
        Event::Routed {
            route: Route::Unreachable,
            ..
        } => out.push_str("  route: unreachable\n"),
        Event::Routed {
            route: Route::Martian(m),
            ..
        } => {
            let _ = writeln!(out, "  route: refused, {} (martian)", m.why());
        }
        _ => {}
    }
}

/// A table that did something: the chains it went through to its
/// decision, then each rule that acted, with what it did.
fn table_lines(
    out: &mut String,
    engine: &Engine,
    host: usize,
    hook: Hook,
    table: TableName,
    steps: &[Step],
) {
    let path: Vec<&str> = Step::chain_path(steps)
        .into_iter()
        .filter(|c| *c != hook.chain())
        .collect();
    if path.is_empty() {
        let _ = writeln!(out, "  {hook} {table}:");
    } else {
        let _ = writeln!(out, "  {hook} {table} ({}):", path.join(" > "));
    }
    let rule = |s: &Step| RuleRef::of_step(engine, host, hook, table, s);
    // The rule that jumped into each chain, for rules without a comment.
    let mut callers: BTreeMap<&str, RuleRef> = BTreeMap::new();
    let mut last_matched: Option<&Step> = None;
    // The chance of the `statistic` draws in the current chain so far: a
    // rule reached past them (picked, or the fallback after every draw
    // declined) was chosen with that probability.
    let mut chance: Option<Probability> = None;
    let deciding = Step::deciding(steps);
    for (k, s) in steps.iter().enumerate() {
        match s {
            Step::EnterChain { chain, .. } => {
                chance = None;
                if let Some(r) = last_matched.and_then(rule) {
                    callers.insert(chain, r);
                }
            }
            Step::Random {
                matched,
                probability,
                ..
            } => {
                let p = if *matched {
                    probability.clone()
                } else {
                    probability.complement()
                };
                chance = Some(chance.map_or(p.clone(), |c| &c * &p));
            }
            Step::Matched { chain, .. } => {
                last_matched = Some(s);
                let Some(r) = rule(s) else { continue };
                let effect = effect_of(steps.get(k + 1));
                let chosen = chance.take();
                let decides = deciding == Some(s);
                if effect.is_none() && chosen.is_none() && !decides {
                    continue; // a jump or RETURN: the path above tells it
                }
                let mut line = format!("    {r}");
                if let Some(e) = effect {
                    let _ = write!(line, ": {e}");
                }
                if let Some(p) = chosen {
                    let _ = write!(line, ": chosen with probability {}", p.readable());
                }
                let _ = writeln!(out, "{line}");
                if r.comment.is_none() {
                    if let Some(c) = callers.get(chain.as_str()).filter(|c| c.comment.is_some()) {
                        let _ = writeln!(out, "      called by {c}");
                    }
                }
            }
            Step::Policy { .. } if deciding == Some(s) => {
                if let Some(r) = rule(s) {
                    let _ = writeln!(out, "    {r}");
                }
            }
            _ => {}
        }
    }
}

/// What a matched rule did besides its verdict, as the step after it
/// records.
fn effect_of(next: Option<&Step>) -> Option<String> {
    Some(match next? {
        Step::MarkSet { from, to } => format!("mark 0x{from:x} -> 0x{to:x}"),
        Step::ConnMarkSet { from, to } => format!("ctmark 0x{from:x} -> 0x{to:x}"),
        Step::Log { target, prefix } => format!("{target} {prefix:?}"),
        Step::Notrack => "not tracked".into(),
        Step::RecentSet { name, addr } => format!("recent list {name}: remember {addr}"),
        _ => return None,
    })
}
