//! The kernel lab's own tests: it agrees with kpsim where both run the same
//! rules, and it notices when the kernel runs different ones. They need
//! root and network namespaces, so they are `#[ignore]`d for plain
//! `cargo test`; `scripts/test` runs them with `--ignored` on a machine that
//! can (and says SKIPPED where it cannot).

use kpsim::compile::compile;
use kpsim::lab::{self, Options};
use kpsim::scenario::Scenario;
use std::path::Path;

fn compiled(name: &str) -> kpsim::compile::Compiled {
    compiled_in(name, None)
}

/// A bundled scenario, in kube-proxy `mode` if given.
fn compiled_in(name: &str, mode: Option<kpsim::scenario::ProxyMode>) -> kpsim::compile::Compiled {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(name);
    let mut s = Scenario::load(&path)
        .expect("bundled scenario loads")
        .scenario;
    if let Some(m) = mode {
        s.kube_proxy.mode = m;
    }
    compile(&s, &Default::default()).expect("compiles")
}

fn require_lab() {
    if let Some(why) = lab::unavailable() {
        panic!("the lab cannot run here: {why}");
    }
}

#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn kernel_agrees_with_generated_rules() {
    require_lab();
    let c = compiled("nodeport-cluster-policy.yaml");
    let r = lab::run(&c, &Options::default()).unwrap();
    assert!(r.flows.len() >= 10);
    for f in &r.flows {
        assert!(f.agrees(), "{f:?}");
    }
}

#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn a_kernel_without_masquerade_is_caught() {
    require_lab();
    let c = compiled("nodeport-cluster-policy.yaml");
    let node_a = c.rules(0).to_iptables_save();
    let tampered: String = node_a
        .lines()
        .filter(|l| !l.contains("-j MASQUERADE"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(tampered, node_a, "node-a's rules masquerade");
    let opts = Options {
        kernel_rules: [("node-a".to_string(), tampered)].into(),
        ..Options::default()
    };
    let r = lab::run(&c, &opts).unwrap();
    let f = r
        .flows
        .iter()
        .find(|f| f.label.starts_with("check: laptop via node-a"))
        .expect("the check is probed");
    assert!(!f.agrees(), "{f:?}");
    let problems = f.agreement.as_ref().unwrap().problems.join("\n");
    // Without SNAT, web-1 on node-b answers the laptop directly, bypassing
    // node-a's conntrack: it sees the client, and the reply breaks.
    assert!(problems.contains("web-1 sees 203.0.113.7"), "{problems}");
}

#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn uneven_balancing_is_caught() {
    require_lab();
    let c = compiled("three-endpoints.yaml");
    let node = c.scenario.nodes[0].name.clone();
    // Always the first endpoint in the kernel: the other two never show.
    let text = c
        .rules(0)
        .to_iptables_save()
        .replace("-m statistic --mode random --probability 0.33333333349", "");
    let opts = Options {
        kernel_rules: [(node, text)].into(),
        ..Options::default()
    };
    let r = lab::run(&c, &opts).unwrap();
    let f = r
        .flows
        .iter()
        .find(|f| f.label.starts_with("check: each endpoint gets a third"))
        .unwrap();
    assert!(!f.agrees(), "{f:?}");
}

#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn namespaces_are_removed_afterwards() {
    require_lab();
    let c = compiled("hairpin.yaml");
    let r = lab::run(&c, &Options::default()).unwrap();
    let mine = r.namespaces.clone();
    assert!(mine.starts_with(lab::netns::PREFIX));
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// What the kernel's `iptables-save` prints after loading kpsim's rules
/// must load in kpsim and print back byte for byte: the parser reads real
/// dumps (nf_tables back end, with its comment lines and counters).
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn kernel_dumps_of_every_bundled_node_round_trip() {
    require_lab();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let ns =
        lab::netns::Netns::create(format!("{}{}-dump", lab::netns::PREFIX, std::process::id()))
            .unwrap();
    let mut dumps = 0;
    for f in files {
        let s = Scenario::load(&f).unwrap().scenario;
        let c = compile(&s, &Default::default()).unwrap();
        for i in 0..s.nodes.len() {
            ns.exec(&["iptables-restore"], Some(&c.rules(i).to_iptables_save()))
                .unwrap();
            let real = ns.exec(&["iptables-save"], None).unwrap();
            let parsed = kpsim::netfilter::Ruleset::load(&real)
                .unwrap_or_else(|e| panic!("{}: {e}\n{real}", f.display()));
            assert_eq!(parsed.to_iptables_save(), real, "{}", f.display());
            dumps += 1;
        }
    }
    assert!(dumps >= 40, "{dumps}");
}

/// A node dump without kube-proxy's MASQUERADE (`--rules`), in kpsim and
/// the kernel alike: a node port on node-a reached from node-b is DNATed
/// back to node-b with node-b's own address as source, and node-b drops it
/// as a martian. The lab found kpsim missing that check; now they agree.
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn a_dump_without_masquerade_agrees_with_the_kernel_on_martians() {
    require_lab();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/nodeport-routed.yaml");
    let s = Scenario::load(&path).unwrap().scenario;
    let generated = compile(&s, &Default::default()).unwrap();
    let dump: String = generated
        .rules(0)
        .to_iptables_save()
        .lines()
        .filter(|l| !l.contains("-j MASQUERADE"))
        .map(|l| format!("{l}\n"))
        .collect();
    let overrides = [("node-a".to_string(), ("dump".to_string(), dump))].into();
    let c = compile(&s, &overrides).unwrap();
    let r = lab::run(&c, &Options::default()).unwrap();
    for f in &r.flows {
        assert!(f.agrees(), "{f:?}");
    }
    let martian = r
        .flows
        .iter()
        .find(|f| f.label == "matrix: node-b -> default/web:http/tcp node port on node-a")
        .expect("the flow is probed");
    assert!(
        martian
            .predicted
            .keys()
            .all(|o| o.0.iter().all(|s| s.reached.is_none())),
        "{martian:?}"
    );
}

