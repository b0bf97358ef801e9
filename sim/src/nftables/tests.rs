//! nftables engine tests: text round trips (fixtures listed by a real
//! kernel's `nft list ruleset`), load errors, and packets through
//! kube-proxy-style rules.

use super::*;
use crate::netfilter::{
    BaseChains, ChainStep, EvalOptions, Event, HostState, Outcome, RejectWith, Stack,
};
use crate::prob::{enumerate, FirstChooser};
use crate::routing::{HostNet, IfaceKind, RouteEntry};
use crate::wire::{Headers, TCP_SYN};
use std::net::Ipv4Addr;

const LISTING: &str = include_str!("../../tests/data/nftables/listing.nft");
const EXPR_INPUT: &str = include_str!("../../tests/data/nftables/expressions-input.nft");
const EXPR_LISTED: &str = include_str!("../../tests/data/nftables/expressions-listed.nft");

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn kernel_listing_round_trips_byte_for_byte() {
    let rs = Ruleset::parse(LISTING).unwrap();
    assert_eq!(rs.to_nft(), LISTING);
    let rs = Ruleset::parse(EXPR_LISTED).unwrap();
    assert_eq!(rs.to_nft(), EXPR_LISTED);
}

#[test]
fn numbering_as_listed_gives_each_rule_its_line_in_the_listing() {
    for text in [LISTING, EXPR_LISTED, KP] {
        let read = Ruleset::parse(text).unwrap();
        let mut numbered = read.clone();
        for c in numbered.tables.iter_mut().flat_map(|t| t.chains.iter_mut()) {
            for r in &mut c.rules {
                r.line = 0;
            }
        }
        numbered.number_as_listed();
        assert_eq!(numbered, read);
    }
}

#[test]
fn input_is_normalised_as_the_kernel_lists_it() {
    // What `nft -f` loaded and `nft list ruleset` printed on a real kernel.
    let rs = Ruleset::parse(EXPR_INPUT).unwrap();
    assert_eq!(rs.to_nft(), EXPR_LISTED);
}

