//! The `kpsim` binary, driven as users and CI drive it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kpsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpsim"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("kpsim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `kpsim trace` of the README's flow (laptop to node-a's NodePort), with
/// more arguments.
fn readme_flow(extra: &[&str]) -> Output {
    let mut args = vec![
        "trace",
        "scenarios/nodeport-cluster-policy.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
    ];
    args.extend_from_slice(extra);
    kpsim(&args)
}

/// A bundled scenario copied into a temporary folder as `name`, with `from`
/// replaced by `to` (the edit a newcomer makes).
fn edited(scenario: &str, name: &str, from: &str, to: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    let text = std::fs::read_to_string(root().join("scenarios").join(scenario)).unwrap();
    assert!(text.contains(from), "{scenario} has no {from:?}");
    std::fs::write(&p, text.replace(from, to)).unwrap();
    (dir, p)
}

#[test]
fn readme_trace_tells_the_story() {
    let o = readme_flow(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("-j DNAT --to-destination 10.244.2.5:8080"),
        "{out}"
    );
    assert!(out.contains("flannel.1 encapsulates it in VXLAN"));
    assert!(out.contains("result: delivered to web-1, source seen 10.244.1.0, destination seen 10.244.2.5:8080, reply ok"));
}

/// The README's flow, told in one line per host: what `--detail minimal`
/// promises (about a dozen lines, the result first).
#[test]
fn readme_flow_reads_in_a_dozen_lines_at_minimal_detail() {
    let o = readme_flow(&["--detail", "minimal"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() <= 13, "{} lines:\n{out}", lines.len());
    assert!(lines[0].starts_with("result: delivered to web-1, source seen 10.244.1.0"));
    assert!(out.contains("  node-a  DNAT to 10.244.2.5:8080 (default/web:http), MASQUERADE to 10.244.1.0:11204, encapsulates it in VXLAN to node-b\n"), "{out}");
    assert!(out.contains("  node-a  decapsulates VXLAN from node-b, un-SNAT to 203.0.113.7:40000, un-DNAT from 192.168.10.11:30080\n"), "{out}");
    // Summary: the hooks that acted, with their rules; none that did not.
    let o = readme_flow(&["--detail", "summary"]);
    let out = stdout(&o);
    assert!(out.starts_with("result: delivered to web-1"), "{out}");
    assert!(
        out.contains("-j DNAT --to-destination 10.244.2.5:8080 (line 63)"),
        "{out}"
    );
    assert!(out.contains("called by -A KUBE-EXT-CDGGSHYLG3RE2FKL -m comment --comment \"masquerade traffic for default/web:http external destinations\""), "{out}");
    assert!(!out.contains("no rule applies"), "{out}");
    assert!(out.lines().count() < 60, "{out}");
}

#[test]
fn load_balancing_is_a_tree_with_exact_branches() {
    let o = kpsim(&[
        "trace",
        "scenarios/three-endpoints.yaml",
        "--from",
        "client-a",
        "--to",
        "web:80",
        "--detail",
        "minimal",
    ]);
    let out = stdout(&o);
    assert!(
        out.starts_with("result: 3 outcomes\n  1/3  delivered to web-1"),
        "{out}"
    );
    assert_eq!(out.matches("  ├─ 1/3\n").count(), 2, "{out}");
    assert_eq!(out.matches("  └─ 1/3\n").count(), 1, "{out}");
    // The sender's line is shared by every branch: printed once.
    assert_eq!(out.matches("client-a  sends").count(), 1, "{out}");
}

#[test]
fn json_trace_has_the_contract_fields() {
    let o = kpsim(&[
        "trace",
        "scenarios/three-endpoints.yaml",
        "--from",
        "client-a",
        "--to",
        "web:80",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outcomes = v["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes[0]["probability_exact"], "715827883/2147483648");
    for k in [
        "delivered_to",
        "verdict",
        "source_seen",
        "destination_seen",
        "reply",
        "hops",
    ] {
        assert!(outcomes[0].get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["flow"]["from"], "client-a");
}

#[test]
fn seeded_trace_follows_one_path_reproducibly() {
    let args = [
        "trace",
        "scenarios/three-endpoints.yaml",
        "--from",
        "client-a",
        "--to",
        "web:80",
        "--seed",
        "7",
    ];
    let a = stdout(&kpsim(&args));
    let b = stdout(&kpsim(&args));
    assert_eq!(a, b);
    assert!(!a.contains("=== outcome"), "one path only");
}

#[test]
fn bad_input_says_file_line_and_column_and_exits_2() {
    let (_dir, p) = edited(
        "hairpin.yaml",
        "bad.yaml",
        "network: routed",
        "network: routed\n  netwrok: vxlan",
    );
    let o = kpsim(&[
        "trace",
        p.to_str().unwrap(),
        "--from",
        "web-1",
        "--to",
        "web:80",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("bad.yaml:11:3: unknown field `netwrok`, expected one of"),
        "{err}"
    );
    assert!(err.contains("netwrok"), "{err}");
    // A semantic error: a pod IP outside its node's pod CIDR.
    let (_dir, p) = edited(
        "hairpin.yaml",
        "bad.yaml",
        "ip: 10.244.1.5",
        "ip: 10.244.9.5",
    );
    let o = kpsim(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o) + &stderr(&o);
    assert!(
        out.contains("outside its node node-a's podCIDR 10.244.1.0/24"),
        "{out}"
    );
    assert!(out.contains("bad.yaml:25:60: pod web-1"), "{out}");
}

#[test]
fn a_changed_policy_fails_its_check_in_plain_words() {
    let (dir, p) = edited(
        "nodeport-local-policy.yaml",
        "local.yaml",
        "externalTrafficPolicy: Local",
        "externalTrafficPolicy: Cluster",
    );
    let o = kpsim(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("FAIL  nodeport-local-policy: laptop via the pod's node keeps its address"),
        "{out}"
    );
    assert!(out.contains("expected the pod to see source the client's own address 203.0.113.7, but it sees 10.244.2.1 (the client address was masqueraded)"), "{out}");
    assert!(
        out.contains("expected it to be delivered to [], but it reaches [web-1]"),
        "{out}"
    );
    // Failures tell their trace at summary detail by default.
    assert!(
        out.contains("        PREROUTING nat (KUBE-SERVICES > KUBE-NODEPORTS"),
        "{out}"
    );
    assert!(!out.contains("no rule applies"), "{out}");
    let o = kpsim(&["check", p.to_str().unwrap(), "--detail", "minimal"]);
    let out = stdout(&o);
    assert!(
        out.contains("        result: delivered to web-1, source seen 10.244.2.1"),
        "{out}"
    );
    assert!(!out.contains("PREROUTING"), "{out}");
    let junit = dir.path().join("report.xml");
    let o = kpsim(&[
        "check",
        p.to_str().unwrap(),
        "--format",
        "junit",
        "--output",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert!(xml.contains("<failure message=\"expected"));
    assert_eq!(xml.matches("<testcase").count(), 4);
}

#[test]
fn whole_library_passes() {
    let o = kpsim(&["check", "scenarios/"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"));
}

#[test]
fn output_is_identical_across_runs_and_thread_counts() {
    let run = |threads: &str| {
        Command::new(env!("CARGO_BIN_EXE_kpsim"))
            .args(["matrix", "scenarios/session-affinity.yaml"])
            .env("RAYON_NUM_THREADS", threads)
            .current_dir(root())
            .output()
            .unwrap()
            .stdout
    };
    let one = run("1");
    assert!(!one.is_empty());
    assert_eq!(one, run("2"));
    assert_eq!(one, run("4"));
    assert_eq!(one, run("1"));
    let a = kpsim(&[
        "trace",
        "scenarios/udp-dns.yaml",
        "--from",
        "client-a",
        "--to",
        "service/kube-system/dns:53/udp",
        "--format",
        "json",
    ]);
    let b = kpsim(&[
        "trace",
        "scenarios/udp-dns.yaml",
        "--from",
        "client-a",
        "--to",
        "service/kube-system/dns:53/udp",
        "--format",
        "json",
    ]);
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn pcapng_holds_every_hop_on_its_interface_and_opens_in_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("t.pcapng");
    let o = readme_flow(&["--format", "pcapng", "-o", pcap.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bytes = std::fs::read(&pcap).unwrap();
    // A pcapng section header block.
    assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
    // Byte for byte the same on every run.
    let again = dir.path().join("again.pcapng");
    readme_flow(&["--format", "pcapng", "-o", again.to_str().unwrap()]);
    assert_eq!(bytes, std::fs::read(&again).unwrap());
    let tshark = |extra: &[&str]| {
        Command::new("tshark")
            .args(["-r", pcap.to_str().unwrap()])
            .args(extra)
            .output()
    };
    // Each frame on the host interface it was seen on, with its story.
    let Ok(t) = tshark(&[
        "-T",
        "fields",
        "-e",
        "frame.interface_name",
        "-e",
        "frame.comment",
    ]) else {
        eprintln!("tshark not installed: pcapng checked structurally only");
        return;
    };
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stderr));
    let fields = String::from_utf8_lossy(&t.stdout);
    let names: Vec<&str> = fields
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "laptop/eth0",
            "node-a/eth0",
            "node-a/flannel.1",
            "node-a/eth0",
            "node-b/eth0",
            "node-b/flannel.1",
            "node-b/cni0",
            "web-1/eth0",
            "web-1/eth0",
            "node-b/cni0",
            "node-b/flannel.1",
            "node-b/eth0",
            "node-a/eth0",
            "node-a/flannel.1",
            "node-a/eth0",
            "laptop/eth0",
        ],
        "{fields}"
    );
    assert!(
        fields.contains("node-a/flannel.1\trequest: node-a sends it out flannel.1 to 10.244.2.0, after DNAT to 10.244.2.5:8080 (default/web:http), MASQUERADE to 10.244.1.0:11204"),
        "{fields}"
    );
    assert!(
        fields.contains(
            "node-b/flannel.1\trequest: node-b receives it on flannel.1, decapsulated from VXLAN"
        ),
        "{fields}"
    );
    // flannel's VXLAN port is 8472, not Wireshark's default 4789: decode it
    // as VXLAN, with checksum validation on, and expect no expert warnings.
    let t = tshark(&[
        "-d",
        "udp.port==8472,vxlan",
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-V",
    ])
    .unwrap();
    let out = String::from_utf8_lossy(&t.stdout);
    let err = String::from_utf8_lossy(&t.stderr);
    assert!(t.status.success(), "{err}");
    assert!(!err.to_lowercase().contains("warn"), "{err}");
    // The four outer frames (two each way) decode as VXLAN around TCP.
    assert_eq!(
        out.matches("Virtual eXtensible Local Area Network").count(),
        4,
        "{out}"
    );
    for bad in ["Malformed", "[Checksum Status: Bad]", "incorrect"] {
        assert!(!out.contains(bad), "{bad} in:\n{out}");
    }
}

#[test]
fn rules_print_and_replace_a_node_dump() {
    let o = kpsim(&[
        "rules",
        "scenarios/nodeport-routed.yaml",
        "--node",
        "node-a",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let dump = stdout(&o);
    assert!(dump.contains("*nat\n"));
    // A dump without the masquerade rule: the pod now sees the laptop.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("node-a.rules");
    let edited: String = dump
        .lines()
        .filter(|l| !l.contains("-j MASQUERADE"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&f, edited).unwrap();
    let arg = format!("node-a={}", f.display());
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("source seen 203.0.113.7"),
        "{}",
        stdout(&o)
    );
    // A broken dump is reported with its line.
    std::fs::write(
        &f,
        "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m frob -j ACCEPT\nCOMMIT\n",
    )
    .unwrap();
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 3: unknown match module \"frob\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn diff_lists_changed_flows() {
    let (_dir, p) = edited(
        "masquerade-all.yaml",
        "new.yaml",
        "masqueradeAll: true",
        "masqueradeAll: false",
    );
    let o = kpsim(&["diff", "scenarios/masquerade-all.yaml", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.contains("~ client-a -> default/web:http/tcp cluster IP"),
        "{out}"
    );
    assert!(
        out.contains("source seen: 192.168.10.11  =>  10.244.1.5 (client)"),
        "{out}"
    );
}

#[test]
fn graph_is_dot_with_labelled_edges_and_a_legend() {
    let o = kpsim(&["graph", "scenarios/hairpin.yaml"]);
    assert!(stdout(&o).starts_with("graph {"));
    let o = kpsim(&["graph", "scenarios/hairpin.yaml", "--node", "node-a"]);
    let out = stdout(&o);
    assert!(out.starts_with("digraph {"));
    assert!(out.contains("KUBE-SERVICES"));
    for label in [
        "\"jump (line ",
        "\"DNAT to (line ",
        "\"RETURN (line ",
        "\"MASQUERADE (line ",
    ] {
        assert!(out.contains(label), "{label} in {out}");
    }
    assert!(out.contains("label = \"legend\\l"), "{out}");
    let o = kpsim(&[
        "graph",
        "scenarios/no-endpoints.yaml",
        "--node",
        "node-a",
        "--table",
        "filter",
    ]);
    let out = stdout(&o);
    for label in ["\"REJECT (line 33)\"", "\"DROP (line "] {
        assert!(out.contains(label), "{label} in {out}");
    }
    // The load balancer and hostNetwork pods are part of the topology.
    let o = kpsim(&["graph", "scenarios/loadbalancer-nodeport-delivery.yaml"]);
    let out = stdout(&o);
    assert!(
        out.contains("load balancer\\l198.51.100.22:80/tcp\\l"),
        "{out}"
    );
    assert!(out.contains("198.51.100.22:80/tcp -> :30084"), "{out}");
    let (_dir, p) = edited(
        "hairpin.yaml",
        "hostnet.yaml",
        "pods:\n",
        "pods:\n  - { name: agent, node: node-b, hostNetwork: true }\n",
    );
    let o = kpsim(&["graph", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("agent\\lhostNetwork\\l"),
        "{}",
        stdout(&o)
    );
    // Graphviz reads every view of every bundled scenario.
    if Command::new("dot").arg("-V").output().is_err() {
        eprintln!("graphviz not installed: DOT not rendered");
        return;
    }
    let mut views: Vec<Vec<String>> = Vec::new();
    for e in std::fs::read_dir(root().join("scenarios")).unwrap() {
        let f = e.unwrap().path().display().to_string();
        if !f.ends_with(".yaml") {
            continue;
        }
        views.push(vec!["graph".into(), f.clone()]);
        for table in ["nat", "filter"] {
            views.push(
                ["graph", &f, "--node", "node-a", "--table", table]
                    .map(String::from)
                    .to_vec(),
            );
        }
    }
    views.push(vec!["graph".into(), "--hooks".into()]);
    for (scenario, to) in [
        ("scenarios/nodeport-cluster-policy.yaml", "node-a:30080"),
        (
            "scenarios/loadbalancer-source-ranges.yaml",
            "loadbalancer/default/web:http",
        ),
    ] {
        views.push(
            ["graph", scenario, "--from", "laptop", "--to", to]
                .map(String::from)
                .to_vec(),
        );
    }
    for v in views {
        let o = kpsim(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let mut dot = Command::new("dot")
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        dot.stdin.take().unwrap().write_all(&o.stdout).unwrap();
        let r = dot.wait_with_output().unwrap();
        assert!(
            r.status.success(),
            "{v:?}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(String::from_utf8_lossy(&r.stdout).contains("<svg"));
    }
}

/// The hook view lists each hook's tables in the engine's order, with
/// conntrack right after raw and the confirmation where packets leave.
#[test]
fn graph_draws_the_hook_order() {
    let o = kpsim(&["graph", "--hooks"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for hook in [
        "PREROUTING\\lraw\\lconntrack\\lmangle\\lnat (DNAT; first packet only)\\l",
        "INPUT\\lmangle\\lfilter\\lsecurity\\lnat (SNAT; first packet only)\\lconfirm\\l",
        "FORWARD\\lmangle\\lfilter\\lsecurity\\l",
        "OUTPUT\\lraw\\lconntrack\\lmangle\\lnat (DNAT; first packet only)\\lfilter\\lsecurity\\l",
        "POSTROUTING\\lmangle\\lnat (SNAT; first packet only)\\lconfirm\\l",
    ] {
        assert!(out.contains(hook), "{hook} in {out}");
    }
    // A scenario is not wanted with --hooks, and needed without it.
    assert_eq!(
        kpsim(&["graph", "--hooks", "scenarios/hairpin.yaml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(kpsim(&["graph"]).status.code(), Some(2));
}

/// A flow drawn on the topology: each link the packet crossed, numbered,
/// with the packet as it crossed (inside the tunnel for VXLAN), the reply
/// dashed; several outcomes each carry their probability.
#[test]
fn graph_draws_a_flows_way_on_the_topology() {
    let o = kpsim(&[
        "graph",
        "scenarios/nodeport-cluster-policy.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for edge in [
        "5 -- 1 [ label = \"1: tcp 203.0.113.7:40000 > 192.168.10.11:30080\" dir = forward",
        "1 -- 2 [ label = \"2: tcp 10.244.1.0:11204 > 10.244.2.5:8080 (in VXLAN)\" dir = forward",
        "2 -- 3 [ label = \"3: tcp 10.244.1.0:11204 > 10.244.2.5:8080\" dir = forward",
        "1 -- 5 [ label = \"r3: tcp 192.168.10.11:30080 > 203.0.113.7:40000\" dir = forward, color = blue, fontcolor = blue, style = dashed",
    ] {
        assert!(out.contains(edge), "{edge} in {out}");
    }
    assert!(out.contains("dashed arrows: the reply's way back"), "{out}");
    let o = kpsim(&[
        "graph",
        "scenarios/loadbalancer-source-ranges.yaml",
        "--from",
        "laptop",
        "--to",
        "loadbalancer/default/web:http",
    ]);
    let out = stdout(&o);
    // The load balancer is a stop of its own, once toward each node.
    assert!(
        out.contains("4 -- 6 [ label = \"[1/2] 1: tcp 203.0.113.7:40000 > 198.51.100.20:80\""),
        "{out}"
    );
    assert!(out.contains("6 -- 1 [ label = \"[1/2] 2: "), "{out}");
    assert!(out.contains("6 -- 2 [ label = \"[1/2] 2: "), "{out}");
    // Without --from/--to, no way is drawn.
    let o = kpsim(&["graph", "scenarios/nodeport-cluster-policy.yaml"]);
    assert!(!stdout(&o).contains("dir = forward"));
}

#[test]
fn help_is_worth_reading() {
    let o = kpsim(&["trace", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("--then"));
    assert!(out.contains("--seed"));
    let _ = Path::new(".");
}

#[test]
fn a_rejected_flow_shows_the_refusal_reaching_the_sender() {
    let o = kpsim(&[
        "trace",
        "scenarios/no-endpoints.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30088",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("refusal:\nnode-a: sends icmp 192.168.10.11 > 203.0.113.7 type 3/3"),
        "{out}"
    );
    assert!(out.contains("RELATED"), "{out}");
    assert!(
        out.contains("reaches laptop: its socket gets \"connection refused\""),
        "{out}"
    );
}

#[test]
fn one_check_is_not_plural() {
    let o = kpsim(&["check", "scenarios/hairpin.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).ends_with("\n1 check: 1 passed, 0 failed\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn an_empty_rules_dump_is_said_aloud() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.rules");
    std::fs::write(&f, "").unwrap();
    let arg = format!("node-a={}", f.display());
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "the dump holds no rules at all; node-a is traced as a host without netfilter rules"
        ),
        "{}",
        stderr(&o)
    );
}

#[test]
fn targets_name_node_ports_load_balancers_and_named_ports() {
    let minimal = |scenario: &str, from: &str, to: &str| {
        let o = kpsim(&[
            "trace", scenario, "--from", from, "--to", to, "--detail", "minimal",
        ]);
        assert_eq!(o.status.code(), Some(0), "{to}: {}", stderr(&o));
        stdout(&o)
    };
    let out = minimal(
        "scenarios/nodeport-cluster-policy.yaml",
        "laptop",
        "nodeport/default/web:http@node-a",
    );
    assert!(
        out.contains("laptop  sends tcp 203.0.113.7:40000 > 192.168.10.11:30080"),
        "{out}"
    );
    let out = minimal(
        "scenarios/loadbalancer-local-policy.yaml",
        "laptop",
        "loadbalancer/default/web:http",
    );
    assert!(
        out.contains("sends tcp 203.0.113.7:40000 > 198.51.100.21:80"),
        "{out}"
    );
    let out = minimal(
        "scenarios/udp-dns.yaml",
        "client-a",
        "service/kube-system/dns:53",
    );
    assert!(out.contains("sends udp "), "the port's own protocol: {out}");
    // A port the Service does not have is bad input.
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-cluster-policy.yaml",
        "--from",
        "laptop",
        "--to",
        "service/default/web:8080",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("to: service default/web has no port 8080 (its ports: http (80/TCP))"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_check_to_a_port_the_service_lacks_is_bad_input_with_its_place() {
    let (_dir, p) = edited(
        "nodeport-cluster-policy.yaml",
        "bad.yaml",
        "to: web:80",
        "to: web:81",
    );
    let o = kpsim(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let out = stdout(&o) + &stderr(&o);
    assert!(
        out.contains("bad.yaml:70:9: to: service default/web has no port 81"),
        "{out}"
    );
    assert!(
        out.contains("to: service default/web has no port 81 (its ports: http (80/TCP))"),
        "{out}"
    );
}

#[test]
fn matrix_shows_each_services_node_port() {
    let o = kpsim(&["matrix", "scenarios/loadbalancer-source-ranges.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "service port          cluster IP     node port  load balancer     external IPs\n\
         default/web:http/tcp  10.96.0.52:80  30082      198.51.100.20:80  -\n\n"
        ),
        "{out}"
    );
    let o = kpsim(&[
        "matrix",
        "scenarios/loadbalancer-source-ranges.yaml",
        "--format",
        "markdown",
    ]);
    assert!(stdout(&o)
        .contains("| default/web:http/tcp | 10.96.0.52:80 | 30082 | 198.51.100.20:80 | - |"));
}

/// The README shows the three levels of detail of its flow as kpsim prints
/// them today.
#[test]
fn readme_shows_the_three_levels_as_printed() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    for detail in ["minimal", "summary", "full"] {
        let o = readme_flow(&["--detail", detail]);
        let escaped = stdout(&o)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            readme.contains(&format!("<pre>\n{escaped}</pre>")),
            "README's {detail} trace is out of date"
        );
    }
}

#[test]
fn a_policy_drop_names_the_policy_and_its_line() {
    let o = kpsim(&[
        "rules",
        "scenarios/nodeport-routed.yaml",
        "--node",
        "node-a",
    ]);
    let dump = stdout(&o);
    // filter FORWARD drops by policy, and KUBE-FORWARD accepts nothing.
    let (head, filter) = dump.split_once("*filter\n").unwrap();
    let filter: String = filter
        .replace(":FORWARD ACCEPT", ":FORWARD DROP")
        .lines()
        .filter(|l| !(l.starts_with("-A KUBE-FORWARD") && l.ends_with("-j ACCEPT")))
        .map(|l| format!("{l}\n"))
        .collect();
    let edited = format!("{head}*filter\n{filter}");
    let line = edited
        .lines()
        .position(|l| l.starts_with(":FORWARD DROP"))
        .unwrap()
        + 1;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("node-a.rules");
    std::fs::write(&f, &edited).unwrap();
    let arg = format!("node-a={}", f.display());
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
        "--detail",
        "minimal",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let want = format!("node-a dropped it in filter FORWARD: policy :FORWARD DROP (line {line})");
    assert!(
        stdout(&o).starts_with(&format!("result: dropped ({want})")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_shows_the_effective_kube_proxy_configuration_and_node_settings() {
    let o = kpsim(&["config", "scenarios/localhost-nodeports.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "kind: KubeProxyConfiguration",
        "healthzBindAddress: 0.0.0.0:10256",
        "  tcpEstablishedTimeout: 24h0m0s",
        "  localhostNodePorts: true",
        "#   net.ipv4.conf.all.route_localnet = 1",
        "#   net.netfilter.nf_conntrack_tcp_timeout_close_wait = 3600",
    ] {
        assert!(out.contains(line), "{line:?} missing from\n{out}");
    }
    // Without localhost node ports kube-proxy leaves route_localnet alone.
    let o = kpsim(&[
        "config",
        "scenarios/localhost-nodeports-disabled.yaml",
        "--node",
        "node-b",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["kubeProxyConfiguration"]["iptables"]["localhostNodePorts"],
        false
    );
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    let keys: Vec<&str> = nodes[0]["sysctls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"net.ipv4.ip_forward"), "{keys:?}");
    assert!(
        !keys.contains(&"net.ipv4.conf.all.route_localnet"),
        "{keys:?}"
    );
    let o = kpsim(&["config", "scenarios/hairpin.yaml", "--node", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--node nope: no such node"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_port_asked_for_twice_and_a_pod_on_the_bridge_address_are_bad_input() {
    let bad = |name: &str, from: &str, to: &str| {
        let (dir, p) = edited("health-check-node-ports.yaml", name, from, to);
        let o = kpsim(&["check", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        drop(dir);
        stdout(&o)
    };
    let out = bad(
        "twice.yaml",
        "healthCheckNodePort: 30000\n      ports: [{ name: http, port: 80, targetPort: 8080 }]",
        "healthCheckNodePort: 30000\n      ports: [{ name: http, port: 80, targetPort: 8080, nodePort: 30000 }]",
    );
    assert!(
        out.contains("twice.yaml:45:7: service default/web"),
        "{out}"
    );
    assert!(
        out.contains("already allocated to default/web (spec.ports[0].nodePort)"),
        "{out}"
    );
    let out = bad("bridge.yaml", "ip: 10.244.2.5 }", "ip: 10.244.2.1 }");
    assert!(
        out.contains("bridge.yaml:32:60: pod web-1: ip 10.244.2.1 is node node-b's own"),
        "{out}"
    );
    assert!(out.contains("cni0 address"), "{out}");
}

#[test]
fn nftables_mode_rules_print_as_nft_lists_them_and_replace_a_node_dump() {
    let o = kpsim(&[
        "rules",
        "scenarios/nodeport-routed.yaml",
        "--node",
        "node-a",
        "--mode",
        "nftables",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let dump = stdout(&o);
    assert!(dump.starts_with("table ip kube-proxy {\n"), "{dump}");
    assert!(dump.contains("\tmap service-ips {\n"));
    assert!(dump.contains("\t\tmasquerade fully-random\n"));
    // The nft dump, without the masquerade, as node-a's rules in a
    // scenario of iptables mode: told apart by content.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("node-a.nft");
    std::fs::write(&f, dump.replace("\t\tmasquerade fully-random\n", "")).unwrap();
    let arg = format!("node-a={}", f.display());
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("PREROUTING ip kube-proxy nat-prerouting"),
        "{out}"
    );
    assert!(
        out.contains("@service-nodeports: tcp . 30080 -> element"),
        "{out}"
    );
    assert!(out.contains("source seen 203.0.113.7"), "{out}");
    // A broken nft dump is reported with its line and column.
    std::fs::write(
        &f,
        "table ip kube-proxy {\n\tchain c {\n\t\tip tos 4 drop\n\t}\n}\n",
    )
    .unwrap();
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-routed.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--rules",
        &arg,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("line 3:6: ip tos is not modelled"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn matrix_compares_the_two_modes() {
    let o = kpsim(&[
        "matrix",
        "scenarios/nodeport-cluster-policy.yaml",
        "--mode",
        "iptables,nftables",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    // Node ports on 127.0.0.1 work in iptables mode only.
    assert!(
        out.contains(
            "node-a -> default/web:http/tcp node port on node-a 127.0.0.1\n  iptables  web-1"
        ),
        "{out}"
    );
    assert!(out.contains("  nftables  closed-port"), "{out}");
    assert!(
        out.contains("cells differ between iptables and nftables mode"),
        "{out}"
    );
    let o = kpsim(&[
        "matrix",
        "scenarios/nodeport-cluster-policy.yaml",
        "--mode",
        "ipvs",
    ]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn kube_proxy_mode_in_the_scenario_selects_nftables() {
    let (_d, p) = edited(
        "three-endpoints.yaml",
        "nft.yaml",
        "scenario:",
        "kubeProxy:\n  mode: nftables\nscenario:",
    );
    let o = kpsim(&["check", p.to_str().unwrap(), "--verbose"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("numgen random mod 3"), "{}", stdout(&o));
    let (_d, p) = edited(
        "three-endpoints.yaml",
        "ipvs.yaml",
        "scenario:",
        "kubeProxy:\n  mode: ipvs\nscenario:",
    );
    let o = kpsim(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("2:9: mode ipvs"), "{}", stdout(&o));
}

#[test]
fn nftables_mode_takes_its_own_masquerade_bit() {
    let (_d, p) = edited(
        "three-endpoints.yaml",
        "bit.yaml",
        "scenario:",
        "kubeProxy:\n  mode: nftables\n  iptables: { masqueradeBit: 13 }\n  nftables: { masqueradeBit: 12 }\nscenario:",
    );
    let o = kpsim(&["rules", p.to_str().unwrap(), "--node", "node-a"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("meta mark set meta mark | 0x00001000"),
        "{}",
        stdout(&o)
    );
    let o = kpsim(&[
        "rules",
        p.to_str().unwrap(),
        "--node",
        "node-a",
        "--mode",
        "iptables",
    ]);
    assert!(
        stdout(&o).contains("-j MARK --set-xmark 0x2000/0x2000"),
        "{}",
        stdout(&o)
    );
}

fn check_edited(scenario: &str, from: &str, to: &str) -> (i32, String) {
    let (_dir, p) = edited(scenario, "edited.yaml", from, to);
    let o = kpsim(&["check", p.to_str().unwrap()]);
    (o.status.code().unwrap(), stdout(&o) + &stderr(&o))
}

#[test]
fn typos_inside_objects_are_refused_with_path_and_place() {
    let (code, out) = check_edited(
        "loadbalancer-local-policy.yaml",
        "externalTrafficPolicy: Local",
        "externalTraficPolicy: Local",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("edited.yaml:35:7: Service web: unknown field \"spec.externalTraficPolicy\"; did you mean \"externalTrafficPolicy\"?"),
        "{out}"
    );
    let (code, out) = check_edited(
        "nodeport-cluster-policy.yaml",
        "targetPort: 8080",
        "targetport: 8080",
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("unknown field \"spec.ports[0].targetport\"; did you mean \"targetPort\"?"),
        "{out}"
    );
}

#[test]
fn typos_in_an_included_list_point_into_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = root().join("sim/tests/data/scenario");
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    for f in ["pasted.yaml", "manifests/kube-proxy.yaml"] {
        std::fs::copy(data.join(f), dir.path().join(f)).unwrap();
    }
    let list = std::fs::read_to_string(data.join("manifests/kubectl-list.yaml")).unwrap();
    std::fs::write(
        dir.path().join("manifests/kubectl-list.yaml"),
        list.replace("    selector: { app: api }", "    selectr: { app: api }"),
    )
    .unwrap();
    let o = kpsim(&["check", dir.path().join("pasted.yaml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(
        out.contains("manifests/kubectl-list.yaml:89:5: Service api: unknown field \"spec.selectr\"; did you mean \"selector\"?"),
        "{out}"
    );
}

#[test]
fn invalid_values_are_refused_in_the_api_servers_words() {
    for (from, to, want) in [
        (
            "port: 80, targetPort: 8080",
            "port: -80, targetPort: 8080",
            "spec.ports[0].port: Invalid value: -80: must be between 1 and 65535, inclusive",
        ),
        (
            "port: 80, targetPort: 8080",
            "port: 0, targetPort: 8080",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            "type: NodePort",
            "type: Nodeport",
            "spec.type: Unsupported value: \"Nodeport\"",
        ),
        (
            "externalTrafficPolicy: Cluster",
            "externalTrafficPolicy: local",
            "spec.externalTrafficPolicy: Unsupported value: \"local\"",
        ),
        (
            "protocol: TCP",
            "protocol: tcp",
            "spec.ports[0].protocol: Unsupported value: \"tcp\"",
        ),
        (
            "serviceCIDR: 10.96.0.0/12",
            "serviceCIDR: 10.0.0.0/8",
            "serviceCIDR 10.0.0.0/8 contains clusterCIDR 10.244.0.0/16",
        ),
    ] {
        let (code, out) = check_edited("nodeport-cluster-policy.yaml", from, to);
        assert_eq!(code, 2, "{to}: {out}");
        assert!(out.contains(want), "{to}: missing {want:?} in {out}");
        assert!(out.contains("edited.yaml:"), "{out}");
    }
}

#[test]
fn a_half_dropped_check_fails_unless_the_drops_are_expected() {
    let lb_all = (
        "network: routed",
        "network: routed\n  loadBalancer: { nodes: all }",
    );
    let (code, out) = check_edited("loadbalancer-local-policy.yaml", lb_all.0, lb_all.1);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "1/2 (0.5) of the outcomes are dropped instead of reaching a pod (node-a dropped it"
        ),
        "{out}"
    );
    // Saying so makes it pass; saying the wrong share does not.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lb.yaml");
    let text = std::fs::read_to_string(root().join("scenarios/loadbalancer-local-policy.yaml"))
        .unwrap()
        .replace(lb_all.0, lb_all.1);
    for (share, code) in [("1/2", 0), ("1/3", 1)] {
        let edited = text.replace(
            "decidedBy: node-b }",
            &format!("decidedBy: node-b, dropped: {share} }}"),
        );
        std::fs::write(&p, edited).unwrap();
        let o = kpsim(&["check", p.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(code), "{}", stdout(&o));
    }
    assert!(stdout(&kpsim(&["check", p.to_str().unwrap()]))
        .contains("expected dropped: 1/3, but 1/2 (0.5) of the outcomes reach no pod"));
}

#[test]
fn snat_is_judged_even_when_the_source_looks_unchanged() {
    // node-a reaching a pod on node-b through the cluster IP is masqueraded
    // to its own eth0 address: the pod sees the sender's address, and yet a
    // source NAT happened.
    let check = "  - name: laptop via node-a sees node-a's eth0 address";
    let added = |snat: bool| {
        format!("  - name: node-a to the cluster IP\n    from: node-a\n    to: web:80\n    expect: {{ delivered: [web-1], sourceSeen: client, masqueraded: false, snat: {snat} }}\n{check}")
    };
    let (code, out) = check_edited("nodeport-routed.yaml", check, &added(true));
    assert_eq!(code, 0, "{out}");
    let (code, out) = check_edited("nodeport-routed.yaml", check, &added(false));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("expected snat: false, but a source NAT happens on the way"),
        "{out}"
    );
}

#[test]
fn check_dir_names_every_file_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read_to_string(root().join("scenarios/hairpin.yaml")).unwrap();
    // A scenario starting with `---` and one with a quoted key are read.
    std::fs::write(d.join("a-dashes.yaml"), format!("---\n{good}")).unwrap();
    std::fs::write(
        d.join("b-quoted.yml"),
        good.replacen("scenario: hairpin", "\"scenario\": hairpin-quoted", 1),
    )
    .unwrap();
    // A misspelt top-level key, a non-UTF-8 file and a stray manifest are
    // errors, each named.
    std::fs::write(
        d.join("c-senario.yaml"),
        good.replacen("scenario:", "senario:", 1),
    )
    .unwrap();
    std::fs::write(d.join("d-latin1.yaml"), b"scenario: caf\xe9\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(
        d.join("sub/stray.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: { name: x }\n",
    )
    .unwrap();
    let o = kpsim(&["check", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    for name in ["c-senario.yaml", "d-latin1.yaml", "sub/stray.yaml"] {
        assert!(
            out.contains(&format!("ERROR {}", d.join(name).display())),
            "{name}: {out}"
        );
    }
    assert!(out.contains("did you mean `scenario`?"), "{out}");
    assert!(out.contains("not UTF-8"), "{out}");
    assert!(out.contains("PASS  hairpin:"), "{out}");
    assert!(out.contains("PASS  hairpin-quoted:"), "{out}");
    assert!(
        out.contains("passed, 0 failed; 3 files could not be run"),
        "{out}"
    );
    // A manifest that a scenario of the run includes is part of it.
    let data = root().join("sim/tests/data/scenario");
    let o = kpsim(&[
        "check",
        data.join("pasted.yaml").to_str().unwrap(),
        data.join("manifests").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert!(
        files.iter().filter(|f| f["status"] == "included").count() == 2,
        "{v}"
    );
    assert_eq!(v["summary"]["errors"], 0);
}

#[test]
fn yaml_limits_are_named_and_can_be_raised() {
    let o = kpsim(&[
        "--yaml-limit",
        "nodes=20",
        "check",
        "scenarios/hairpin.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.contains("YAML limit reached: more than 20 values, mappings and sequences in one file (limit `nodes`)"), "{out}");
    assert!(
        out.contains("--yaml-limit nodes=N or KPSIM_YAML_LIMIT=nodes=N"),
        "{out}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_kpsim"))
        .args(["check", "scenarios/hairpin.yaml"])
        .env("KPSIM_YAML_LIMIT", "depth=3")
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).contains("(limit `depth`)"), "{}", stdout(&o));
    let o = kpsim(&["--yaml-limit", "nodez=1", "check", "scenarios/hairpin.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown YAML limit \"nodez\""));
}

#[test]
fn an_alias_bomb_is_refused_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bomb.yaml");
    let scenario = dir.path().join("s.yaml");
    let hairpin = std::fs::read_to_string(root().join("scenarios/hairpin.yaml")).unwrap();
    std::fs::write(&scenario, format!("{hairpin}\ninclude: [bomb.yaml]\n")).unwrap();
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let prev = i - 1;
        text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
    }
    std::fs::write(&p, text).unwrap();
    // (A lower limit than the default keeps the test quick.)
    let o = kpsim(&[
        "--yaml-limit",
        "alias-expansion=20000",
        "check",
        scenario.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.contains("bomb.yaml"), "{out}");
    assert!(
        out.contains("YAML limit reached: more than 20000 values replayed by expanding aliases in one file (limit `alias-expansion`)"),
        "{out}"
    );
}

#[test]
fn then_keeps_the_joint_probability_of_both_flows() {
    let o = kpsim(&[
        "trace",
        "scenarios/session-affinity.yaml",
        "--from",
        "client-a",
        "--to",
        "web:80",
        "--then",
        "web:80",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["then"].as_array().unwrap().len(), 1);
    let outcomes = v["outcomes"].as_array().unwrap();
    assert_eq!(outcomes.len(), 2);
    for oc in outcomes {
        // Each joint path: the first flow's pod, and the second flow follows
        // it (session affinity), with the probability of the whole path.
        assert_eq!(oc["probability_exact"], "1/2");
        assert_eq!(oc["then"][0]["delivered_to"], oc["delivered_to"]);
        assert_eq!(oc["destination_seen"]["port"], 8080);
    }
}

#[test]
fn machine_output_is_typed() {
    let o = kpsim(&[
        "matrix",
        "scenarios/three-endpoints.yaml",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cell = v["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| !c["received_by"].as_array().unwrap().is_empty())
        .unwrap();
    assert!(cell["received_by"].is_array(), "{cell}");
    assert!(cell["received_by"][0]["probability"].is_f64(), "{cell}");
    assert!(cell["entry"]["port"].is_u64(), "{cell}");
    let o = kpsim(&["schema", "check"]);
    assert_eq!(o.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["title"], "CheckReport");
    let o = kpsim(&[
        "trace",
        "scenarios/no-endpoints.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30088",
        "--format",
        "json",
    ]);
    let text = stdout(&o);
    for debug in ["IcmpPortUnreachable", "Nat(", "NatSpec", "Some(", "Rule\""] {
        assert!(!text.contains(debug), "Rust debug text {debug:?} in {text}");
    }
}
