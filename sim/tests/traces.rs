//! What every trace of the bundled scenarios must tell a reader, whatever
//! the flow: every matrix cell and every check.

use kpsim::compile::{compile, Compiled};
use kpsim::scenario::Scenario;
use kpsim::trace::{self, Flow, FlowResult, Leg, Verdict};
use std::collections::BTreeMap;

mod common;

fn scenarios() -> Vec<Compiled> {
    common::scenario_files()
        .iter()
        .map(|f| {
            let s = Scenario::load(f).unwrap_or_else(|e| panic!("{e}")).scenario;
            compile(&s, &BTreeMap::new()).unwrap()
        })
        .collect()
}

/// Every flow the matrix and the checks trace, with every outcome.
fn every_result(c: &Compiled) -> Vec<FlowResult> {
    let mut flows: Vec<Flow> = Vec::new();
    for s in kpsim::matrix::senders(c) {
        flows.extend(kpsim::matrix::entries(c).iter().map(|e| e.flow(s)));
    }
    for ch in &c.scenario.checks {
        flows.push(c.flow(&ch.from, &ch.to, None, 0).unwrap());
    }
    flows
        .iter()
        .flat_map(|f| trace::trace(&c.cluster, std::slice::from_ref(f)).unwrap())
        .flat_map(|(_, r)| r)
        .collect()
}

fn legs(r: &FlowResult) -> impl Iterator<Item = &Leg> {
    std::iter::once(&r.forward).chain(r.reply.as_ref())
}

#[test]
fn every_drop_and_reject_names_its_rule_and_comment() {
    let mut seen = 0;
    for c in scenarios() {
        for r in every_result(&c) {
            for leg in legs(&r) {
                if !matches!(leg.verdict, Verdict::Dropped | Verdict::Rejected) {
                    continue;
                }
                // Drops that are no rule's doing say why in words instead.
                let Some(rule) = &leg.ended_by else {
                    assert!(
                        !leg.reason.contains("a DROP rule"),
                        "{}: {}",
                        c.scenario.name,
                        leg.reason
                    );
                    continue;
                };
                seen += 1;
                let printed = c.cluster.engines[rule.host].ruleset().to_iptables_save();
                let line = printed.lines().nth(rule.line - 1).unwrap_or_default();
                if rule.policy {
                    assert!(line.starts_with(&rule.text), "{rule} vs {line}");
                } else {
                    assert_eq!(
                        line, rule.text,
                        "{}: the line names the rule",
                        c.scenario.name
                    );
                    let comment = rule.comment.as_deref().unwrap_or_else(|| {
                        panic!("{}: kube-proxy comments its drops: {rule}", c.scenario.name)
                    });
                    assert!(rule.text.contains(comment));
                }
                assert!(
                    leg.reason.contains(&rule.to_string()),
                    "the reason quotes the rule: {}",
                    leg.reason
                );
            }
        }
    }
    assert!(
        seen >= 6,
        "the library drops and rejects in places ({seen})"
    );
}
