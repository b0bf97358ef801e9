//! The minimal trace: one line per host the packet visits, saying only
//! what changed there (DNAT, SNAT, encapsulation) and how the leg ended;
//! then the reply's way back and the result. Outcomes that share their
//! beginning are drawn as one tree whose branches carry their probability,
//! so a load-balanced flow reads as a fork at the host that chose.
//!
//! Every line is made from the trace's events, so a new kind of event or
//! link shows up here as soon as [`part_of_event`] or [`part_of_link`]
//! names it.

use super::text::{
    eligible, endpoint, nat_name, outcome_text, results_first, Endpoint, FlowLabel, ReplyKind,
};
use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent, RuleRef, Verdict};
use crate::conntrack::Direction;
use crate::netfilter::{Event, NatKind};
use crate::prob::Probability;
use crate::wire::Headers;
use std::fmt::Write;

/// One host's (or the load balancer's) part in a leg.
struct Visit {
    who: String,
    /// What happened, in order; joined with commas on the host's line.
    parts: Vec<String>,
    /// A deciding rule too long for the host's line, on the next one.
    rule: Option<String>,
}

/// An outcome as lines, before the host column is padded.
enum Line {
    Text(String),
    Visit(Visit),
}

pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> String {
    let mut out = results_first(cluster, labels, results);
    let outcomes: Vec<Vec<Line>> = results
        .iter()
        .map(|(_, flows)| outcome_lines(cluster, labels, flows))
        .collect();
    let width = outcomes
        .iter()
        .flatten()
        .filter_map(|l| match l {
            Line::Visit(v) => Some(v.who.len()),
            Line::Text(_) => None,
        })
        .max()
        .unwrap_or(0);
    let texts: Vec<Vec<String>> = outcomes
        .iter()
        .map(|lines| lines.iter().flat_map(|l| format_line(l, width)).collect())
        .collect();
    let items: Vec<Branch> = results
        .iter()
        .zip(&texts)
        .map(|((p, _), t)| (p, t.as_slice()))
        .collect();
    tree(&mut out, "", &items);
    out
}

fn format_line(l: &Line, width: usize) -> Vec<String> {
    match l {
        Line::Text(t) => vec![t.clone()],
        Line::Visit(v) => {
            let what = if v.parts.is_empty() {
                "forwards it".to_string()
            } else {
                v.parts.join(", ")
            };
            let mut lines = vec![format!("  {:<width$}  {what}", v.who)];
            if let Some(r) = &v.rule {
                lines.push(format!("  {:<width$}    {r}", ""));
            }
            lines
        }
    }
}

fn outcome_lines(cluster: &Cluster, labels: &[FlowLabel], flows: &[FlowResult]) -> Vec<Line> {
    let mut lines = Vec::new();
    for (j, r) in flows.iter().enumerate() {
        let label = labels.get(j).cloned().unwrap_or_default();
        lines.push(Line::Text(format!("flow: {} -> {}", label.from, label.to)));
        lines.extend(
            visits(cluster, &r.forward, ReplyKind::Request)
                .into_iter()
                .map(Line::Visit),
        );
        if let Some(back) = &r.reply {
            let kind = if r.reply_ok.is_some() {
                ReplyKind::Reply
            } else {
                ReplyKind::Refusal
            };
            lines.push(Line::Text(format!("{}:", kind.heading())));
            lines.extend(visits(cluster, back, kind).into_iter().map(Line::Visit));
        }
        lines.push(Line::Text(format!("result: {}", outcome_text(cluster, r))));
        lines.extend(r.notes.iter().map(|n| Line::Text(format!("note: {n}"))));
    }
    lines
}

