//! Engine tests written in iptables-save text: parse/print round trips,
//! load errors with lines, chain semantics, hooks, conntrack and NAT.

use super::*;
use crate::prob::{enumerate, FirstChooser, Probability};
use crate::routing::{HostNet, IfaceKind, RouteEntry};
use crate::wire::{Headers, TCP_ACK, TCP_SYN};
use std::net::Ipv4Addr;

const NODE_DUMP: &str = include_str!("../../tests/data/iptables/kube-proxy-node.txt");

fn a(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn load(text: &str) -> Engine {
    Engine::new(Ruleset::load(text).unwrap()).unwrap()
}

/// node-a of the test dump: eth0 192.168.10.11, cni0 10.244.1.1/24 with
/// pod 10.244.1.5, other pods routed via node-b 192.168.10.12.
fn node_net() -> HostNet {
    let mut n = HostNet::new(true);
    n.add_interface(
        "eth0",
        IfaceKind::Ethernet,
        vec!["192.168.10.11/32".parse().unwrap()],
    );
    n.add_interface(
        "cni0",
        IfaceKind::Bridge,
        vec!["10.244.1.1/24".parse().unwrap()],
    );
    n.add_route(RouteEntry {
        dst: "0.0.0.0/0".parse().unwrap(),
        via: None,
        dev: "eth0".into(),
        onlink: true,
        src: None,
    });
    n.add_route(RouteEntry {
        dst: "10.244.1.0/24".parse().unwrap(),
        via: None,
        dev: "cni0".into(),
        onlink: false,
        src: Some(a("10.244.1.1")),
    });
    n.add_route(RouteEntry {
        dst: "10.244.2.0/24".parse().unwrap(),
        via: Some(a("192.168.10.12")),
        dev: "eth0".into(),
        onlink: true,
        src: None,
    });
    n
}

#[test]
fn canonical_dump_round_trips_byte_for_byte() {
    let rs = Ruleset::load(NODE_DUMP).unwrap();
    assert_eq!(rs.to_iptables_save(), NODE_DUMP);
    assert_eq!(rs.tables.len(), 2);
}

#[test]
fn kube_proxy_restore_order_prints_canonically() {
    let text = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-X - [0:0]\n-A KUBE-SERVICES -m comment --comment \"ns/svc:p cluster IP\" -m tcp -p tcp -d 10.96.0.10 --dport 53 -j KUBE-SVC-X\nCOMMIT\n";
    let rs = Ruleset::parse(text).unwrap();
    let line = rs.tables[0].chains[0].rules[0].to_iptables_save("KUBE-SERVICES");
    assert_eq!(
        line,
        "-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"ns/svc:p cluster IP\" -m tcp --dport 53 -j KUBE-SVC-X"
    );
}

#[test]
fn every_match_and_target_round_trips() {
    let lines = [
        "-A C -s 10.0.0.0/8 ! -d 10.1.0.0/16 -i eth+ ! -o cni0 -p udp -m udp ! --sport 1:1024 --dport 53 -j ACCEPT",
        "-A C -p tcp -m tcp --dport 80 --tcp-flags FIN,SYN,RST,ACK SYN -j DROP",
        "-A C -p icmp -m icmp --icmp-type 8 -j ACCEPT",
        "-A C -p tcp -m multiport --dports 80,443,8000:8080 -j RETURN",
        "-A C -m comment --comment plain_word-1 -j C2",
        "-A C -m comment --comment \"with \\\"quotes\\\" and spaces\" -g C2",
        "-A C -m addrtype --src-type LOCAL ! --dst-type LOCAL,BROADCAST --limit-iface-in -j ACCEPT",
        "-A C -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A C -m connmark --mark 0x1 -j RETURN",
        "-A C -m conntrack ! --ctstate INVALID,NEW,RELATED,ESTABLISHED,UNTRACKED,SNAT,DNAT --ctproto 6 --ctorigdst 10.96.0.1/32 --ctorigdstport 443 --ctdir REPLY -j ACCEPT",
        "-A C -m state --state RELATED,ESTABLISHED -j ACCEPT",
        "-A C -m statistic --mode random --probability 0.25000000000 -j C2",
        "-A C -m statistic --mode nth --every 3 --packet 0 -j C2",
        "-A C -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-X --mask 255.255.255.255 --rsource -j C2",
        "-A C -m recent --set --name KUBE-SEP-X --mask 255.255.255.255 --rsource",
        "-A C -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        "-A C -j MARK --set-xmark 0x4000/0x4000",
        "-A C -j CONNMARK --save-mark --nfmask 0xffffffff --ctmask 0xffffffff",
        "-A C -j LOG --log-prefix \"kpsim: \" --log-level 4",
        "-A C -j NFLOG --nflog-prefix x --nflog-group 5",
        "-A C -j REJECT --reject-with tcp-reset",
        "-A C -f -j DROP",
    ];
    for l in lines {
        let text = format!("*filter\n:C - [0:0]\n:C2 - [0:0]\n{l}\nCOMMIT\n");
        let rs = Ruleset::parse(&text).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(rs.to_iptables_save(), text, "round trip of {l}");
    }
    let nat = [
        "-A POSTROUTING -o eth0 -j MASQUERADE --to-ports 1024-2048 --random-fully",
        "-A POSTROUTING -s 10.0.0.0/8 -j SNAT --to-source 1.2.3.4:1000-2000 --random",
        "-A PREROUTING -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1-10.0.0.9:8080",
    ];
    for l in nat {
        let text =
            format!("*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n{l}\nCOMMIT\n");
        let rs = Ruleset::load(&text).unwrap_or_else(|e| panic!("{l}: {e}"));
        assert_eq!(rs.to_iptables_save(), text);
    }
}

#[test]
fn mark_forms_reduce_to_set_xmark() {
    for (written, saved) in [
        ("--set-mark 0x10", "--set-xmark 0x10/0xffffffff"),
        ("--or-mark 0x4000", "--set-xmark 0x4000/0x4000"),
        ("--xor-mark 0x4000", "--set-xmark 0x4000/0x0"),
        ("--and-mark 0xff", "--set-xmark 0x0/0xffffff00"),
    ] {
        let rs = Ruleset::parse(&format!(
            "*mangle\n:C - [0:0]\n-A C -j MARK {written}\nCOMMIT\n"
        ))
        .unwrap();
        assert!(rs.to_iptables_save().contains(saved), "{written}");
    }
}

#[test]
fn errors_name_the_line() {
    let cases = [
        (
            "*filter\n:C - [0:0]\n-A C -m bogus --x 1 -j ACCEPT\nCOMMIT\n",
            3,
            "unknown match module \"bogus\"",
        ),
        (
            "*filter\n:C - [0:0]\n-A C -m tcp --frobnicate 1\nCOMMIT\n",
            3,
            "unknown option",
        ),
        (
            "*filter\n:C - [0:0]\n-A C -s 10.0.0.300/8 -j ACCEPT\nCOMMIT\n",
            3,
            "bad address",
        ),
        (
            "*filter\n:C - [0:0]\n-A C -m statistic --mode random --probability 1.5 -j C\nCOMMIT\n",
            3,
            "outside [0, 1]",
        ),
        (
            "*filter\n:C - [0:0]\n-A D -j ACCEPT\nCOMMIT\n",
            3,
            "undeclared chain",
        ),
        ("*filter\n:C - [0:0]\n", 2, "not closed by COMMIT"),
        ("-A C -j ACCEPT\n", 1, "outside a table"),
        (
            "*filter\n:C - [0:0]\n-A C -m comment --comment \"open\nCOMMIT\n",
            3,
            "unterminated",
        ),
        (
            "*filter\n:C - [0:0]\n-I C -j ACCEPT\nCOMMIT\n",
            3,
            "unsupported command",
        ),
        ("*filter\n:INPUT - [0:0]\nCOMMIT\n", 2, "needs a policy"),
        (
            "*filter\n:C - [0:0]\n-A C -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n",
            3,
            "bad port",
        ),
    ];
    for (text, line, msg) in cases {
        let e = Ruleset::load(text).unwrap_err();
        assert_eq!(e.line(), line, "{text}");
        assert!(e.to_string().contains(msg), "{e} should mention {msg}");
        assert!(e.to_string().starts_with(&format!("line {line}:")));
    }
}

#[test]
fn validation_finds_missing_chains_loops_and_misplaced_targets() {
    let missing = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOPE\nCOMMIT\n";
    let e = Ruleset::load(missing).unwrap_err();
    assert_eq!(e.line(), 3);
    assert!(e.to_string().contains("missing chain \"NOPE\""));
    let looped = "*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -g A\nCOMMIT\n";
    let e = Ruleset::load(looped).unwrap_err();
    assert!(
        e.to_string().contains("loop through chains A -> B -> A"),
        "{e}"
    );
    assert_eq!(e.line(), 5);
    let dnat = "*nat\n:POSTROUTING ACCEPT [0:0]\n:X - [0:0]\n-A POSTROUTING -j X\n-A X -j DNAT --to-destination 1.2.3.4\nCOMMIT\n";
    let e = Ruleset::load(dnat).unwrap_err();
    assert!(e.to_string().contains("reached from POSTROUTING"), "{e}");
    assert_eq!(e.line(), 5);
    let reject = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j REJECT\nCOMMIT\n";
    assert!(Ruleset::load(reject).is_err());
}

/// `Engine::load` (validation reading the compiled jumps) gives what
/// `Ruleset::load` then `Engine::new` give: the same rules, the same
/// compiled jumps, the same first error.
#[test]
fn engine_load_is_ruleset_load_then_engine_new() {
    let ok = [
        NODE_DUMP,
        "*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -g B\n-A B -j RETURN\nCOMMIT\n",
    ];
    for text in ok {
        let joined = Engine::load(text).unwrap();
        let apart = load(text);
        assert_eq!(joined.ruleset(), apart.ruleset());
    }
    let bad = [
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOPE\nCOMMIT\n",
        "*filter\n:A - [0:0]\n:B - [0:0]\n-A A -j B\n-A B -g A\nCOMMIT\n",
        "*nat\n:POSTROUTING ACCEPT [0:0]\n:X - [0:0]\n-A POSTROUTING -j X\n-A X -j DNAT --to-destination 1.2.3.4\nCOMMIT\n",
        "*filter\n:C - [0:0]\n-A C -m bogus --x 1 -j ACCEPT\nCOMMIT\n",
        "*filter\n:C - [0:0]\n-A C -g THIS-NAME-IS-LONGER-THAN-ANY-CHAIN\nCOMMIT\n",
        // A jump to a built-in chain; a loop in one table and a missing
        // chain in the next (which compiling alone would find first).
        "*filter\n:INPUT ACCEPT [0:0]\n:C - [0:0]\n-A C -j INPUT\nCOMMIT\n",
        "*filter\n:A - [0:0]\n-A A -j A\nCOMMIT\n*nat\n:B - [0:0]\n-A B -j NOPE\nCOMMIT\n",
        "*filter\n:A - [0:0]\n-A A -j NOPE\nCOMMIT\n*nat\n:B - [0:0]\n-A B -j B\nCOMMIT\n",
    ];
    for text in bad {
        assert_eq!(
            Engine::load(text).unwrap_err(),
            Ruleset::load(text).unwrap_err(),
            "{text}"
        );
    }
}

/// Jump targets are kept in the rule up to the longest name `-j` takes,
/// on the heap beyond it (only `-g` takes longer names); both print back
/// as written and compare by their text.
#[test]
fn chain_names_of_every_length_round_trip() {
    let long = "A-CHAIN-NAME-LONGER-THAN-TWENTY-EIGHT";
    let text = format!(
        "*filter\n:{long} - [0:0]\n:C - [0:0]\n:KUBE-SEP-DKFBLVEV2WDYWVEXABC - [0:0]\n-A C -g {long}\n-A C -j KUBE-SEP-DKFBLVEV2WDYWVEXABC\n-A C -j RETURN\nCOMMIT\n"
    );
    let rs = Ruleset::load(&text).unwrap();
    assert_eq!(rs.to_iptables_save(), text);
    let c = &rs.tables[0].chains[1];
    assert_eq!(c.rules[0].target.as_ref().unwrap().name(), long);
    assert!(matches!(
        &c.rules[0].target,
        Some(Target::Goto(ChainName::Long(_)))
    ));
    assert_eq!(
        c.rules[1].target.as_ref().unwrap().name().len(),
        CHAIN_NAME_MAX
    );
    assert!(matches!(
        &c.rules[1].target,
        Some(Target::Jump(ChainName::Inline { .. }))
    ));
    assert_eq!(ChainName::new(long), ChainName::new(long));
    assert_ne!(ChainName::new("A"), ChainName::new("B"));
    assert_eq!(format!("{:?}", ChainName::new("KUBE-X")), "\"KUBE-X\"");
    let too_long = format!("*filter\n:C - [0:0]\n-A C -j {long}\nCOMMIT\n");
    assert!(Ruleset::load(&too_long).is_err());
}

/// A host whose only facts are its addresses.
struct Facts(HostNet);
impl HostFacts for Facts {
    fn addr_type(&self, addr: Ipv4Addr, dev: Option<&str>) -> AddrType {
        self.0.addr_type(addr, dev)
    }
}

fn run_filter(engine: &Engine, chain: &str, h: Headers) -> (TableVerdict, Vec<Step>, u32) {
    run_filter_with(engine, chain, h, EvalOptions::default())
}

fn run_filter_with(
    engine: &Engine,
    chain: &str,
    h: Headers,
    opts: EvalOptions,
) -> (TableVerdict, Vec<Step>, u32) {
    let mut pkt = PacketCtx {
        headers: h,
        in_iface: Some("eth0".into()),
        out_iface: None,
        mark: 0,
        ctmark: 0,
        ct: CtInfo::untracked(),
        notrack: false,
    };
    let mut steps = Vec::new();
    let v = engine
        .run(
            TableName::Filter,
            chain,
            &mut pkt,
            &Facts(node_net()),
            &mut MatchState::default(),
            &mut FirstChooser,
            opts,
            &mut steps,
        )
        .unwrap();
    (v, steps, pkt.mark)
}

#[test]
fn return_from_nested_chains_goto_and_policy() {
    let e = load(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n:G - [0:0]\n\
-A INPUT -j A\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
-A A -j B\n-A A -j MARK --set-xmark 0x1/0x1\n\
-A B -p tcp -m tcp --dport 80 -j RETURN\n-A B -j MARK --set-xmark 0x2/0x2\n\
-A FORWARD -g G\n-A FORWARD -j DROP\n-A G -j RETURN\nCOMMIT\n",
    );
    let h = |port| Headers::tcp(a("1.1.1.1"), 1000, a("192.168.10.11"), port, TCP_SYN);
    // Port 80: B returns early (no 0x2), A marks 0x1, INPUT falls to policy DROP.
    let (v, steps, mark) = run_filter(&e, "INPUT", h(80));
    assert_eq!(v, TableVerdict::Drop);
    assert_eq!(mark, 0x1);
    assert!(matches!(
        steps.last(),
        Some(Step::Policy {
            policy: Policy::Drop,
            ..
        })
    ));
    assert_eq!(Step::chain_path(&steps), ["INPUT"]);
    // Port 22: both marks, then ACCEPT in INPUT.
    let (v, steps, mark) = run_filter(&e, "INPUT", h(22));
    assert_eq!((v, mark), (TableVerdict::Accept, 0x3));
    assert!(matches!(
        Step::deciding(&steps),
        Some(Step::Matched { chain, index: 1, .. }) if chain == "INPUT"
    ));
    // A RETURN in a goto'd chain returns past FORWARD's remaining rules:
    // to the policy (ACCEPT), not to `-j DROP`.
    let (v, steps, _) = run_filter(&e, "FORWARD", h(80));
    assert_eq!(v, TableVerdict::Accept);
    assert_eq!(Step::chain_path(&steps), ["FORWARD"]);
}

#[test]
fn explained_misses_show_the_values_compared() {
    let e = load(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m mark --mark 0x4000/0x4000 -j DROP\n-A INPUT -p tcp -m tcp --dport 22 -j DROP\n\
-A INPUT -m conntrack --ctstate INVALID -j DROP\n-A INPUT -m addrtype --dst-type LOCAL -j ACCEPT\nCOMMIT\n",
    );
    let h = Headers::tcp(a("1.1.1.1"), 1000, a("8.8.8.8"), 80, TCP_SYN);
    let opts = EvalOptions {
        explain_misses: true,
        ..EvalOptions::default()
    };
    let (_, steps, _) = run_filter_with(&e, "INPUT", h, opts);
    let why: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Missed { why, .. } => Some(why.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        why,
        [
            "-m mark --mark 0x4000/0x4000: packet mark 0x0",
            "-m tcp --dport 22: tcp sport 1000, dport 80",
            "-m conntrack --ctstate INVALID: ctstate UNTRACKED (original direction)",
            "-m addrtype --dst-type LOCAL: source 1.1.1.1 is UNICAST, destination 8.8.8.8 is UNICAST",
        ]
    );
}

#[test]
fn the_chain_path_is_the_call_stack_at_the_verdict() {
    let e = load(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n:C - [0:0]\n:D - [0:0]\n\
-A INPUT -j A\n-A INPUT -j B\n-A A -j RETURN\n-A B -g C\n-A C -j D\n-A D -j DROP\nCOMMIT\n",
    );
    let h = Headers::tcp(a("1.1.1.1"), 1000, a("192.168.10.11"), 80, TCP_SYN);
    let (v, steps, _) = run_filter(&e, "INPUT", h);
    assert_eq!(v, TableVerdict::Drop);
    // A returned; B went to C (still on the stack as B's stand-in).
    assert_eq!(Step::chain_path(&steps), ["INPUT", "B", "C", "D"]);
    assert!(matches!(
        Step::deciding(&steps),
        Some(Step::Matched { chain, index: 0, .. }) if chain == "D"
    ));
}

fn nat_stack_run(
    engine: &Engine,
    state: &mut HostState,
    h: Headers,
    in_iface: &str,
    chooser: &mut dyn crate::prob::Chooser,
) -> (Outcome, Vec<Event>) {
    let net = node_net();
    let mut stack = Stack {
        rulesets: vec![engine],
        state,
        opts: EvalOptions::default(),
    };
    let mut events = Vec::new();
    let out = stack
        .receive(h, in_iface, 0, &net, chooser, &mut events)
        .unwrap();
    (out, events)
}

#[test]
fn three_endpoints_each_get_exactly_a_third_up_to_kernel_quantisation() {
    let e = load(NODE_DUMP);
    let syn = Headers::tcp(a("10.244.1.5"), 40000, a("10.96.0.50"), 80, TCP_SYN);
    let outcomes = enumerate(|ch| {
        let mut st = HostState::default();
        match nat_stack_run(&e, &mut st, syn, "cni0", ch).0 {
            Outcome::Transmit { headers, .. } => headers.dst,
            other => panic!("{other:?}"),
        }
    });
    let got: Vec<(String, Ipv4Addr)> = outcomes
        .iter()
        .map(|(p, d)| (p.exact_string(), *d))
        .collect();
    // 715827883/2^31 for the first, then (1 - that) * 1/2 for each other.
    assert_eq!(
        got,
        vec![
            ("715827883/2147483648".to_string(), a("10.244.1.5")),
            ("1431655765/4294967296".to_string(), a("10.244.2.5")),
            ("1431655765/4294967296".to_string(), a("10.244.2.6")),
        ]
    );
    let total = outcomes
        .iter()
        .fold(Probability::zero(), |acc, (p, _)| &acc + p);
    assert!(total.is_one());
    for (p, _) in &outcomes {
        assert!((p.to_f64() - 1.0 / 3.0).abs() < 1e-9);
    }
}

#[test]
fn nodeport_is_dnated_masqueraded_and_reply_is_reversed() {
    let e = load(NODE_DUMP);
    let mut st;
    // Draw seeded paths until one lands on the third endpoint (node-b).
    let mut ch = crate::prob::SeededChooser::new(0);
    let syn = Headers::tcp(a("203.0.113.7"), 40000, a("192.168.10.11"), 30080, TCP_SYN);
    let mut out;
    loop {
        st = HostState::default();
        out = nat_stack_run(&e, &mut st, syn, "eth0", &mut ch).0;
        if let Outcome::Transmit { headers, .. } = &out {
            if headers.dst == a("10.244.2.6") {
                break;
            }
        }
    }
    let Outcome::Transmit {
        headers, out_iface, ..
    } = out
    else {
        unreachable!()
    };
    // MASQUERADE picked eth0's address; the source port was free so kept
    // unless --random-fully asked for a random one.
    assert_eq!(
        (headers.src, headers.dport, out_iface.as_str()),
        (a("192.168.10.11"), 8080, "eth0")
    );
    // The pod's reply comes back to the node and is un-SNATed and un-DNATed.
    let reply = headers.reply();
    let (back, events) = nat_stack_run(&e, &mut st, reply, "eth0", &mut FirstChooser);
    let Outcome::Transmit { headers: r, .. } = back else {
        panic!("{back:?}")
    };
    assert_eq!(
        (r.src, r.sport, r.dst, r.dport),
        (a("192.168.10.11"), 30080, a("203.0.113.7"), 40000)
    );
    assert_eq!(r.tcp_flags, TCP_SYN | TCP_ACK);
    // Replies never see the nat table.
    assert!(!events.iter().any(|e| matches!(
        e,
        Event::Table {
            table: TableName::Nat,
            ..
        }
    )));
}

#[test]
fn only_the_first_packet_sees_the_nat_table() {
    let e = load(NODE_DUMP);
    let mut st = HostState::default();
    let syn = Headers::tcp(a("10.244.1.5"), 40000, a("10.96.0.50"), 80, TCP_SYN);
    let (first, ev1) = nat_stack_run(&e, &mut st, syn, "cni0", &mut FirstChooser);
    assert!(ev1.iter().any(|e| matches!(
        e,
        Event::Table {
            table: TableName::Nat,
            hook: Hook::Prerouting,
            ..
        }
    )));
    let mut ack = syn;
    ack.tcp_flags = TCP_ACK;
    let (second, ev2) = nat_stack_run(&e, &mut st, ack, "cni0", &mut FirstChooser);
    assert!(!ev2.iter().any(|e| matches!(
        e,
        Event::Table {
            table: TableName::Nat,
            ..
        }
    )));
    assert!(ev2.iter().any(|e| matches!(e, Event::NatSkipped { .. })));
    let dst = |o: &Outcome| match o {
        Outcome::Transmit { headers, .. } => (headers.dst, headers.src),
        o => panic!("{o:?}"),
    };
    assert_eq!(dst(&first), dst(&second));
    assert_eq!(st.conntrack.len(), 1);
}

#[test]
fn hairpin_is_masqueraded_to_the_bridge_address() {
    let e = load(NODE_DUMP);
    let mut st = HostState::default();
    // Pod 10.244.1.5 reaches its own service and lands on itself (first
    // endpoint, FirstChooser): KUBE-SEP-A marks it for masquerade.
    let syn = Headers::tcp(a("10.244.1.5"), 40000, a("10.96.0.50"), 80, TCP_SYN);
    let (out, _) = nat_stack_run(&e, &mut st, syn, "cni0", &mut FirstChooser);
    let Outcome::Transmit {
        headers, out_iface, ..
    } = out
    else {
        panic!()
    };
    assert_eq!(out_iface, "cni0");
    assert_eq!(
        (headers.src, headers.dst),
        (a("10.244.1.1"), a("10.244.1.5"))
    );
}

#[test]
fn no_endpoints_rejects_in_filter() {
    let e = load(NODE_DUMP);
    let mut st = HostState::default();
    let syn = Headers::tcp(a("10.244.1.5"), 40000, a("10.96.0.90"), 80, TCP_SYN);
    let (out, _) = nat_stack_run(&e, &mut st, syn, "cni0", &mut FirstChooser);
    assert!(matches!(
        out,
        Outcome::Dropped {
            table: ChainSite::Iptables(TableName::Filter),
            hook: Hook::Forward,
            reason: DropReason::Reject {
                with: RejectWith::IcmpPortUnreachable,
                packet,
            }
        } if packet == syn
    ));
}

#[test]
fn syn_ack_without_connection_is_invalid_and_dropped_by_kube_forward() {
    let e = load(NODE_DUMP);
    let mut st = HostState::default();
    let stray = Headers::tcp(
        a("10.244.2.5"),
        8080,
        a("10.244.1.5"),
        40000,
        TCP_SYN | TCP_ACK,
    );
    let (out, _) = nat_stack_run(&e, &mut st, stray, "eth0", &mut FirstChooser);
    assert_dropped_by_forward_rule(&out);
}

#[test]
fn session_affinity_with_recent_sticks_until_timeout() {
    let text = "*nat\n:PREROUTING ACCEPT [0:0]\n:SVC - [0:0]\n:SEP1 - [0:0]\n:SEP2 - [0:0]\n\
-A PREROUTING -d 10.96.0.1/32 -p tcp -m tcp --dport 80 -j SVC\n\
-A SVC -m recent --rcheck --seconds 100 --reap --name SEP1 --mask 255.255.255.255 --rsource -j SEP1\n\
-A SVC -m recent --rcheck --seconds 100 --reap --name SEP2 --mask 255.255.255.255 --rsource -j SEP2\n\
-A SVC -m statistic --mode random --probability 0.50000000000 -j SEP1\n-A SVC -j SEP2\n\
-A SEP1 -p tcp -m recent --set --name SEP1 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.5:80\n\
-A SEP2 -p tcp -m recent --set --name SEP2 --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.2.5:80\nCOMMIT\n";
    let e = load(text);
    let dst_of = |st: &mut HostState, sport: u16, ch: &mut dyn crate::prob::Chooser| {
        let syn = Headers::tcp(a("203.0.113.7"), sport, a("10.96.0.1"), 80, TCP_SYN);
        match nat_stack_run(&e, st, syn, "eth0", ch).0 {
            Outcome::Transmit { headers, .. } => headers.dst,
            o => panic!("{o:?}"),
        }
    };
    // Second connection from the same client: only one outcome, the first's.
    let outcomes = enumerate(|ch| {
        let mut st = HostState::default();
        let first = dst_of(&mut st, 1, ch);
        st.matches.now = 50;
        let second = dst_of(&mut st, 2, ch);
        st.matches.now = 500;
        let third_free = dst_of(&mut st, 3, ch);
        (first, second, third_free)
    });
    assert!(outcomes.iter().all(|(_, (f, s, _))| f == s));
    // After the timeout the choice is random again: 4 paths in all.
    assert_eq!(outcomes.len(), 4);
}

#[test]
fn index_gives_the_same_result_as_a_linear_walk() {
    use proptest::prelude::*;
    // 200 services so KUBE-SERVICES is indexed.
    let mut text = String::from("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:HIT - [0:0]\n:NP - [0:0]\n-A PREROUTING -j KUBE-SERVICES\n");
    for i in 0..200u32 {
        let proto = if i % 3 == 0 { "udp" } else { "tcp" };
        text.push_str(&format!(
            "-A KUBE-SERVICES -d 10.96.{}.{}/32 -p {proto} -m {proto} --dport {} -j HIT\n",
            i / 250,
            i % 250,
            80 + i % 5
        ));
        if i % 40 == 3 {
            // ipvs-mode style set matches are generic (never indexed) rules
            // interleaved with indexed ones.
            text.push_str(
                "-A KUBE-SERVICES -m set --match-set SVC dst,dst -j MARK --set-xmark 0x10/0x10\n",
            );
            text.push_str(
                "-A KUBE-SERVICES -m set ! --match-set SRC src -j MARK --set-xmark 0x20/0x20\n",
            );
        }
        if i % 50 == 7 {
            text.push_str("-A KUBE-SERVICES ! -d 10.96.0.0/16 -j RETURN\n");
            text.push_str(&format!(
                "-A KUBE-SERVICES -p tcp -m tcp --dport {} -j NP\n",
                30000 + i
            ));
        }
    }
    text.push_str("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j NP\n-A HIT -j MARK --set-xmark 0x1/0x1\n-A NP -j MARK --set-xmark 0x2/0x2\nCOMMIT\n");
    let e = load(&text);
    let facts = Facts(node_net());
    let sets = ipset::IpSets::parse(
        "create SVC hash:ip,port\nadd SVC 10.96.0.3,tcp:83\nadd SVC 10.96.1.7,udp:82\n\
         create SRC hash:net\nadd SRC 1.2.0.0/16\nadd SRC 1.2.3.0/24 nomatch\n",
    )
    .unwrap();
    let eval = |h: Headers, linear: bool| {
        let mut pkt = PacketCtx {
            headers: h,
            in_iface: Some("eth0".into()),
            out_iface: None,
            mark: 0,
            ctmark: 0,
            ct: CtInfo::untracked(),
            notrack: false,
        };
        let mut steps = Vec::new();
        let v = e
            .run(
                TableName::Nat,
                "PREROUTING",
                &mut pkt,
                &facts,
                &mut MatchState {
                    ipsets: sets.clone(),
                    ..MatchState::default()
                },
                &mut FirstChooser,
                EvalOptions {
                    linear,
                    explain_misses: false,
                },
                &mut steps,
            )
            .unwrap();
        (v, steps, pkt.mark)
    };
    proptest!(ProptestConfig::with_cases(512), |(third in 0u8..2, last in 0u8..255, port in prop_oneof![78u16..86, 30000u16..30210], udp in any::<bool>(), local in any::<bool>(), src in prop_oneof![Just("1.2.3.4"), Just("1.2.4.4"), Just("9.9.9.9")])| {
        let dst = if local { a("192.168.10.11") } else { Ipv4Addr::new(10, 96, third, last) };
        let h = if udp { Headers::udp(a(src), 999, dst, port) } else { Headers::tcp(a(src), 999, dst, port, TCP_SYN) };
        prop_assert_eq!(eval(h, true), eval(h, false));
    });
}

mod fuzz {
    //! Property tests of the parser: generated rules round-trip through
    //! print → parse → print, and mangled text never panics.
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = String> {
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(o, l)| {
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(o), l).unwrap().trunc();
            net.to_string()
        })
    }

    fn neg() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just("! ")]
    }

    fn opt_part() -> impl Strategy<Value = String> {
        prop_oneof![
            (neg(), addr()).prop_map(|(n, a)| format!(" {n}-s {a}")),
            (neg(), addr()).prop_map(|(n, a)| format!(" {n}-d {a}")),
            (neg(), "[a-z]{1,6}[0-9]?\\+?").prop_map(|(n, i)| format!(" {n}-i {i}")),
            (1u16..65535, 0u16..100).prop_map(|(p, w)| format!(" -p tcp -m tcp --dport {}:{}", p / 2, p / 2 + w)),
            (1u16..65535).prop_map(|p| format!(" -p udp -m udp --sport {p}")),
            "[a-zA-Z0-9 /:._\"-]{1,30}".prop_map(|c| format!(" -m comment --comment {}", super::super::print::quote(&c))),
            (neg(), any::<u32>(), any::<u32>()).prop_map(|(n, v, m)| format!(" -m mark {n}--mark 0x{:x}/0x{:x}", v & m, m)),
            (0u32..=0x8000_0000).prop_map(|t| format!(" -m statistic --mode random --probability {:.11}", f64::from(t) / 2147483648.0)),
            Just(" -m conntrack --ctstate RELATED,ESTABLISHED".to_string()),
            Just(" -m addrtype --dst-type LOCAL".to_string()),
            (neg(), "[A-Z]{1,8}", proptest::collection::vec(prop_oneof![Just("src"), Just("dst")], 1..=6), any::<bool>())
                .prop_map(|(n, name, flags, rn)| format!(" -m set {n}--match-set {name} {}{}", flags.join(","), if rn { " --return-nomatch" } else { "" })),
            ("[A-Z]{3,10}", 1u32..100000).prop_map(|(n, s)| format!(" -m recent --rcheck --seconds {s} --reap --name {n} --mask 255.255.255.255 --rsource")),
        ]
    }

    fn target() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" -j ACCEPT".to_string()),
            Just(" -j DROP".to_string()),
            Just(" -j RETURN".to_string()),
            Just(" -j C2".to_string()),
            Just(" -g C2".to_string()),
            (any::<u32>(), any::<u32>())
                .prop_map(|(v, m)| format!(" -j MARK --set-xmark 0x{v:x}/0x{m:x}")),
            Just(" -j REJECT --reject-with icmp-port-unreachable".to_string()),
            Just(String::new()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn printing_is_a_fixed_point(parts in proptest::collection::vec(opt_part(), 0..5), t in target()) {
            let line = format!("-A C{}{}", parts.concat(), t);
            let text = format!("*filter\n:C - [0:0]\n:C2 - [0:0]\n{line}\nCOMMIT\n");
            // Generated parts may repeat an option the parser refuses (two
            // -s): only accepted rules must round-trip.
            if let Ok(rs) = Ruleset::parse(&text) {
                let printed = rs.to_iptables_save();
                let again = Ruleset::parse(&printed).expect("printed text parses");
                prop_assert_eq!(&again, &Ruleset::parse(&printed).unwrap());
                prop_assert_eq!(again.to_iptables_save(), printed);
            }
        }

        #[test]
        fn mangled_dumps_never_panic(cut in 0usize..4000, junk in "[ -~]{0,12}", pos in 0usize..4000) {
            let mut text = NODE_DUMP.to_string();
            let p = pos.min(text.len());
            let p = (0..=p).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(p, &junk);
            let c = cut.min(text.len());
            let c = (0..=c).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let _ = Ruleset::load(&text[..c]);
            let _ = Ruleset::load(&text);
            // Two passes (rules in parallel) read it as one pass would.
            for t in [&text[..c], &text] {
                prop_assert_eq!(Ruleset::parse(t), super::super::parse::parse_one_pass(t));
            }
        }

        #[test]
        fn random_lines_never_panic(line in "[ -~]{0,80}") {
            let _ = Ruleset::load(&format!("*nat\n:C - [0:0]\n{line}\nCOMMIT\n"));
            let _ = Ruleset::load(&format!("*nat\n:C - [0:0]\n-A C {line}\nCOMMIT\n"));
            for t in [
                format!("*nat\n:C - [0:0]\n{line}\n-A C -j D\n:D - [0:0]\n-A D {line}\nCOMMIT\n{line}\n"),
                format!("# x\n*nat\n:C - [0:0]\n-A C {line}\n{line}\n"),
            ] {
                prop_assert_eq!(Ruleset::parse(&t), super::super::parse::parse_one_pass(&t));
            }
        }
    }
}