/// What a kernel did with these (nft 1.0 in a namespace): an anonymous
/// set lists in key order whatever order it was written in, and an element
/// given twice is held once; the same key with other data is refused.
#[test]
fn anonymous_sets_list_in_key_order_and_elements_are_held_once() {
    let rs = Ruleset::parse(
        "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.2, 10.0.0.1, 10.0.0.2 }\n\t}\n\n\tchain c {\n\t\tip saddr != { 203.0.113.0/24, 192.168.10.11, 198.51.100.88 } drop\n\t}\n}\n",
    )
    .unwrap();
    assert_eq!(
        rs.to_nft(),
        "table ip t {\n\tset s {\n\t\ttype ipv4_addr\n\t\telements = { 10.0.0.1, 10.0.0.2 }\n\t}\n\n\tchain c {\n\t\tip saddr != { 192.168.10.11, 198.51.100.88, 203.0.113.0/24 } drop\n\t}\n}\n"
    );
    let e = Ruleset::parse(
        "table ip t {\n\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 10.0.0.1 : drop, 10.0.0.1 : accept }\n\t}\n}\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
}

#[test]
fn errors_name_line_and_column() {
    let e = Ruleset::parse("table ip t {\n  chain c {\n    ip saddr 10.0.0.300 accept\n  }\n}\n")
        .unwrap_err();
    assert_eq!((e.line, e.col), (3, 14), "{e}");
    assert!(e.to_string().contains("IPv4 address"), "{e}");
    let e = Ruleset::parse("table ip t {\n  chain c {\n    ip tos 3 accept\n  }\n}\n").unwrap_err();
    assert_eq!((e.line, e.col), (3, 8), "{e}");
    let e = Ruleset::parse("table ip t {\n  chain c {\n    jump nowhere\n  }\n}\n").unwrap();
    let err = Engine::new(e).unwrap_err();
    assert_eq!(err.line, 3, "{err}");
    assert!(err.message.contains("nowhere"), "{err}");
}

#[test]
fn load_checks_refuse_loops_and_misplaced_nat() {
    let looped = "table ip t {\n chain a {\n  jump b\n }\n chain b {\n  jump a\n }\n}\n";
    let err = Engine::new(Ruleset::parse(looped).unwrap()).unwrap_err();
    assert!(err.message.contains("loop"), "{err}");
    let dnat_post = "table ip t {\n chain p {\n  type nat hook postrouting priority srcnat; policy accept;\n  dnat to 10.0.0.1\n }\n}\n";
    let err = Engine::new(Ruleset::parse(dnat_post).unwrap()).unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    let nat_in_filter = "table ip t {\n chain f {\n  type filter hook prerouting priority 0; policy accept;\n  jump x\n }\n chain x {\n  dnat to 10.0.0.1\n }\n}\n";
    let err = Engine::new(Ruleset::parse(nat_in_filter).unwrap()).unwrap_err();
    assert!(err.message.contains("nat chains"), "{err}");
}

/// A node: eth0 192.168.0.2, pods on cni0 10.0.1.0/24.
fn node_net() -> HostNet {
    let mut n = HostNet::new(true);
    n.add_interface(
        "eth0",
        IfaceKind::Ethernet,
        vec!["192.168.0.2/24".parse().unwrap()],
    );
    n.add_interface(
        "cni0",
        IfaceKind::Bridge,
        vec!["10.0.1.1/24".parse().unwrap()],
    );
    n.add_route(RouteEntry {
        dst: "0.0.0.0/0".parse().unwrap(),
        via: Some(a("192.168.0.1")),
        dev: "eth0".into(),
        onlink: false,
        src: None,
    });
    n.add_route(RouteEntry {
        dst: "10.0.1.0/24".parse().unwrap(),
        via: None,
        dev: "cni0".into(),
        onlink: false,
        src: Some(a("10.0.1.1")),
    });
    n
}

/// kube-proxy's shape: a service with three endpoints, one with no
/// endpoints, masquerade by mark.
const KP: &str = r#"table ip kube-proxy {
	map service-ips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 172.30.0.41 . tcp . 80 : goto service-A }
	}

	map no-endpoint-services {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
	}

	set affinity-e1 {
		type ipv4_addr
		size 65535
		flags dynamic,timeout
		timeout 3h
	}

	chain filter-forward {
		type filter hook forward priority filter; policy accept;
		ct state new ip daddr . meta l4proto . th dport vmap @no-endpoint-services
	}

	chain nat-prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump services
	}

	chain nat-postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump masquerading
	}

	chain reject-chain {
		reject
	}

	chain services {
		ip daddr . meta l4proto . th dport vmap @service-ips
	}

	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}

	chain masquerading {
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}

	chain service-A {
		ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
		ip saddr @affinity-e1 goto endpoint-e1
		numgen random mod 3 vmap { 0 : goto endpoint-e1, 1 : goto endpoint-e2, 2 : goto endpoint-e3 }
	}

	chain endpoint-e1 {
		ip saddr 10.0.1.5 jump mark-for-masquerade
		update @affinity-e1 { ip saddr }
		meta l4proto tcp dnat to 10.0.1.5:8080
	}

	chain endpoint-e2 {
		ip saddr 10.0.2.5 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.0.2.5:8080
	}

	chain endpoint-e3 {
		ip saddr 10.0.3.5 jump mark-for-masquerade
		meta l4proto tcp dnat to 10.0.3.5:8080
	}
}
"#;

fn kp() -> Engine {
    let rs = Ruleset::parse(KP).unwrap();
    assert_eq!(rs.to_nft(), KP);
    Engine::new(rs).unwrap()
}

fn receive(
    e: &Engine,
    st: &mut HostState,
    h: Headers,
    iface: &str,
    chooser: &mut dyn crate::prob::Chooser,
) -> (Outcome, Vec<Event>) {
    let iptables = crate::netfilter::Engine::new(Default::default()).unwrap();
    let rulesets: Vec<&dyn BaseChains> = vec![&iptables, e];
    let mut stack = Stack {
        rulesets,
        state: st,
        opts: EvalOptions::default(),
    };
    let mut ev = Vec::new();
    let out = stack
        .receive(h, iface, 0, &node_net(), chooser, &mut ev)
        .unwrap();
    (out, ev)
}

fn dest(o: &Outcome) -> Option<(Ipv4Addr, u16)> {
    match o {
        Outcome::Transmit { headers, .. } | Outcome::Local(headers) => {
            Some((headers.dst, headers.dport))
        }
        _ => None,
    }
}

