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
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-cluster-policy.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("-j DNAT --to-destination 10.244.2.5:8080"),
        "{out}"
    );
    assert!(out.contains("flannel.1 encapsulates it in VXLAN"));
    assert!(out.contains("result: delivered to web-1, source seen 10.244.1.0, destination seen 10.244.2.5:8080, reply ok"));
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
fn pcap_holds_every_hop_and_opens_in_tshark() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("t.pcap");
    let o = kpsim(&[
        "trace",
        "scenarios/nodeport-cluster-policy.yaml",
        "--from",
        "laptop",
        "--to",
        "node-a:30080",
        "--format",
        "pcap",
        "-o",
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bytes = std::fs::read(&pcap).unwrap();
    assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    // flannel's VXLAN port is 8472, not Wireshark's default 4789: decode it
    // as VXLAN, with checksum validation on, and expect no expert warnings.
    if let Ok(t) = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
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
        .output()
    {
        let out = String::from_utf8_lossy(&t.stdout);
        let err = String::from_utf8_lossy(&t.stderr);
        assert!(t.status.success(), "{err}");
        assert!(!err.to_lowercase().contains("warn"), "{err}");
        assert!(
            out.contains("Virtual eXtensible Local Area Network"),
            "{out}"
        );
        for bad in ["Malformed", "[Checksum Status: Bad]", "incorrect"] {
            assert!(!out.contains(bad), "{bad} in:\n{out}");
        }
    } else {
        eprintln!("tshark not installed: pcap checked structurally only");
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
fn graph_is_dot() {
    let o = kpsim(&["graph", "scenarios/hairpin.yaml"]);
    assert!(stdout(&o).starts_with("graph {"));
    let o = kpsim(&["graph", "scenarios/hairpin.yaml", "--node", "node-a"]);
    let out = stdout(&o);
    assert!(out.starts_with("digraph {"));
    assert!(out.contains("KUBE-SERVICES"));
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
