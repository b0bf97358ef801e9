//! Benchmarks: ruleset load and first-packet evaluation at 1k/10k/50k
//! services, compiling a 10k-service/50k-endpoint/100-node cluster,
//! tracing one flow through a 10k-service node (iptables and nftables
//! mode), and a 1k-service matrix.
//!
//! Run: `cargo bench --bench kpsim` (add `-- --quick` for a fast pass).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kpsim::compile::compile;
use kpsim::netfilter::{Engine, EvalOptions, HostState, Ruleset, Stack};
use kpsim::prob::FirstChooser;
use kpsim::proxier::{node_rules, ProxyModel};
use kpsim::wire::{Headers, TCP_SYN};
use std::hint::black_box;
use std::time::Duration;

/// node-0's generated rules for `services` services with 2 endpoints each.
fn node_text(services: usize) -> (String, kpsim::compile::Compiled) {
    let s = kpsim::synth::cluster(services, 2, 4);
    let model = ProxyModel::build(&s.services, &s.slices);
    let cfg = kpsim::compile::proxy_config(&s);
    let info = kpsim::proxier::NodeInfo {
        name: "node-0".into(),
        ip: s.nodes[0].address,
        pod_cidr: Some(s.nodes[0].pod_cidr),
        zone: None,
        addresses: vec![s.nodes[0].address],
    };
    let text = node_rules(&cfg, &info, &model).restore_text;
    let c = compile(&s, &Default::default()).unwrap();
    (text, c)
}

fn load_and_first_packet(c: &mut Criterion) {
    let mut g = c.benchmark_group("netfilter");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for n in [1_000usize, 10_000, 50_000] {
        let (text, compiled) = node_text(n);
        let rules = text.lines().filter(|l| l.starts_with("-A")).count();
        eprintln!("{n} services: {rules} rules on node-0");
        g.bench_with_input(BenchmarkId::new("load", n), &text, |b, t| {
            b.iter(|| Engine::new(Ruleset::load(black_box(t)).unwrap()).unwrap())
        });
        let engine = Engine::new(Ruleset::load(&text).unwrap()).unwrap();
        let net = &compiled.cluster.network.hosts[0].net;
        // A pod on node-0 to the cluster IP of the service in the middle.
        let dst = std::net::Ipv4Addr::from(
            u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) + 10 + (n / 2) as u32,
        );
        let syn = Headers::tcp("10.244.0.254".parse().unwrap(), 40000, dst, 80, TCP_SYN);
        for (name, linear) in [("first_packet", false), ("first_packet_linear", true)] {
            if linear && n > 10_000 {
                continue;
            }
            g.bench_function(BenchmarkId::new(name, n), |b| {
                b.iter(|| {
                    let mut state = HostState::default();
                    let mut stack = Stack {
                        rulesets: vec![&engine],
                        state: &mut state,
                        opts: EvalOptions {
                            linear,
                            explain_misses: false,
                        },
                    };
                    let mut events = Vec::new();
                    black_box(
                        stack
                            .receive(syn, "cni0", 0, net, &mut FirstChooser, &mut events)
                            .unwrap(),
                    )
                })
            });
        }
    }
    g.finish();
}

fn compile_and_trace(c: &mut Criterion) {
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    let big = kpsim::synth::cluster(10_000, 5, 100);
    g.bench_function("compile_10k_services_50k_endpoints_100_nodes", |b| {
        b.iter(|| compile(black_box(&big), &Default::default()).unwrap())
    });
    let s = kpsim::synth::cluster(10_000, 5, 2);
    let compiled = compile(&s, &Default::default()).unwrap();
    let flow = compiled.flow("probe-0", "svc-5000:80", None, 0).unwrap();
    g.bench_function("trace_one_flow_10k_services_all_branches", |b| {
        b.iter(|| {
            kpsim::trace::trace(&compiled.cluster, std::slice::from_ref(black_box(&flow))).unwrap()
        })
    });
    // The same trace with kube-proxy in nftables mode: map lookups
    // instead of a walk of KUBE-SERVICES.
    let mut s = kpsim::synth::cluster(10_000, 5, 2);
    s.kube_proxy.mode = kpsim::scenario::ProxyMode::Nftables;
    let compiled = compile(&s, &Default::default()).unwrap();
    let flow = compiled.flow("probe-0", "svc-5000:80", None, 0).unwrap();
    g.bench_function("trace_one_flow_10k_services_all_branches_nftables", |b| {
        b.iter(|| {
            kpsim::trace::trace(&compiled.cluster, std::slice::from_ref(black_box(&flow))).unwrap()
        })
    });
    let m = kpsim::synth::cluster(1_000, 2, 2);
    let mc = compile(&m, &Default::default()).unwrap();
    g.bench_function("matrix_1k_services", |b| {
        b.iter(|| kpsim::matrix::compute(black_box(&mc)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, load_and_first_packet, compile_and_trace);
criterion_main!(benches);
