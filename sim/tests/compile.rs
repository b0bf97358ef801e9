//! Compiling at scale keeps its promises: every node's rules are numbered
//! exactly as `kpsim rules` prints them, a parallel compile equals a
//! serial one, and sharing between nodes equals compiling each on its own.

use kpsim::compile::{compile, compile_per_node, Compiled};
use kpsim::netfilter::Ruleset;
use kpsim::scenario::{ProxyMode, Scenario};

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

/// A synthetic cluster whose NodePort services all have
/// `externalTrafficPolicy: Local`: every node's rules differ.
fn local_cluster() -> Scenario {
    let mut s = kpsim::synth::cluster(60, 3, 4);
    for svc in &mut s.services {
        let spec = svc.spec.as_mut().unwrap();
        if spec.type_.as_deref() == Some("NodePort") {
            spec.external_traffic_policy = Some("Local".into());
        }
    }
    s
}

/// What a compile shows of a node in both rule languages, as data and as
/// text with its line numbers.
fn node_as_seen(c: &Compiled, i: usize) -> (Ruleset, String, Vec<usize>, Option<String>) {
    let rs = c.rules(i);
    let nft = c.nft_rules(i).map(|r| r.to_nft());
    (rs.clone(), rs.to_iptables_save(), rs.line_numbers(), nft)
}

/// Nodes that see the cluster alike share one compile; that must change
/// nothing any node shows. The bundled scenarios (Local policies,
/// terminating endpoints, topology hints, source ranges, NodeCIDR
/// detection, node-port addresses, health-check ports, ...) and a cluster
/// of Local NodePorts, in both proxy modes, compiled shared and each node
/// on its own: every node's rules equal as data, printed and numbered.
#[test]
fn shared_compile_equals_per_node_compile() {
    let mut all = scenarios();
    all.push(local_cluster());
    for s in all {
        for mode in [ProxyMode::Iptables, ProxyMode::Nftables] {
            let mut s = s.clone();
            s.kube_proxy.mode = mode;
            let what = format!("{} in {mode:?} mode", s.name);
            let (shared, plain) = match (
                compile(&s, &Default::default()),
                compile_per_node(&s, &Default::default()),
            ) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(a), Err(b)) => {
                    assert_eq!(a.to_string(), b.to_string(), "{what}");
                    continue;
                }
                (a, b) => panic!("{what}: {:?} vs {:?}", a.err(), b.err()),
            };
            for i in 0..node_count(&plain) {
                assert!(
                    node_as_seen(&shared, i) == node_as_seen(&plain, i),
                    "{what}: node {i} differs"
                );
            }
            assert_eq!(shared.notes, plain.notes, "{what}");
        }
    }
}

/// Nodes that see the cluster alike hold one ruleset between them.
#[test]
fn nodes_alike_hold_one_ruleset() {
    let c = compile(&kpsim::synth::cluster(50, 2, 3), &Default::default()).unwrap();
    assert!(std::ptr::eq(c.rules(0), c.rules(2)));
    let c = compile(&local_cluster(), &Default::default()).unwrap();
    assert!(!std::ptr::eq(c.rules(0), c.rules(1)));
}