/// The ipset kernel check (`scripts/kernel-check-ipset.py`): the same sets,
/// rules and packets give the same matching rules as on a 6.18 kernel.
#[test]
fn kernel_check_ipset() {
    let sets = include_str!("../../tests/data/kernel/ipset-sets.txt");
    let rules = include_str!("../../tests/data/kernel/ipset-rules.txt");
    let packets = include_str!("../../tests/data/kernel/ipset-packets.txt");
    let expected = include_str!("../../tests/data/kernel/ipset-expected.txt");
    let e = load(rules);
    let ipsets = ipset::IpSets::parse(sets).unwrap();
    e.ruleset().validate_sets(&ipsets).unwrap();
    let missing = ipset::IpSets::parse("create P hash:ip\n").unwrap();
    let err = e.ruleset().validate_sets(&missing).unwrap_err();
    assert_eq!(err.line, 8, "{err}");
    assert!(err.to_string().contains("match set \"B\" does not exist"));
    let mut state = MatchState {
        ipsets,
        ..MatchState::default()
    };
    let chain = &e.ruleset().tables[0].chains[1];
    let mut got = String::new();
    for line in packets.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (src, sport, dst, dport) = (
            a(f[2]),
            f[3].parse().unwrap(),
            a(f[4]),
            f[5].parse().unwrap(),
        );
        let h = match f[1] {
            "tcp" => Headers::tcp(src, sport, dst, dport, TCP_SYN),
            "udp" => Headers::udp(src, sport, dst, dport),
            "sctp" => Headers::sctp(src, sport, dst, dport),
            "icmp" => Headers {
                icmp_type: sport as u8,
                icmp_code: dport as u8,
                ..Headers::icmp_echo(src, dst, 7)
            },
            "gre" => Headers {
                proto: 47,
                ..Headers::icmp_echo(src, dst, 0)
            },
            p => panic!("{p}"),
        };
        let mut pkt = PacketCtx {
            headers: h,
            in_iface: None,
            out_iface: Some("d0".into()),
            mark: 0,
            ctmark: 0,
            ct: CtInfo::untracked(),
            notrack: false,
        };
        let mut steps = Vec::new();
        e.run(
            TableName::Raw,
            "OUTPUT",
            &mut pkt,
            &Facts(node_net()),
            &mut state,
            &mut FirstChooser,
            EvalOptions::default(),
            &mut steps,
        )
        .unwrap();
        let hits: Vec<String> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Matched { index, .. } => match &chain.rules[*index].matches[0].kind {
                    MatchKind::Comment(c) => Some(c.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        got.push_str(format!("{}: {}", f[0], hits.join(" ")).trim_end());
        got.push('\n');
    }
    assert_eq!(got, expected);
}

#[test]
fn set_match_options_round_trip_and_unknown_set_is_an_error_with_the_line() {
    let line = "-A C -m set ! --match-set S src,dst --return-nomatch ! --update-counters ! --update-subcounters -j ACCEPT";
    let text = format!("*filter\n:C - [0:0]\n{line}\nCOMMIT\n");
    assert_eq!(Ruleset::parse(&text).unwrap().to_iptables_save(), text);
    for bad in [
        "-A C -m set --match-set S src,dst,src,dst,src,dst,src -j ACCEPT",
        "-A C -m set --match-set S src --update-counters -j ACCEPT",
        "-A C -m set --match-set S src --packets-eq 1 -j ACCEPT",
        "-A C -m set --return-nomatch -j ACCEPT",
    ] {
        let e = Ruleset::parse(&format!("*filter\n:C - [0:0]\n{bad}\nCOMMIT\n")).unwrap_err();
        assert_eq!(e.line, 3, "{bad}");
    }
    let e = load("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j ACCEPT\n-A INPUT -m set --match-set NOPE src -j DROP\nCOMMIT\n");
    let mut pkt = PacketCtx {
        headers: Headers::udp(a("1.1.1.1"), 1, a("2.2.2.2"), 2),
        in_iface: Some("eth0".into()),
        out_iface: None,
        mark: 0,
        ctmark: 0,
        ct: CtInfo::untracked(),
        notrack: false,
    };
    let err = e
        .run(
            TableName::Filter,
            "INPUT",
            &mut pkt,
            &Facts(node_net()),
            &mut MatchState::default(),
            &mut FirstChooser,
            EvalOptions::default(),
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        EvalError::UnknownSet {
            line: 4,
            set: "NOPE".into()
        }
    );
    assert!(err.to_string().starts_with("line 4: match set \"NOPE\""));
}

/// DNAT to one backend for a service address, DNAT plus MASQUERADE to
/// another for a node port; FORWARD accepts RELATED ICMP and drops INVALID.
const RELATED_RULES: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
-A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.244.2.5:5353\n\
-A PREROUTING -d 192.168.10.11/32 -p udp -m udp --dport 30053 -j DNAT --to-destination 10.244.2.6:5353\n\
-A POSTROUTING -d 10.244.2.6/32 -j MASQUERADE\nCOMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A FORWARD -m conntrack --ctstate INVALID -j DROP\n\
-A FORWARD -p icmp -m state --state RELATED -j ACCEPT\n\
-A FORWARD -m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT\nCOMMIT\n";

fn transmitted(out: Outcome) -> Headers {
    match out {
        Outcome::Transmit { headers, .. } => headers,
        o => panic!("{o:?}"),
    }
}

fn port_unreachable(from: Ipv4Addr, about: &Headers) -> Headers {
    Headers::icmp_error(
        from,
        about.src,
        crate::wire::ICMP_DEST_UNREACH,
        crate::wire::ICMP_PORT_UNREACH,
        about,
    )
}

#[test]
fn icmp_error_from_a_dnated_backend_is_related_and_reaches_the_client_about_the_service() {
    let e = load(RELATED_RULES);
    let mut st = HostState::default();
    let query = Headers::udp(a("203.0.113.7"), 40000, a("10.96.0.10"), 53);
    let (out, _) = nat_stack_run(&e, &mut st, query, "eth0", &mut FirstChooser);
    let at_backend = transmitted(out);
    assert_eq!((at_backend.dst, at_backend.dport), (a("10.244.2.5"), 5353));
    // Nothing listens on 5353: the backend answers port unreachable.
    let err = port_unreachable(a("10.244.2.5"), &at_backend);
    let (out, events) = nat_stack_run(&e, &mut st, err, "eth0", &mut FirstChooser);
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::Conntrack {
            found: CtFound::Existing {
                state: crate::conntrack::State::Related,
                dir: crate::conntrack::Direction::Reply,
                ..
            },
            ..
        }
    )));
    // The RELATED rule accepted it (line 13), the nat table never ran.
    assert!(events.iter().any(|ev| matches!(
        ev,
        Event::Table { table: TableName::Filter, steps, .. }
            if steps.iter().any(|s| matches!(s, Step::Matched { line: 13, .. }))
    )));
    assert!(!events.iter().any(|ev| matches!(
        ev,
        Event::Table {
            table: TableName::Nat,
            ..
        }
    )));
    let to_client = transmitted(out);
    assert_eq!(
        to_client,
        port_unreachable(a("10.96.0.10"), &query),
        "from the service address, quoting the client's own packet"
    );
    // Real bytes: valid checksums, and they parse back to the same thing.
    let bytes = to_client.to_bytes();
    assert_eq!(crate::wire::internet_checksum(&bytes[20..]), 0);
    assert_eq!(Headers::parse(&bytes), Some(to_client));
    // The error did not make the connection ESTABLISHED.
    assert!(!st.conntrack.entries()[0].seen_reply);
}