/// The hosts of a leg in the order visited; consecutive hops on one host
/// (a VXLAN packet and the packet it carries) are one visit.
fn visits(cluster: &Cluster, leg: &Leg, kind: ReplyKind) -> Vec<Visit> {
    let mut out: Vec<Visit> = Vec::new();
    let mut last_packet: Option<Headers> = None;
    for (i, step) in leg.steps.iter().enumerate() {
        let (who, parts) = match step {
            LegStep::Hop(h) => (
                cluster.host_name(h.host).to_string(),
                hop_parts(cluster, h, i == 0),
            ),
            LegStep::Link(l) => part_of_link(cluster, l, last_packet.as_ref()),
        };
        if let LegStep::Hop(h) = step {
            last_packet = Some(h.packet);
        }
        match out.last_mut() {
            Some(v) if v.who == who => v.parts.extend(parts),
            _ => out.push(Visit {
                who,
                parts,
                rule: None,
            }),
        }
    }
    if let Some(v) = out.last_mut() {
        ending(leg, kind, v);
    }
    out
}

fn hop_parts(cluster: &Cluster, hop: &Hop, first: bool) -> Vec<String> {
    let mut parts = Vec::new();
    if first {
        parts.push(format!("sends {}", hop.packet));
    }
    parts.extend(hop_changes(cluster, hop));
    parts
}

/// What a host changed in the packet, in netfilter's words (`DNAT to
/// 10.244.2.5:8080 (default/web:http)`, `un-SNAT to 203.0.113.7:40000`).
pub(super) fn hop_changes(cluster: &Cluster, hop: &Hop) -> Vec<String> {
    let dir = super::text::conntrack_direction(&hop.events);
    hop.events
        .iter()
        .enumerate()
        .filter_map(|(k, e)| part_of_event(cluster, hop, &hop.events[..k], e, dir))
        .collect()
}

/// What an event changed, if anything worth a word in the minimal view.
fn part_of_event(
    cluster: &Cluster,
    hop: &Hop,
    before: &[Event],
    e: &Event,
    dir: Option<Direction>,
) -> Option<String> {
    match e {
        Event::Nat {
            hook,
            kind,
            before: b,
            after,
        } => {
            let rule = matches!(kind, NatKind::Dnat | NatKind::Snat)
                .then(|| RuleRef::nat_rule(&cluster.engines[hop.host], hop.host, before, *hook))
                .flatten();
            let name = nat_name(*kind, dir, rule.as_ref());
            let undo = dir == Some(Direction::Reply);
            Some(match kind {
                // A DNAT rule's comment names what chose the endpoint
                // (kube-proxy: the service port).
                NatKind::Dnat => {
                    let to = endpoint(after, Endpoint::Destination);
                    match rule.as_ref().and_then(RuleRef::purpose) {
                        Some(c) => format!("{name} to {to} ({c})"),
                        None => format!("{name} to {to}"),
                    }
                }
                NatKind::DnatFromConntrack => {
                    format!("{name} to {}", endpoint(after, Endpoint::Destination))
                }
                NatKind::SnatFromConntrack if undo => {
                    format!("{name} from {}", endpoint(after, Endpoint::Source))
                }
                NatKind::Snat | NatKind::SnatFromConntrack => {
                    if after.src == b.src && after.sport != b.sport {
                        format!("{name} to port {}", after.sport)
                    } else {
                        format!("{name} to {}", endpoint(after, Endpoint::Source))
                    }
                }
            })
        }
        Event::ConfirmFailed { .. } => Some("conntrack clash".into()),
        _ => None,
    }
}

/// A link event's visit: to the host it happens on, or the load balancer.
fn part_of_link(
    cluster: &Cluster,
    l: &LinkEvent,
    last_packet: Option<&Headers>,
) -> (String, Vec<String>) {
    let name_of = |a: std::net::Ipv4Addr| {
        cluster
            .network
            .host_by_address(a)
            .map_or_else(|| a.to_string(), |h| cluster.host_name(h).to_string())
    };
    match l {
        LinkEvent::Encapsulated { host, outer } => (
            cluster.host_name(*host).to_string(),
            vec![format!(
                "encapsulates it in VXLAN to {}",
                name_of(outer.dst)
            )],
        ),
        LinkEvent::Decapsulated { host, .. } => (
            cluster.host_name(*host).to_string(),
            vec![match last_packet {
                Some(outer) => format!("decapsulates VXLAN from {}", name_of(outer.src)),
                None => "decapsulates VXLAN".into(),
            }],
        ),
        LinkEvent::LoadBalanced {
            frontend,
            node,
            of,
            rewritten,
        } => (
            "LB".into(),
            vec![match rewritten {
                None => format!(
                    "{frontend} hands it to {} ({})",
                    cluster.host_name(*node),
                    eligible(*of)
                ),
                Some(h) => format!(
                    "{frontend} connects to {} ({}) as {h}",
                    cluster.host_name(*node),
                    eligible(*of)
                ),
            }],
        ),
        LinkEvent::LoadBalancerReply { rewritten } => (
            "LB".into(),
            vec![format!("answers as the frontend: {rewritten}")],
        ),
    }
}