#[test]
fn numgen_spreads_a_cluster_ip_over_three_endpoints_a_third_each() {
    let e = kp();
    let syn = Headers::tcp(a("10.0.1.9"), 40000, a("172.30.0.41"), 80, TCP_SYN);
    let runs = enumerate(|ch| {
        let mut st = HostState::default();
        dest(&receive(&e, &mut st, syn, "cni0", ch).0)
    });
    assert_eq!(runs.len(), 3);
    // The kernel scales a 32-bit random number into three buckets of
    // 1431655766, 1431655765 and 1431655765 values.
    let shares: Vec<String> = runs.iter().map(|(p, _)| p.exact_string()).collect();
    assert_eq!(
        shares,
        [
            "715827883/2147483648",
            "1431655765/4294967296",
            "1431655765/4294967296"
        ]
    );
    for (p, d) in &runs {
        assert_eq!(p.readable(), "1/3", "{d:?}");
    }
    let got: Vec<_> = runs.iter().map(|(_, d)| d.unwrap().0).collect();
    assert_eq!(got, [a("10.0.1.5"), a("10.0.2.5"), a("10.0.3.5")]);
}

#[test]
fn the_trace_names_the_map_element_and_the_draw() {
    let e = kp();
    let mut st = HostState::default();
    let syn = Headers::tcp(a("10.0.1.9"), 40000, a("172.30.0.41"), 80, TCP_SYN);
    let (_, ev) = receive(&e, &mut st, syn, "cni0", &mut FirstChooser);
    let steps: Vec<&ChainStep> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Chain(r) if r.chain == "nat-prerouting" => Some(r.steps.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(steps.iter().any(|s| matches!(s, ChainStep::Lookup { set, key, element: Some(el) }
        if set == "@service-ips" && key == "172.30.0.41 . tcp . 80" && el == "172.30.0.41 . tcp . 80 : goto service-A")));
    assert!(steps.iter().any(|s| matches!(
        s,
        ChainStep::Random {
            value: 0,
            modulus: 3,
            ..
        }
    )));
}

#[test]
fn affinity_set_sends_the_same_client_to_the_same_endpoint_until_timeout() {
    let e = kp();
    let mut st = HostState::default();
    let syn = Headers::tcp(a("10.0.1.9"), 40000, a("172.30.0.41"), 80, TCP_SYN);
    // The first connection picks endpoint 1 and remembers the client.
    let (o, _) = receive(&e, &mut st, syn, "cni0", &mut FirstChooser);
    assert_eq!(dest(&o), Some((a("10.0.1.5"), 8080)));
    // A new connection (another source port) an hour later: no draw.
    st.matches.now = 3600;
    let again = Headers::tcp(a("10.0.1.9"), 40001, a("172.30.0.41"), 80, TCP_SYN);
    let runs = enumerate(|ch| {
        let mut s2 = st.clone();
        dest(&receive(&e, &mut s2, again, "cni0", ch).0)
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1, Some((a("10.0.1.5"), 8080)));
    // After the 3h timeout the set has forgotten it.
    st.matches.now = 3 * 3600;
    let runs = enumerate(|ch| {
        let mut s2 = st.clone();
        dest(&receive(&e, &mut s2, again, "cni0", ch).0)
    });
    assert_eq!(runs.len(), 3);
}

#[test]
fn off_cluster_source_is_masqueraded_by_mark() {
    let e = kp();
    let mut st = HostState::default();
    let syn = Headers::tcp(a("192.168.0.7"), 40000, a("172.30.0.41"), 80, TCP_SYN);
    let (o, _) = receive(&e, &mut st, syn, "eth0", &mut FirstChooser);
    match o {
        Outcome::Transmit { headers, .. } => {
            assert_eq!(headers.dst, a("10.0.1.5"));
            // masquerade picks cni0's address toward the pod.
            assert_eq!(headers.src, a("10.0.1.1"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn service_without_endpoints_is_rejected_with_port_unreachable() {
    let e = kp();
    let mut st = HostState::default();
    let syn = Headers::tcp(a("10.0.1.9"), 40000, a("172.30.0.46"), 80, TCP_SYN);
    let (o, _) = receive(&e, &mut st, syn, "cni0", &mut FirstChooser);
    assert!(
        matches!(
            &o,
            Outcome::Dropped {
                reason: crate::netfilter::DropReason::Reject {
                    with: RejectWith::IcmpPortUnreachable,
                    ..
                },
                ..
            }
        ),
        "{o:?}"
    );
}

/// What `scripts/kernel-check-nft-hooks.py` shows on a real kernel
/// (`tests/data/kernel/nft-hooks-expected.txt`): iptables' nat table and
/// an nftables nat chain declared at -50 share the NAT core's entry at
/// -100; the first to bind wins, and every chain after -100 (nft filter
/// at -75 and -40, iptables filter at 0) sees the DNAT binding, while
/// mangle (-150) does not.
#[test]
fn nat_chains_run_in_the_nat_core_whatever_their_priority() {
    let script = include_str!("../../../scripts/kernel-check-nft-hooks.py");
    let between = |a: &str, b: &str| {
        let s = script.split(a).nth(1).unwrap();
        s.split(b).next().unwrap().replace("\\t", "\t")
    };
    let ipt = crate::netfilter::Engine::new(
        crate::netfilter::Ruleset::load(&between("IPTABLES = \"\"\"", "\"\"\"")).unwrap(),
    )
    .unwrap();
    let nft = Engine::new(Ruleset::parse(&between("NFT = \"\"\"", "\"\"\"")).unwrap()).unwrap();
    let mut net = HostNet::new(false);
    net.add_route(RouteEntry {
        dst: "10.96.0.0/16".parse().unwrap(),
        via: None,
        dev: "lo".into(),
        onlink: false,
        src: None,
    });
    let mut st = HostState::default();
    let mut stack = Stack {
        rulesets: vec![&ipt, &nft],
        state: &mut st,
        opts: EvalOptions::default(),
    };
    let mut ev = Vec::new();
    let pkt = Headers::udp(a("127.0.0.1"), 40000, a("10.96.0.10"), 9);
    let out = stack
        .output(pkt, 0, &net, &mut FirstChooser, &mut ev)
        .unwrap();
    // Which chains' first rules fired, in kernel order: iptables' nat
    // DNAT, then every chain that sees the binding; not mangle (before
    // NAT), not the nft nat chain (the binding was already made).
    let fired: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Table { table, steps, .. } => steps
                .iter()
                .find(|s| matches!(s, crate::netfilter::Step::Matched { index: 0, .. }))
                .map(|_| format!("iptables {table}")),
            Event::Chain(r) => r
                .steps
                .iter()
                .any(|s| matches!(s, ChainStep::Rule { .. }))
                .then(|| r.chain.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        fired,
        ["iptables nat", "filter-75", "filter-40", "iptables filter"]
    );
    let Outcome::Transmit { headers, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(headers.dst, a("127.0.0.3"));
    let expected = include_str!("../../tests/data/kernel/nft-hooks-expected.txt");
    assert!(expected.contains("nft nat chain at -50 ran: False"));
    assert!(expected.contains("nft filter at -75 sees a DNAT binding: True"));
    assert!(expected.contains("iptables mangle (-150) sees a DNAT binding: False"));
}

/// Interval sets, prefixes and ranges, anonymous sets with `!=`, ct state
/// flags, `numgen inc` counting packet by packet.
#[test]
fn sets_intervals_flags_and_numgen_inc() {
    let text = r#"table ip t {
	set nets {
		type ipv4_addr
		flags interval
		elements = { 10.0.0.0/8, 192.168.1.1-192.168.1.5 }
	}

	chain fwd {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
		tcp dport != { 22, 80 } drop
		ip daddr @nets numgen inc mod 2 vmap { 0 : accept, 1 : drop }
		reject with tcp reset
	}
}
"#;
    let e = Engine::new(Ruleset::parse(text).unwrap()).unwrap();
    let verdict = |st: &mut HostState, dst: &str, port: u16| {
        let syn = Headers::tcp(a("172.16.0.9"), 40000, a(dst), port, TCP_SYN);
        match receive(&e, st, syn, "eth0", &mut FirstChooser).0 {
            Outcome::Transmit { .. } => "accept".to_string(),
            Outcome::Dropped { reason, .. } => {
                format!("{reason:?}").split(' ').next().unwrap().to_string()
            }
            other => format!("{other:?}"),
        }
    };
    let mut st = HostState::default();
    // Port 443: not in { 22, 80 } → dropped by the != rule.
    assert_eq!(verdict(&mut st, "10.1.2.3", 443), "Rule");
    // Port 80 to the prefix: numgen inc alternates accept, drop, accept.
    assert_eq!(verdict(&mut st, "10.1.2.3", 80), "accept");
    assert_eq!(verdict(&mut st, "192.168.1.3", 80), "Rule");
    assert_eq!(verdict(&mut st, "192.168.1.5", 80), "accept");
    // Outside the interval set: the reset.
    assert!(verdict(&mut st, "192.168.1.6", 80).starts_with("Reject"));
}