#[test]
fn icmp_error_through_dnat_and_masquerade_is_translated_on_both_headers() {
    let e = load(RELATED_RULES);
    let mut st = HostState::default();
    let query = Headers::udp(a("203.0.113.7"), 40001, a("192.168.10.11"), 30053);
    let (out, _) = nat_stack_run(&e, &mut st, query, "eth0", &mut FirstChooser);
    let at_backend = transmitted(out);
    assert_eq!(
        (at_backend.src, at_backend.dst),
        (a("192.168.10.11"), a("10.244.2.6"))
    );
    let err = port_unreachable(a("10.244.2.6"), &at_backend);
    // Addressed to the node, but un-SNATed at PREROUTING: forwarded.
    let (out, events) = nat_stack_run(&e, &mut st, err, "eth0", &mut FirstChooser);
    let kinds: Vec<(Hook, NatKind)> = events
        .iter()
        .filter_map(|ev| match ev {
            Event::Nat { hook, kind, .. } => Some((*hook, *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Hook::Prerouting, NatKind::DnatFromConntrack),
            (Hook::Postrouting, NatKind::SnatFromConntrack)
        ]
    );
    assert_eq!(
        transmitted(out),
        port_unreachable(a("192.168.10.11"), &query)
    );
}

#[test]
fn icmp_error_about_no_connection_is_invalid_not_new() {
    let e = load(RELATED_RULES);
    let mut st = HostState::default();
    let query = Headers::udp(a("203.0.113.7"), 40000, a("10.96.0.10"), 53);
    let at_backend = transmitted(nat_stack_run(&e, &mut st, query, "eth0", &mut FirstChooser).0);
    let mut stranger = at_backend;
    stranger.sport = 40002;
    for err in [
        port_unreachable(a("10.244.2.5"), &stranger),
        // Right quote, but sent to a host that is not the quote's source.
        Headers {
            dst: a("203.0.113.99"),
            ..port_unreachable(a("10.244.2.5"), &at_backend)
        },
    ] {
        let (out, events) = nat_stack_run(&e, &mut st, err, "eth0", &mut FirstChooser);
        assert!(events.iter().any(|ev| matches!(
            ev,
            Event::Conntrack {
                found: CtFound::Invalid,
                ..
            }
        )));
        assert_dropped_by_forward_rule(&out);
    }
    assert_eq!(st.conntrack.len(), 1);
}

#[test]
fn icmp_redirect_about_a_natted_connection_is_dropped_by_nat() {
    let e = load(RELATED_RULES);
    let mut st = HostState::default();
    let query = Headers::udp(a("203.0.113.7"), 40000, a("10.96.0.10"), 53);
    let at_backend = transmitted(nat_stack_run(&e, &mut st, query, "eth0", &mut FirstChooser).0);
    let redirect = Headers::icmp_error(
        a("10.244.2.5"),
        a("203.0.113.7"),
        crate::wire::ICMP_REDIRECT,
        1,
        &at_backend,
    );
    let (out, _) = nat_stack_run(&e, &mut st, redirect, "eth0", &mut FirstChooser);
    assert_eq!(
        out,
        Outcome::Dropped {
            hook: Hook::Prerouting,
            table: ChainSite::Iptables(TableName::Nat),
            reason: DropReason::NattedRedirect
        }
    );
}

/// KUBE-FORWARD's INVALID drop (a DROP rule in FORWARD) ended the packet.
fn assert_dropped_by_forward_rule(out: &Outcome) {
    assert!(
        matches!(
            out,
            Outcome::Dropped {
                hook: Hook::Forward,
                reason: DropReason::Rule,
                ..
            }
        ),
        "{out:?}"
    );
}

/// `-j NOTRACK` and `-j CT --notrack` in raw PREROUTING: the packet is
/// untracked (`--ctstate UNTRACKED` matches), the nat table never sees it,
/// and conntrack holds nothing.
#[test]
fn notrack_skips_conntrack_and_nat() {
    for target in ["NOTRACK", "CT --notrack"] {
        let text = format!(
            "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -p udp -m udp --dport 53 -j {target}\nCOMMIT\n\
             *nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             -A PREROUTING -d 10.96.0.10/32 -p udp -m udp --dport 53 -j DNAT --to-destination 10.244.2.5:5353\nCOMMIT\n\
             *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             -A FORWARD -m conntrack --ctstate UNTRACKED -j ACCEPT\nCOMMIT\n"
        );
        let e = load(&text);
        let mut st = HostState::default();
        let q = Headers::udp(a("10.244.1.5"), 40000, a("10.96.0.10"), 53);
        let (out, events) = nat_stack_run(&e, &mut st, q, "cni0", &mut FirstChooser);
        assert!(
            events.iter().any(|ev| matches!(
                ev,
                Event::Conntrack {
                    found: CtFound::Untracked,
                    ..
                }
            )),
            "{target}: {events:?}"
        );
        assert!(!events.iter().any(|ev| matches!(
            ev,
            Event::Table {
                table: TableName::Nat,
                ..
            }
        )));
        // Not DNATed: it leaves toward the cluster IP, accepted as UNTRACKED.
        assert_eq!(transmitted(out).dst, a("10.96.0.10"), "{target}");
        assert_eq!(st.conntrack.len(), 0, "{target}");
    }
}

/// A node connecting to a service whose endpoint is the node itself: DNAT
/// in OUTPUT to one of its own addresses, MASQUERADE out of `lo` (to the
/// first device's address: 127.0.0.1 has host scope), and the packet comes
/// back in through `lo` still carrying its connection: no second
/// connection, no clash, delivered.
#[test]
fn a_dnat_to_the_host_itself_comes_back_through_lo_on_the_same_connection() {
    let rules = "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A OUTPUT -d 10.96.0.81/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 192.168.10.11:9100\n-A POSTROUTING -o lo -j MASQUERADE\nCOMMIT\n";
    let e = load(rules);
    let net = node_net();
    let mut st = HostState::default();
    let mut stack = Stack {
        rulesets: vec![&e],
        state: &mut st,
        opts: EvalOptions::default(),
    };
    let syn = Headers::tcp(a("192.168.10.11"), 40000, a("10.96.0.81"), 80, TCP_SYN);
    let mut events = Vec::new();
    let out = stack
        .output(syn, 0, &net, &mut FirstChooser, &mut events)
        .unwrap();
    let Outcome::Transmit {
        headers, out_iface, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(out_iface, "lo");
    assert_eq!(
        (headers.src, headers.dst, headers.dport),
        (a("192.168.10.11"), a("192.168.10.11"), 9100)
    );
    let mut events = Vec::new();
    let back = stack
        .receive(headers, "lo", 0, &net, &mut FirstChooser, &mut events)
        .unwrap();
    assert_eq!(back, Outcome::Local(headers), "{events:?}");
    assert_eq!(st.conntrack.entries().len(), 1);
}

/// A second rule language for the hook model's tests: base chains at
/// given priorities that only say they ran (a NAT one may DNAT).
struct Probe {
    chains: Vec<(Hook, i32, bool, Option<NatAction>)>,
}

impl BaseChains for Probe {
    fn base_chains(&self, hook: Hook, out: &mut Vec<BaseChain>) {
        for (i, (h, p, nat, _)) in self.chains.iter().enumerate() {
            if *h == hook {
                out.push(BaseChain {
                    priority: *p,
                    nat: *nat,
                    id: i,
                });
            }
        }
    }

    fn run_chain(
        &self,
        hook: Hook,
        chain: BaseChain,
        _pkt: &mut PacketCtx,
        _host: &dyn HostFacts,
        _state: &mut MatchState,
        _chooser: &mut dyn crate::prob::Chooser,
        _opts: EvalOptions,
    ) -> Result<ChainOutcome, EvalError> {
        let verdict = match &self.chains[chain.id].3 {
            Some(a) => TableVerdict::Nat(a.clone()),
            None => TableVerdict::Accept,
        };
        let name = format!("probe{}", chain.priority);
        Ok(ChainOutcome {
            verdict: verdict.clone(),
            by_policy: false,
            site: ChainSite::Chain {
                table: "ip probe".into(),
                chain: name.clone(),
            },
            event: Event::Chain(ChainRun {
                hook,
                priority: chain.priority,
                table: "ip probe".into(),
                chain: name,
                steps: Vec::new(),
                verdict,
            }),
        })
    }
}

/// What ran at PREROUTING, in order: tables, chains, conntrack.
fn prerouting_order(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .take_while(|e| !matches!(e, Event::Routed { .. }))
        .filter_map(|e| match e {
            Event::Table { table, .. } => Some(table.to_string()),
            Event::Chain(run) => Some(run.chain.clone()),
            Event::Conntrack { .. } => Some("conntrack".into()),
            Event::Nat { .. } => Some("nat-rewrite".into()),
            _ => None,
        })
        .collect()
}

#[test]
fn base_chains_of_every_language_run_in_priority_order_with_nat_inside_the_nat_core() {
    let e = load(
        "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n\
         *mangle\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n\
         *nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n",
    );
    let dnat = NatAction::Dnat(NatSpec {
        ranges: vec![NatRange {
            first_addr: a("10.244.1.9"),
            last_addr: a("10.244.1.9"),
            ports: Some(PortRange {
                first: 8080,
                last: 8080,
            }),
        }],
        random: false,
        random_fully: false,
        persistent: false,
    });
    let probe = Probe {
        chains: vec![
            (Hook::Prerouting, -90, false, None),
            // A NAT chain declared at -50 still runs in the NAT core's
            // entry at -100, after iptables' nat (-100).
            (Hook::Prerouting, -50, true, Some(dnat)),
            (Hook::Prerouting, -110, false, None),
            (Hook::Prerouting, -400, false, None),
            (Hook::Input, -110, false, None),
        ],
    };
    let net = node_net();
    let mut state = HostState::default();
    let mut stack = Stack {
        rulesets: vec![&e, &probe],
        state: &mut state,
        opts: EvalOptions::default(),
    };
    let mut events = Vec::new();
    let syn = Headers::tcp(a("203.0.113.7"), 40000, a("192.168.10.11"), 80, TCP_SYN);
    stack
        .receive(syn, "eth0", 0, &net, &mut FirstChooser, &mut events)
        .unwrap();
    assert_eq!(
        prerouting_order(&events),
        [
            "probe-400",
            "raw",
            "conntrack",
            "mangle",
            "probe-110",
            "nat",
            "probe-50",
            "nat-rewrite",
            "probe-90"
        ]
    );
    // The probe's NAT chain set the binding: the packet went to the pod.
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Routed {
            route: Route::Forward { out_iface, .. },
            ..
        } if out_iface == "cni0"
    )));
}

