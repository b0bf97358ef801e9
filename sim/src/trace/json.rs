//! The machine-readable trace (`--format json`), as the scenario format
//! document describes: per flow, every outcome with its exact probability,
//! the verdict, what the socket saw, the reply, and every hop's steps.

use super::text::{summary_line, FlowLabel};
use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent};
use crate::netfilter::{ChainStep, CtFound, Event, NatKind, Outcome, Route, Step, TableName};
use crate::prob::Probability;
use serde_json::{json, Value};

/// One JSON document per flow of the sequence: `{"flow": .., "outcomes": [..]}`;
/// a single flow gives that object, a sequence gives an array of them.
pub fn render(
    cluster: &Cluster,
    labels: &[FlowLabel],
    results: &[(Probability, Vec<FlowResult>)],
) -> Value {
    let flows = results.first().map_or(0, |(_, f)| f.len());
    let docs: Vec<Value> = (0..flows)
        .map(|j| {
            let label = labels.get(j).cloned().unwrap_or_default();
            let first = &results[0].1[j];
            let outcomes: Vec<Value> = results
                .iter()
                .map(|(p, fl)| outcome(cluster, p, &fl[j]))
                .collect();
            json!({
                "flow": {
                    "from": label.from,
                    "to": label.to,
                    "src": format!("{}:{}", first.sent.src, first.sent.sport),
                    "proto": first.sent.proto_name(),
                },
                "outcomes": outcomes,
            })
        })
        .collect();
    if docs.len() == 1 {
        docs.into_iter().next().expect("one")
    } else {
        Value::Array(docs)
    }
}

fn outcome(cluster: &Cluster, p: &Probability, r: &FlowResult) -> Value {
    let seen = r.seen();
    let mut v = json!({
        "probability": p.to_f64(),
        "probability_exact": p.exact_string(),
        "delivered_to": r.delivered_to(),
        "verdict": r.forward.verdict.as_str(),
        "reason": r.forward.reason,
        "source_seen": seen.map(|h| h.src.to_string()),
        "destination_seen": seen.map(|h| format!("{}:{}", h.dst, h.dport)),
        "reply": match r.reply_ok { Some(true) => json!("ok"), Some(false) => json!("broken"), None => Value::Null },
        "reply_reason": r.reply_reason,
        "decided_by": r.decided_by().map(|h| cluster.host_name(h).to_string()),
        "summary": summary_line(cluster, r),
        "hops": leg(cluster, &r.forward),
        "reply_hops": r.reply.as_ref().map(|l| leg(cluster, l)),
    });
    if !r.notes.is_empty() {
        v["notes"] = json!(r.notes);
    }
    if let Some(a) = &r.forward.served {
        v["served"] = json!(a);
    }
    v
}

fn leg(cluster: &Cluster, leg: &Leg) -> Value {
    Value::Array(
        leg.steps
            .iter()
            .map(|s| match s {
                LegStep::Hop(h) => hop(cluster, h),
                LegStep::Link(l) => link(cluster, l),
            })
            .collect(),
    )
}

fn link(cluster: &Cluster, l: &LinkEvent) -> Value {
    match l {
        LinkEvent::Encapsulated { host, outer } => json!({
            "link": "vxlan-encapsulate", "host": cluster.host_name(*host), "outer": outer.to_string()
        }),
        LinkEvent::Decapsulated { host, inner } => json!({
            "link": "vxlan-decapsulate", "host": cluster.host_name(*host), "inner": inner.to_string()
        }),
        LinkEvent::LoadBalanced {
            frontend,
            node,
            of,
            rewritten,
        } => json!({
            "link": "load-balancer", "frontend": frontend.to_string(),
            "node": cluster.host_name(*node), "eligible_nodes": of,
            "rewritten": rewritten.map(|h| h.to_string()),
        }),
        LinkEvent::LoadBalancerReply { rewritten } => json!({
            "link": "load-balancer-reply", "rewritten": rewritten.to_string()
        }),
    }
}

fn hop(cluster: &Cluster, h: &Hop) -> Value {
    let engine = &cluster.engines[h.host];
    let steps: Vec<Value> = h.events.iter().map(|e| event(engine, e)).collect();
    let outcome = match &h.outcome {
        Outcome::Local(p) => json!({"local": p.to_string()}),
        Outcome::Transmit {
            headers,
            out_iface,
            nexthop,
        } => {
            json!({"transmit": headers.to_string(), "out": out_iface, "nexthop": nexthop.to_string()})
        }
        Outcome::Dropped {
            hook,
            table,
            reason,
        } => {
            json!({"dropped": format!("{reason:?}"), "hook": hook.chain(), "table": table.name()})
        }
        Outcome::NoRoute(p) => json!({"no_route": p.to_string()}),
        Outcome::Martian(m, p) => json!({format!("martian_{}", m.side()): p.to_string()}),
        Outcome::NotForwarded => json!({"not_forwarded": true}),
    };
    json!({
        "host": cluster.host_name(h.host),
        "in": h.in_iface,
        "packet": h.packet.to_string(),
        "carrying": h.carrying.map(|c| c.to_string()),
        "steps": steps,
        "outcome": outcome,
    })
}

