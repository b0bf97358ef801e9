//! Generated rules, checked line by line in `iptables-save` form.
//!
//! The three comparison cases mirror upstream `proxier_test.go` cases
//! (`TestOverallIPTablesRules`' ns1/svc1 ClusterIP service, the
//! `externalTrafficPolicy: Local` NodePort service, and the LoadBalancer
//! with `loadBalancerSourceRanges` and ClientIP affinity): the chain names
//! are the ones upstream expects for the same names, and the rules are the
//! ones upstream's expected dumps list for them.

use super::*;
use crate::netfilter::Ruleset;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(
    ns: &str,
    svc: &str,
    port_name: &str,
    port: i32,
    eps: &[(&str, &str, bool)],
) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node, ready)| json!({
            "addresses": [ip], "nodeName": node, "conditions": {"ready": ready, "serving": true, "terminating": !ready}
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node1".into(),
        ip: "192.168.0.2".parse().unwrap(),
        pod_cidr: Some("10.0.1.0/24".parse().unwrap()),
        zone: None,
        addresses: vec!["192.168.0.2".parse().unwrap()],
    }
}

fn config() -> ProxyConfig {
    ProxyConfig {
        detect_local: DetectLocal::ClusterCidr("10.0.0.0/8".parse().unwrap()),
        ..ProxyConfig::default()
    }
}

/// The node's ruleset as `iptables-save` prints it.
fn saved(services: &[Service], slices: &[EndpointSlice]) -> String {
    let model = ProxyModel::build(services, slices);
    let rules = node_rules(&config(), &node(), &model);
    let rs = Ruleset::load(&rules.restore_text)
        .unwrap_or_else(|e| panic!("{e}\n{}", rules.restore_text));
    rs.to_iptables_save()
}

fn assert_has(dump: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            dump.lines().any(|d| d == *l),
            "missing line:\n{l}\nin:\n{dump}"
        );
    }
}