/// Validation against a naive reading of its rules: jumps to missing or
/// built-in chains first (in table order), then loops (any chain that
/// reaches itself), then targets used where a hook that reaches them
/// forbids them. Jumps are resolved in the compiled table (`Engine::load`)
/// or by name (`Ruleset::load`); both must find what the naive reading
/// finds, with its line where the line is determined.
mod validation_oracle {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const NAT_BUILTINS: &[&str] = &["PREROUTING", "OUTPUT", "POSTROUTING"];
    const FILTER_BUILTINS: &[&str] = &["INPUT", "FORWARD"];
    const USERS: &[&str] = &["A", "B", "C", "D"];

    /// What the naive reading finds first: the error's kind and, but for
    /// loops, its line.
    #[derive(Debug, PartialEq)]
    enum Found {
        Missing(usize),
        Target(usize),
        Loop,
    }

    fn naive(rs: &Ruleset) -> Option<Found> {
        for t in &rs.tables {
            let builtins = super::super::parse::builtin_chains(t.name);
            let by_name = |n: &str| t.chains.iter().rposition(|c| c.name == n);
            let edges = |c: &Chain| -> Vec<usize> {
                c.rules
                    .iter()
                    .filter_map(|r| match &r.target {
                        Some(Target::Jump(to) | Target::Goto(to)) => by_name(to),
                        _ => None,
                    })
                    .collect()
            };
            for c in &t.chains {
                for r in c.rules.iter() {
                    if let Some(Target::Jump(to) | Target::Goto(to)) = &r.target {
                        match by_name(to) {
                            None => return Some(Found::Missing(r.line)),
                            Some(_) if builtins.contains(&&**to) => {
                                return Some(Found::Target(r.line))
                            }
                            Some(_) => {}
                        }
                    }
                }
            }
            // Everything each chain reaches (itself only through a loop).
            let reach = |from: usize| {
                let mut seen = BTreeSet::new();
                let mut todo = edges(&t.chains[from]);
                while let Some(c) = todo.pop() {
                    if seen.insert(c) {
                        todo.extend(edges(&t.chains[c]));
                    }
                }
                seen
            };
            if (0..t.chains.len()).any(|c| reach(c).contains(&c)) {
                return Some(Found::Loop);
            }
            for (ci, c) in t.chains.iter().enumerate() {
                let reached: Vec<&str> = builtins
                    .iter()
                    .copied()
                    .filter(|b| by_name(b).is_some_and(|s| s == ci || reach(s).contains(&ci)))
                    .collect();
                for r in c.rules.iter() {
                    let allowed: &[&str] = match &r.target {
                        Some(Target::Dnat(_)) => &["PREROUTING", "OUTPUT"],
                        Some(Target::Masquerade { .. }) => &["POSTROUTING"],
                        Some(Target::Reject { .. }) if t.name == TableName::Filter => {
                            &["INPUT", "FORWARD", "OUTPUT"]
                        }
                        Some(Target::Reject { .. }) => &[],
                        _ => continue,
                    };
                    if reached.iter().any(|h| !allowed.contains(h)) || allowed.is_empty() {
                        return Some(Found::Target(r.line));
                    }
                }
            }
        }
        None
    }

