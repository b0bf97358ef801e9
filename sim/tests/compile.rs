//! Compiling at scale keeps its promises: every node's rules are numbered
//! exactly as `kpsim rules` prints them, and a parallel compile equals a
//! serial one.

use kpsim::compile::{compile, Compiled};
use kpsim::netfilter::Ruleset;
use kpsim::scenario::Scenario;

mod common;

/// The bundled scenarios, and a synthetic cluster large enough for chain
/// indexes and large-cluster mode.
fn scenarios() -> Vec<Scenario> {
    let mut v: Vec<Scenario> = common::scenario_files()
        .iter()
        .map(|f| Scenario::load(f).unwrap_or_else(|e| panic!("{e}")).scenario)
        .collect();
    v.push(kpsim::synth::cluster(300, 4, 3));
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
            assert_eq!(
                c.rules(i).line_numbers(),
                reparsed.line_numbers(),
                "{} node {i}",
                s.name
            );
        }
    }
}

/// Compile `s` on a pool of `threads` threads.
fn compile_on(threads: usize, s: &Scenario) -> Compiled {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| compile(s, &Default::default()).unwrap())
}

/// What a compile shows of each node: its printed rules and their lines.
fn visible(c: &Compiled) -> Vec<(String, Vec<usize>)> {
    (0..node_count(c))
        .map(|i| (c.rules(i).to_iptables_save(), c.rules(i).line_numbers()))
        .collect()
}

#[test]
fn parallel_compile_equals_serial() {
    for s in scenarios() {
        let serial = compile_on(1, &s);
        let parallel = compile_on(4, &s);
        assert_eq!(visible(&serial), visible(&parallel), "{}", s.name);
        assert_eq!(serial.notes, parallel.notes, "{}", s.name);
    }
}

/// Nodes with the same chains hold one copy of them; a chain that differs
/// between nodes (a Local policy's) is each node's own.
#[test]
fn equal_chains_are_held_once() {
    let c = compile(&kpsim::synth::cluster(50, 2, 3), &Default::default()).unwrap();
    let (a, b) = (c.rules(0), c.rules(2));
    for (ta, tb) in a.tables.iter().zip(&b.tables) {
        for (ca, cb) in ta.chains.iter().zip(&tb.chains) {
            assert!(ca.rules.shares(&cb.rules), "{} {}", ta.name, ca.name);
        }
    }
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let s = Scenario::load(&dir.join("nodeport-local-policy.yaml"))
        .unwrap()
        .scenario;
    let c = compile(&s, &Default::default()).unwrap();
    let chains = |i: usize| {
        c.rules(i)
            .tables
            .iter()
            .flat_map(|t| t.chains.iter().map(move |ch| (t.name, ch)))
            .collect::<Vec<_>>()
    };
    let (a, b) = (chains(0), chains(1));
    let mut differing = 0;
    for (ta, ca) in &a {
        if let Some((_, cb)) = b.iter().find(|(tb, cb)| tb == ta && cb.name == ca.name) {
            assert_eq!(
                ca.rules.shares(&cb.rules),
                ca.rules == cb.rules,
                "{ta} {}",
                ca.name
            );
            differing += usize::from(ca.rules != cb.rules);
        }
    }
    assert!(differing > 0, "the Local policy makes some chain differ");
}