/// How the leg ended, said on its last visit.
fn ending(leg: &Leg, kind: ReplyKind, v: &mut Visit) {
    let end = leg.end.map(|(_, h)| h);
    match (leg.verdict, end) {
        (Verdict::Delivered, Some(h)) => v.parts.push(match (&leg.socket, kind) {
            (Some(pod), ReplyKind::Request) if *pod == v.who => format!("accepts {h}"),
            (Some(pod), ReplyKind::Request) => format!("delivers to {pod}: {h}"),
            _ => format!("receives {h}"),
        }),
        (Verdict::ClosedPort, Some(h)) => v.parts.push(format!(
            "nothing listens on {} port {}: closed",
            h.proto_name(),
            h.dport
        )),
        _ => match &leg.ended_by {
            Some(rule) => {
                let verb = if leg.verdict == Verdict::Rejected {
                    "REJECT"
                } else {
                    "DROP"
                };
                v.parts
                    .push(format!("{verb} in {} {}:", rule.table, rule.hook));
                v.rule = Some(rule.to_string());
            }
            None => {
                let own = format!("{} ", v.who);
                let reason = leg.reason.strip_prefix(&own).unwrap_or(&leg.reason);
                v.parts.push(format!("{}: {reason}", leg.verdict.as_str()));
            }
        },
    }
}

/// Lines shared by every outcome are printed once; where outcomes differ
/// they fork, each branch headed by its total probability.
/// An outcome's probability and its lines still to print.
type Branch<'a> = (&'a Probability, &'a [String]);

fn tree(out: &mut String, prefix: &str, items: &[Branch]) {
    let mut k = 0;
    while let Some(line) = items[0].1.get(k) {
        if items.iter().any(|(_, l)| l.get(k) != Some(line)) {
            break;
        }
        let _ = writeln!(out, "{prefix}{line}");
        k += 1;
    }
    if items.iter().all(|(_, l)| l.len() <= k) {
        return;
    }
    let mut groups: Vec<(Option<&String>, Vec<Branch>)> = Vec::new();
    for (p, lines) in items {
        let key = lines.get(k);
        let rest = &lines[k.min(lines.len())..];
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, members)) => members.push((p, rest)),
            None => groups.push((key, vec![(p, rest)])),
        }
    }
    for (i, (_, members)) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let total = members
            .iter()
            .fold(Probability::zero(), |acc, (p, _)| &acc + p);
        let (fork, bar) = if last {
            ("└─", " ")
        } else {
            ("├─", "│")
        };
        let _ = writeln!(out, "{prefix}  {fork} {}", total.readable());
        tree(out, &format!("{prefix}  {bar} "), members);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn outcomes_fork_where_they_differ_and_merge_equal_branches() {
        let half = Probability::ratio(1, 2);
        let quarter = Probability::ratio(1, 4);
        let a = lines(&["flow", "  x  sends", "  y  left", "  z  one"]);
        let b = lines(&["flow", "  x  sends", "  y  right", "  z  two"]);
        let c = lines(&["flow", "  x  sends", "  y  left", "  z  three"]);
        let items = [
            (&half, a.as_slice()),
            (&quarter, b.as_slice()),
            (&quarter, c.as_slice()),
        ];
        let mut out = String::new();
        tree(&mut out, "", &items);
        assert_eq!(
            out,
            "flow\n  x  sends\n  ├─ 3/4\n  │   y  left\n  │   ├─ 1/2\n  │   │   z  one\n  │   └─ 1/4\n  │       z  three\n  └─ 1/4\n      y  right\n      z  two\n"
        );
    }
}