fn event(engine: &crate::netfilter::Engine, e: &Event) -> Value {
    match e {
        Event::Table {
            hook,
            table,
            steps,
            verdict,
        } => json!({
            "hook": hook.chain(), "table": table.as_str(),
            "verdict": format!("{verdict:?}"),
            "rules": steps.iter().filter_map(|s| step(engine, *table, s)).collect::<Vec<_>>(),
        }),
        Event::Chain(run) => json!({
            "hook": run.hook.chain(), "table": run.table, "chain": run.chain,
            "priority": run.priority,
            "verdict": format!("{:?}", run.verdict),
            "rules": run.steps.iter().filter_map(chain_step).collect::<Vec<_>>(),
        }),
        Event::NatSkipped { hook } => {
            json!({"hook": hook.chain(), "table": "nat", "skipped": "established connection"})
        }
        Event::Conntrack { hook, found } => json!({
            "hook": hook.chain(),
            "conntrack": match found {
                CtFound::New => json!("new"),
                CtFound::Existing { id, dir, state } => json!({"id": id, "direction": format!("{dir:?}").to_lowercase(), "state": state.as_str()}),
                CtFound::Invalid => json!("invalid"),
                CtFound::Untracked => json!("untracked"),
            }
        }),
        Event::Nat {
            hook,
            kind,
            before,
            after,
        } => json!({
            "hook": hook.chain(),
            "nat": match kind { NatKind::Dnat => "dnat", NatKind::Snat => "snat", NatKind::DnatFromConntrack => "conntrack-dst", NatKind::SnatFromConntrack => "conntrack-src" },
            "before": before.to_string(), "after": after.to_string(),
        }),
        Event::Routed { route, reroute } => json!({
            "route": match route {
                Route::Local => json!("local"),
                Route::Forward { out_iface, nexthop } => json!({"out": out_iface, "via": nexthop.to_string()}),
                Route::Unreachable => json!("unreachable"),
                Route::Martian(m) => json!(format!("martian-{}", m.side())),
            },
            "reroute": reroute,
        }),
        Event::Confirmed { conn } => json!({"conntrack_confirmed": conn.to_string()}),
        Event::ConfirmFailed { conn } => json!({"conntrack_clash": conn.to_string()}),
    }
}

fn chain_step(s: &ChainStep) -> Option<Value> {
    Some(match s {
        ChainStep::Enter { .. } => return None,
        ChainStep::Rule {
            chain, text, line, ..
        } => json!({"chain": chain, "rule": &**text, "line": line}),
        ChainStep::Missed {
            chain,
            index,
            line,
            why,
        } => json!({"chain": chain, "missed": index + 1, "line": line, "why": why}),
        ChainStep::Lookup { set, key, element } => {
            json!({"lookup": set, "key": key, "element": element})
        }
        ChainStep::Random {
            chain,
            value,
            modulus,
            probability,
            ..
        } => {
            json!({"chain": chain, "numgen": value, "modulus": modulus, "probability": probability.exact_string()})
        }
        ChainStep::Return { from, to } => json!({"return": from, "to": to}),
        ChainStep::Policy { chain, policy } => {
            json!({"chain": chain, "policy": format!("{policy:?}").to_lowercase()})
        }
        ChainStep::MarkSet { from, to } => json!({"mark": format!("0x{from:x} -> 0x{to:x}")}),
        ChainStep::ConnMarkSet { from, to } => {
            json!({"ctmark": format!("0x{from:x} -> 0x{to:x}")})
        }
        ChainStep::SetUpdate { set, key } => json!({"set_update": set, "key": key}),
        ChainStep::Log { prefix } => json!({"log": "log", "prefix": prefix}),
        ChainStep::Notrack => json!({"notrack": true}),
    })
}

fn step(engine: &crate::netfilter::Engine, table: TableName, s: &Step) -> Option<Value> {
    Some(match s {
        Step::EnterChain { .. } => return None,
        Step::Matched {
            chain, index, line, ..
        } => json!({
            "chain": chain, "rule": engine.rule(table, chain, *index).map(|r| r.to_iptables_save(chain)),
            "line": line,
        }),
        Step::Missed {
            chain,
            index,
            line,
            why,
            ..
        } => json!({"chain": chain, "missed": index + 1, "line": line, "why": why}),
        Step::Random {
            chain,
            index,
            probability,
            matched,
        } => {
            json!({"chain": chain, "statistic": index + 1, "probability": probability.exact_string(), "matched": matched})
        }
        Step::Return { from, to, .. } => json!({"return": from, "to": to}),
        Step::Policy { chain, policy, .. } => {
            json!({"chain": chain, "policy": format!("{policy:?}").to_uppercase()})
        }
        Step::MarkSet { from, to } => json!({"mark": format!("0x{from:x} -> 0x{to:x}")}),
        Step::ConnMarkSet { from, to } => json!({"ctmark": format!("0x{from:x} -> 0x{to:x}")}),
        Step::Log { target, prefix } => json!({"log": target, "prefix": prefix}),
        Step::Notrack => json!({"notrack": true}),
        Step::RecentSet { name, addr } => json!({"recent": name, "address": addr.to_string()}),
    })
}