#[test]
fn clusterip_with_three_endpoints() {
    let s = svc(json!({
        "metadata": {"name": "svc1", "namespace": "ns1"},
        "spec": {"clusterIP": "172.30.0.41", "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]}
    }));
    let sl = slice(
        "ns1",
        "svc1",
        "p80",
        80,
        &[
            ("10.180.0.1", "node1", true),
            ("10.180.0.2", "node2", true),
            ("10.180.0.3", "node2", true),
        ],
    );
    let dump = saved(&[s], &[sl]);
    let sep1 = names::sep_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80");
    assert_eq!(sep1, "KUBE-SEP-SXIVWICOYRO3J4NJ");
    let sep2 = names::sep_chain("ns1/svc1:p80", "tcp", "10.180.0.2:80");
    let sep3 = names::sep_chain("ns1/svc1:p80", "tcp", "10.180.0.3:80");
    assert_has(
        &dump,
        &[
            "-A KUBE-SERVICES -d 172.30.0.41/32 -p tcp -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-SVC-XPGD46QRK7WJZT7O ! -s 10.0.0.0/8 -d 172.30.0.41/32 -p tcp -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
            &format!("-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m statistic --mode random --probability 0.33333333349 -j {sep1}"),
            &format!("-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -m statistic --mode random --probability 0.50000000000 -j {sep2}"),
            &format!("-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.3:80\" -j {sep3}"),
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -s 10.180.0.1/32 -m comment --comment \"ns1/svc1:p80\" -j KUBE-MARK-MASQ",
            "-A KUBE-SEP-SXIVWICOYRO3J4NJ -p tcp -m comment --comment \"ns1/svc1:p80\" -m tcp -j DNAT --to-destination 10.180.0.1:80",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
            "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully",
            "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
        ],
    );
    // No external chain for a ClusterIP service.
    assert!(!dump.contains("KUBE-EXT-"));
}

#[test]
fn nodeport_local_policy_with_and_without_local_endpoints() {
    let s = svc(json!({
        "metadata": {"name": "svc2", "namespace": "ns2"},
        "spec": {"type": "NodePort", "clusterIP": "172.30.0.42", "externalTrafficPolicy": "Local",
                 "ports": [{"name": "p80", "port": 80, "nodePort": 3001, "protocol": "TCP"}]}
    }));
    let ext = "KUBE-EXT-GNZBNJ2PO5MGZ6GT";
    let svl = "KUBE-SVL-GNZBNJ2PO5MGZ6GT";
    // A local endpoint: the EXT chain short-circuits pods and the node,
    // then uses the local chain.
    let sl = slice(
        "ns2",
        "svc2",
        "p80",
        80,
        &[("10.180.0.2", "node1", true), ("10.180.0.3", "node2", true)],
    );
    let dump = saved(std::slice::from_ref(&s), &[sl]);
    assert_has(
        &dump,
        &[
            &format!("-A KUBE-NODEPORTS -p tcp -m comment --comment \"ns2/svc2:p80\" -m tcp --dport 3001 -j {ext}"),
            &format!("-A {ext} -s 10.0.0.0/8 -m comment --comment \"pod traffic for ns2/svc2:p80 external destinations\" -j KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
            &format!("-A {ext} -m comment --comment \"masquerade LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"),
            &format!("-A {ext} -m comment --comment \"route LOCAL traffic for ns2/svc2:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
            &format!("-A {ext} -j {svl}"),
        ],
    );
    let svl_rules: Vec<&str> = dump
        .lines()
        .filter(|l| l.starts_with(&format!("-A {svl}")))
        .collect();
    assert_eq!(svl_rules.len(), 1, "only the local endpoint: {svl_rules:?}");
    assert!(svl_rules[0].contains("10.180.0.2:80"));
    // No local endpoint: traffic from outside is dropped in the filter table.
    let sl = slice("ns2", "svc2", "p80", 80, &[("10.180.0.3", "node2", true)]);
    let dump = saved(&[s], &[sl]);
    assert_has(
        &dump,
        &["-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment \"ns2/svc2:p80 has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp --dport 3001 -j DROP"],
    );
    assert!(!dump.contains(&format!("-A {ext} -j {svl}")));
    assert!(!dump.contains(&format!(":{svl}")));
}

#[test]
fn loadbalancer_source_ranges_and_client_ip_affinity() {
    let s = svc(json!({
        "metadata": {"name": "svc5", "namespace": "ns5"},
        "spec": {"type": "LoadBalancer", "clusterIP": "172.30.0.45", "sessionAffinity": "ClientIP",
                 "loadBalancerSourceRanges": ["203.0.113.0/25"],
                 "ports": [{"name": "p80", "port": 80, "nodePort": 3002, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}
    }));
    let sl = slice("ns5", "svc5", "p80", 80, &[("10.180.0.3", "node1", true)]);
    let dump = saved(&[s], &[sl]);
    let fw = names::fw_chain("ns5/svc5:p80", "tcp");
    assert_eq!(fw, "KUBE-FW-NUKIZ6OKUXPJNT4C");
    let ext = names::ext_chain("ns5/svc5:p80", "tcp");
    let svc_c = names::svc_chain("ns5/svc5:p80", "tcp");
    let sep = names::sep_chain("ns5/svc5:p80", "tcp", "10.180.0.3:80");
    assert_has(
        &dump,
        &[
            &format!("-A KUBE-SERVICES -d 5.6.7.8/32 -p tcp -m comment --comment \"ns5/svc5:p80 loadbalancer IP\" -m tcp --dport 80 -j {fw}"),
            &format!("-A {fw} -s 203.0.113.0/25 -m comment --comment \"ns5/svc5:p80 loadbalancer IP\" -j {ext}"),
            &format!("-A {fw} -m comment --comment \"other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL\""),
            &format!("-A KUBE-PROXY-FIREWALL -d 5.6.7.8/32 -p tcp -m comment --comment \"ns5/svc5:p80 traffic not accepted by {fw}\" -m tcp --dport 80 -j DROP"),
            &format!("-A {svc_c} -m comment --comment \"ns5/svc5:p80 -> 10.180.0.3:80\" -m recent --rcheck --seconds 10800 --reap --name {sep} --mask 255.255.255.255 --rsource -j {sep}"),
            &format!("-A {svc_c} -m comment --comment \"ns5/svc5:p80 -> 10.180.0.3:80\" -j {sep}"),
            &format!("-A {sep} -p tcp -m comment --comment \"ns5/svc5:p80\" -m recent --set --name {sep} --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.180.0.3:80"),
        ],
    );
}

#[test]
fn no_endpoints_rejects_and_headless_externalname_are_noted() {
    let s = svc(json!({"metadata": {"name": "empty", "namespace": "ns6"},
        "spec": {"clusterIP": "172.30.0.46", "ports": [{"name": "p80", "port": 80}]}}));
    let h = svc(
        json!({"metadata": {"name": "hl", "namespace": "ns6"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    );
    let e = svc(
        json!({"metadata": {"name": "ext", "namespace": "ns6"}, "spec": {"type": "ExternalName", "externalName": "example.com"}}),
    );
    let model = ProxyModel::build(&[s.clone(), h, e], &[]);
    assert_eq!(model.notes.len(), 2);
    assert!(model.notes[0].note.contains("headless"));
    assert!(model.notes[1].note.contains("ExternalName"));
    let dump = saved(&[s], &[]);
    assert_has(&dump, &["-A KUBE-SERVICES -d 172.30.0.46/32 -p tcp -m comment --comment \"ns6/empty:p80 has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"]);
}

#[test]
fn terminating_endpoints_only_when_no_ready_ones() {
    let s = svc(json!({"metadata": {"name": "t", "namespace": "ns"},
        "spec": {"clusterIP": "172.30.0.47", "ports": [{"name": "p", "port": 80}]}}));
    let sl = slice("ns", "t", "p", 80, &[("10.180.0.8", "node2", false)]);
    let dump = saved(std::slice::from_ref(&s), &[sl]);
    assert!(
        dump.contains("10.180.0.8:80"),
        "serving-terminating fallback"
    );
    let sl = slice(
        "ns",
        "t",
        "p",
        80,
        &[
            ("10.180.0.8", "node2", false),
            ("10.180.0.9", "node2", true),
        ],
    );
    let dump = saved(&[s], &[sl]);
    assert!(!dump.contains("10.180.0.8:80"));
    assert!(dump.contains("10.180.0.9:80"));
}

#[test]
fn detect_local_modes_and_masquerade_all() {
    let s = svc(json!({"metadata": {"name": "d", "namespace": "ns"},
        "spec": {"clusterIP": "172.30.0.48", "ports": [{"name": "p", "port": 80}]}}));
    let sl = slice("ns", "d", "p", 80, &[("10.180.0.1", "node1", true)]);
    let model = ProxyModel::build(&[s], &[sl]);
    let cases = [
        (DetectLocal::NodeCidr, false, "! -s 10.0.1.0/24"),
        (
            DetectLocal::BridgeInterface("cni0".into()),
            false,
            "! -i cni0",
        ),
        (
            DetectLocal::InterfaceNamePrefix("veth".into()),
            false,
            "! -i veth+",
        ),
        (DetectLocal::None, true, "-d 172.30.0.48/32"),
    ];
    for (det, all, want) in cases {
        let cfg = ProxyConfig {
            detect_local: det,
            masquerade_all: all,
            ..ProxyConfig::default()
        };
        let text = node_rules(&cfg, &node(), &model).restore_text;
        let dump = Ruleset::load(&text).unwrap().to_iptables_save();
        let mark_rule = dump
            .lines()
            .find(|l| l.starts_with("-A KUBE-SVC-") && l.ends_with("-j KUBE-MARK-MASQ"))
            .unwrap_or_else(|| panic!("no masquerade rule for {want}"));
        assert!(mark_rule.contains(want), "{mark_rule}");
    }
}

#[test]
fn parallel_generation_equals_serial() {
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..50 {
        services.push(svc(
            json!({"metadata": {"name": format!("s{i}"), "namespace": "ns"},
            "spec": {"clusterIP": format!("172.30.1.{i}"), "ports": [{"name": "p", "port": 80}]}}),
        ));
        slices.push(slice(
            "ns",
            &format!("s{i}"),
            "p",
            80,
            &[(&format!("10.180.1.{i}"), "node1", true)],
        ));
    }
    let model = ProxyModel::build(&services, &slices);
    let nodes: Vec<NodeInfo> = (0..8)
        .map(|i| NodeInfo {
            name: format!("node{i}"),
            ..node()
        })
        .collect();
    let par = cluster_rules(&config(), &nodes, &model);
    let ser: Vec<NodeRules> = nodes
        .iter()
        .map(|n| node_rules(&config(), n, &model))
        .collect();
    assert_eq!(par, ser);
}

/// `UsesClusterEndpoints` is true for any externally reachable service,
/// even with both policies Local: the external chain's short circuit for
/// pod and host traffic goes to the cluster chain, which must exist.
#[test]
fn local_internal_and_external_policies_keep_the_cluster_chain_for_short_circuits() {
    let s = svc(json!({
        "metadata": {"name": "svc1", "namespace": "ns1"},
        "spec": {"type": "NodePort", "clusterIP": "172.30.0.41",
                 "internalTrafficPolicy": "Local", "externalTrafficPolicy": "Local",
                 "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}]}
    }));
    let sl = slice("ns1", "svc1", "p80", 80, &[("10.180.0.1", "node2", true)]);
    let dump = saved(&[s], &[sl]);
    let spn = names::service_port_name("ns1", "svc1", "p80");
    let svc_chain = names::svc_chain(&spn, "tcp");
    assert_has(&dump, &[&format!(":{svc_chain} - [0:0]")]);
}
