//! Compile a synthetic cluster and report how long it took: the figure
//! behind the "compile scales to 10k services × 100 nodes" requirement,
//! measurable under `/usr/bin/time -v` for peak memory.
//!
//! `cargo run --release --example synth_compile -- SERVICES ENDPOINTS NODES [local] [nftables]`
//! (`local`: NodePort services with `externalTrafficPolicy: Local`, so
//! nodes' rules differ; `nftables`: kube-proxy in nftables mode).

use std::time::Instant;

/// The allocator the `kpsim` binary uses, so that the figures are its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let nft = args.last().is_some_and(|a| a == "nftables");
    if nft {
        args.pop();
    }
    let local = args.last().is_some_and(|a| a == "local");
    if local {
        args.pop();
    }
    let args: Vec<usize> = args
        .iter()
        .map(|a| a.parse().expect("SERVICES ENDPOINTS NODES as numbers"))
        .collect();
    let [services, endpoints, nodes] = args[..] else {
        eprintln!("usage: synth_compile SERVICES ENDPOINTS NODES [local]");
        std::process::exit(2);
    };
    let t = Instant::now();
    let mut s = kpsim::synth::cluster(services, endpoints, nodes);
    if local {
        // Every NodePort service with `externalTrafficPolicy: Local`: each
        // node's rules then differ where its local endpoints do.
        for svc in &mut s.services {
            let spec = svc.spec.as_mut().expect("spec");
            if spec.type_.as_deref() == Some("NodePort") {
                spec.external_traffic_policy = Some("Local".into());
            }
        }
    }
    if nft {
        s.kube_proxy.mode = kpsim::scenario::ProxyMode::Nftables;
    }
    let built = t.elapsed();
    let t = Instant::now();
    let c = kpsim::compile::compile(&s, &Default::default()).expect("compiles");
    let compiled = t.elapsed();
    let rules: usize = c
        .cluster
        .engines
        .iter()
        .flat_map(|e| &e.ruleset().tables)
        .flat_map(|t| &t.chains)
        .map(|ch| ch.rules.len())
        .sum::<usize>()
        + c.cluster
            .nft
            .iter()
            .flatten()
            .flat_map(|e| &e.ruleset().tables)
            .flat_map(|t| &t.chains)
            .map(|ch| ch.rules.len())
            .sum::<usize>();
    let elements: usize = c
        .cluster
        .nft
        .iter()
        .flatten()
        .flat_map(|e| &e.ruleset().tables)
        .flat_map(|t| &t.sets)
        .map(|s| s.elements.len())
        .sum();
    let t = Instant::now();
    drop(c);
    let dropped = t.elapsed();
    println!(
        "{services} services x {endpoints} endpoints x {nodes} nodes: scenario {built:.2?}, compile {compiled:.2?}, {rules} rules, {elements} set/map elements, drop {dropped:.2?}"
    );
}