/// Session affinity is compared over a second connection from the same
/// client: a kernel whose rules forget the affinity must disagree.
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn a_kernel_without_affinity_is_caught_on_the_second_connection() {
    require_lab();
    let c = compiled("session-affinity.yaml");
    let agreed = lab::run(&c, &Options::default()).unwrap();
    let sequences: Vec<_> = agreed
        .flows
        .iter()
        .filter(|f| f.label.ends_with("then again from the same client"))
        .collect();
    assert!(!sequences.is_empty());
    assert!(sequences.iter().all(|f| f.agrees()), "{sequences:?}");
    let kernel_rules = c
        .scenario
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let text: String = c
                .rules(i)
                .to_iptables_save()
                .lines()
                .filter(|l| !l.contains("--rcheck"))
                .map(|l| format!("{l}\n"))
                .collect();
            (n.name.clone(), text)
        })
        .collect();
    let r = lab::run(
        &c,
        &Options {
            kernel_rules,
            ..Options::default()
        },
    )
    .unwrap();
    let f = r
        .flows
        .iter()
        .find(|f| {
            f.label
                == "check: a first connection is balanced evenly, then again from the same client"
        })
        .unwrap();
    assert!(!f.agrees(), "{f:?}");
}

/// kube-proxy's route_localnet is what makes 127.0.0.1:NODEPORT reach a
/// pod: a node whose kernel keeps it off must disagree with kpsim there
/// (the packet with its 127.0.0.1 source may not leave), and agree
/// everywhere once the model's setting is applied.
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn a_kernel_without_route_localnet_is_caught_on_localhost_node_ports() {
    require_lab();
    let c = compiled("localhost-nodeports.yaml");
    let label = "check: a node reaches a remote pod through its localhost node port, masqueraded to its own address";
    let agreed = lab::run(&c, &Options::default()).unwrap();
    for f in &agreed.flows {
        assert!(f.agrees(), "{f:?}");
    }
    let opts = Options {
        kernel_sysctls: [(
            "node-a".to_string(),
            vec![("net.ipv4.conf.all.route_localnet".into(), "0".into())],
        )]
        .into(),
        ..Options::default()
    };
    let r = lab::run(&c, &opts).unwrap();
    let f = r.flows.iter().find(|f| f.label == label).unwrap();
    assert!(!f.agrees(), "{f:?}");
}

fn compiled_nft(name: &str) -> kpsim::compile::Compiled {
    compiled_in(name, Some(kpsim::scenario::ProxyMode::Nftables))
}

#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn kernel_agrees_with_generated_nftables_rules() {
    require_lab();
    let c = compiled_nft("nodeport-cluster-policy.yaml");
    assert!(c.nft_rules(0).is_some());
    let r = lab::run(&c, &Options::default()).unwrap();
    assert!(r.flows.len() >= 10);
    for f in &r.flows {
        assert!(f.agrees(), "{f:?}");
    }
}

/// nftables mode's masquerade is the `masquerading` chain's rule: a
/// kernel without it must disagree where kpsim says the source is
/// rewritten.
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn a_kernel_without_nft_masquerade_is_caught() {
    require_lab();
    let c = compiled_nft("nodeport-cluster-policy.yaml");
    let node_a = c.nft_rules(0).unwrap().to_nft();
    let tampered = node_a.replace("\t\tmasquerade fully-random\n", "");
    assert_ne!(tampered, node_a);
    let opts = Options {
        kernel_rules: [("node-a".to_string(), tampered)].into(),
        ..Default::default()
    };
    let r = lab::run(&c, &opts).unwrap();
    let f = r
        .flows
        .iter()
        .find(|f| f.label.starts_with("check: laptop via node-a"))
        .expect("the check is probed");
    assert!(!f.agrees(), "{f:?}");
}

/// What the kernel lists after `nft -f` of every bundled node's nftables
/// rules reads back in kpsim and prints as kpsim printed it (elements of
/// hash sets in kpsim's sorted order: the kernel lists them in its own
/// random hash order).
#[test]
#[ignore = "needs root and network namespaces (scripts/test runs it)"]
fn kernel_listings_of_every_nftables_node_read_back_identically() {
    require_lab();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut listings = 0;
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let c = compiled_nft(&name);
        for i in 0..c.scenario.nodes.len() {
            let ns = lab::netns::Netns::create(format!(
                "{}{}-nft{listings}",
                lab::netns::PREFIX,
                std::process::id()
            ))
            .unwrap();
            let ours = c.nft_rules(i).unwrap().to_nft();
            ns.exec(&["nft", "-f", "-"], Some(&ours))
                .unwrap_or_else(|e| panic!("{name}: {e}\n{ours}"));
            let real = ns.exec(&["nft", "list", "ruleset"], None).unwrap();
            let parsed = kpsim::nftables::Ruleset::parse(&real)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{real}"));
            assert_eq!(parsed.to_nft(), ours, "{name}");
            listings += 1;
        }
    }
    assert!(listings >= 40, "{listings}");
}