    fn found(e: &ValidateError) -> Found {
        match &e.kind {
            ValidateErrorKind::MissingChain { .. } => Found::Missing(e.line),
            ValidateErrorKind::TargetNotAllowed { .. } => Found::Target(e.line),
            ValidateErrorKind::Loop { .. } => Found::Loop,
            other => panic!("not generated: {other:?}"),
        }
    }

    /// A table's text: its built-in chains, the user chains, and rules
    /// (chain, target) by index into the chains and `targets`.
    fn table(
        name: &str,
        builtins: &[&str],
        targets: &[String],
        rules: &[(usize, usize)],
    ) -> String {
        let chains: Vec<&str> = builtins.iter().chain(USERS).copied().collect();
        let mut text = format!("*{name}\n");
        for b in builtins {
            text += &format!(":{b} ACCEPT [0:0]\n");
        }
        for u in USERS {
            text += &format!(":{u} - [0:0]\n");
        }
        for &(c, t) in rules {
            text += &format!(
                "-A {} {}\n",
                chains[c % chains.len()],
                targets[t % targets.len()]
            );
        }
        text + "COMMIT\n"
    }

    fn targets(builtins: &[&str], own: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = own.iter().map(|s| s.to_string()).collect();
        for c in builtins.iter().chain(USERS).chain(&["NOPE"]) {
            out.push(format!("-j {c}"));
            out.push(format!("-g {c}"));
        }
        for u in USERS {
            // Jumps to user chains are most of a real table.
            out.push(format!("-p tcp -j {u}"));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn validation_finds_what_a_naive_reading_finds(
            nat in proptest::collection::vec((0usize..16, 0usize..64), 0..12),
            filter in proptest::collection::vec((0usize..16, 0usize..64), 0..8),
        ) {
            let nat_targets = targets(NAT_BUILTINS, &[
                "-j DNAT --to-destination 10.0.0.1:80",
                "-j MASQUERADE",
                "-j RETURN",
                "-j REJECT",
            ]);
            let filter_targets = targets(FILTER_BUILTINS, &["-j REJECT", "-j ACCEPT", "-j RETURN"]);
            let text = table("nat", NAT_BUILTINS, &nat_targets, &nat)
                + &table("filter", FILTER_BUILTINS, &filter_targets, &filter);
            let rs = Ruleset::parse(&text).expect("generated text parses");
            let expected = naive(&rs);
            let by_name = rs.validate().err().map(|e| found(&e));
            let compiled = match Engine::load(&text) {
                Ok(_) => None,
                Err(LoadError::Validate(e)) => Some(found(&e)),
                Err(e) => panic!("{e}"),
            };
            prop_assert_eq!(&by_name, &expected, "{}", text);
            prop_assert_eq!(&compiled, &expected, "{}", text);
        }
    }
}
