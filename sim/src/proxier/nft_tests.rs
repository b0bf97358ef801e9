//! nftables mode's generated table against upstream's
//! `TestOverallNFTablesRules` (the same six services on `test-node`,
//! 192.168.0.2, pods in 10.0.0.0/8, services in 172.30.0.0/16, node ports
//! on 192.168.0.2/32): chain, set and map names, each chain's rules and
//! each map's elements as upstream expects them, in `nft list` form.

use super::*;
use crate::nftables::{Engine, Ruleset};
use crate::proxier::ProxyModel;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

fn svc(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}

fn slice(ns: &str, name: &str, eps: &[(&str, Option<&str>)]) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": ns, "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node)| json!({"addresses": [ip], "nodeName": node})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn overall() -> Ruleset {
    let port = |np: Option<i32>| {
        let mut p = json!({"name": "p80", "port": 80, "protocol": "TCP"});
        if let Some(n) = np {
            p["nodePort"] = json!(n);
        }
        json!([p])
    };
    let services = vec![
        svc(json!({"metadata": {"name": "svc1", "namespace": "ns1"},
            "spec": {"clusterIP": "172.30.0.41", "ports": port(None)}})),
        svc(json!({"metadata": {"name": "svc2", "namespace": "ns2"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "clusterIP": "172.30.0.42",
                     "ports": port(Some(3001)), "externalIPs": ["192.168.99.22"], "healthCheckNodePort": 30000},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})),
        svc(json!({"metadata": {"name": "svc3", "namespace": "ns3"},
            "spec": {"type": "NodePort", "clusterIP": "172.30.0.43", "ports": port(Some(3003))}})),
        svc(json!({"metadata": {"name": "svc4", "namespace": "ns4"},
            "spec": {"type": "NodePort", "clusterIP": "172.30.0.44", "externalIPs": ["192.168.99.33"], "ports": port(None)}})),
        svc(json!({"metadata": {"name": "svc5", "namespace": "ns5"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Cluster", "clusterIP": "172.30.0.45",
                     "ports": port(Some(3002)), "healthCheckNodePort": 30000,
                     "loadBalancerSourceRanges": [" 203.0.113.0/25"], "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}})),
        svc(json!({"metadata": {"name": "svc6", "namespace": "ns6"},
            "spec": {"clusterIP": "172.30.0.46", "ports": port(None)}})),
    ];
    let slices = vec![
        slice("ns1", "svc1", &[("10.180.0.1", None)]),
        slice("ns2", "svc2", &[("10.180.0.2", None)]),
        slice("ns3", "svc3", &[("10.180.0.3", None)]),
        slice(
            "ns4",
            "svc4",
            &[("10.180.0.4", None), ("10.180.0.5", Some("test-node"))],
        ),
        slice("ns5", "svc5", &[("10.180.0.3", None)]),
    ];
    let model = ProxyModel::build(&services, &slices);
    let config = ProxyConfig {
        detect_local: DetectLocal::ClusterCidr("10.0.0.0/8".parse().unwrap()),
        node_port_addresses: vec!["192.168.0.2/32".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let node = NodeInfo {
        name: "test-node".into(),
        ip: "192.168.0.2".parse().unwrap(),
        pod_cidr: None,
        zone: None,
        addresses: vec![
            "192.168.0.2".parse().unwrap(),
            "192.168.1.2".parse().unwrap(),
        ],
    };
    let nft = NftConfig {
        service_cidrs: vec!["172.30.0.0/16".parse().unwrap()],
    };
    let text = node_table(&config, &nft, &node, &model);
    let rs = Ruleset::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Engine::new(rs.clone()).unwrap_or_else(|e| panic!("{e}\n{text}"));
    rs
}

fn chain_rules(rs: &Ruleset, chain: &str) -> Vec<String> {
    rs.tables[0]
        .chain(chain)
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .rules
        .iter()
        .map(|r| r.text.to_string())
        .collect()
}

fn elements(rs: &Ruleset, set: &str) -> Vec<String> {
    let mut v: Vec<String> = rs.tables[0]
        .set(set)
        .unwrap_or_else(|| panic!("no set {set}"))
        .elements
        .iter()
        .map(|e| e.to_string())
        .collect();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn base_chains_and_fixed_rules_as_upstream() {
    let rs = overall();
    assert_eq!(
        chain_rules(&rs, "filter-prerouting-pre-dnat"),
        ["ct state new jump firewall-check"]
    );
    assert_eq!(
        chain_rules(&rs, "filter-output-pre-dnat"),
        ["ct state new jump firewall-check"]
    );
    assert_eq!(
        chain_rules(&rs, "filter-input"),
        [
            "ct state new jump nodeport-endpoints-check",
            "ct state new jump service-endpoints-check"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "filter-forward"),
        [
            "ct state new jump service-endpoints-check",
            "ct state new jump cluster-ips-check"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "filter-output"),
        [
            "ct state new jump service-endpoints-check",
            "ct state new jump cluster-ips-check"
        ]
    );
    assert_eq!(chain_rules(&rs, "nat-prerouting"), ["jump services"]);
    assert_eq!(chain_rules(&rs, "nat-output"), ["jump services"]);
    assert_eq!(chain_rules(&rs, "nat-postrouting"), ["jump masquerading"]);
    assert_eq!(
        chain_rules(&rs, "cluster-ips-check"),
        [
            "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"",
            "ip daddr 172.30.0.0/16 drop comment \"Drop traffic to unallocated ClusterIPs\""
        ]
    );
    assert_eq!(
        chain_rules(&rs, "mark-for-masquerade"),
        ["meta mark set meta mark | 0x00004000"]
    );
    assert_eq!(
        chain_rules(&rs, "masquerading"),
        [
            "meta mark & 0x00004000 == 0x00000000 return",
            "meta mark set meta mark ^ 0x00004000",
            "masquerade fully-random"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "services"),
        [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "nodeport-endpoints-check"),
        ["ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"]
    );
    assert_eq!(elements(&rs, "nodeport-ips"), ["192.168.0.2"]);
    let t = &rs.tables[0];
    let base: Vec<(&str, i32)> = t
        .chains
        .iter()
        .filter_map(|c| c.base.map(|b| (c.name.as_str(), b.priority)))
        .collect();
    assert_eq!(
        base,
        [
            ("filter-prerouting-pre-dnat", -110),
            ("filter-output-pre-dnat", -110),
            ("filter-input", 0),
            ("filter-forward", 0),
            ("filter-output", 0),
            ("nat-prerouting", -100),
            ("nat-output", -100),
            ("nat-postrouting", 100)
        ]
    );
}

#[test]
fn service_chains_and_map_elements_as_upstream() {
    let rs = overall();
    assert_eq!(
        chain_rules(&rs, "service-ULMVA6XW-ns1/svc1/tcp/p80"),
        [
            "ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
        [
            "ip saddr 10.180.0.1 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.180.0.1:80"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "external-42NFTM6N-ns2/svc2/tcp/p80"),
        [
            "ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment \"short-circuit pod traffic\"",
            "fib saddr type local jump mark-for-masquerade comment \"masquerade local traffic\"",
            "fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment \"short-circuit local traffic\""
        ]
    );
    assert_eq!(
        chain_rules(&rs, "external-4AT6LBPK-ns3/svc3/tcp/p80"),
        [
            "jump mark-for-masquerade",
            "goto service-4AT6LBPK-ns3/svc3/tcp/p80"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "service-LAUZTJTB-ns4/svc4/tcp/p80"),
        [
            "ip daddr 172.30.0.44 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80, 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "service-HVFWP5L3-ns5/svc5/tcp/p80"),
        [
            "ip daddr 172.30.0.45 ip saddr != 10.0.0.0/8 jump mark-for-masquerade",
            "ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80",
            "numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"),
        [
            "ip saddr 10.180.0.3 jump mark-for-masquerade",
            "update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }",
            "meta l4proto tcp dnat to 10.180.0.3:80"
        ]
    );
    assert_eq!(
        chain_rules(&rs, "firewall-HVFWP5L3-ns5/svc5/tcp/p80"),
        ["ip saddr != 203.0.113.0/25 drop"]
    );
    let aff = rs.tables[0]
        .set("affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80")
        .unwrap();
    assert_eq!(aff.timeout, Some(10800));
    assert_eq!(aff.flags, ["dynamic", "timeout"]);
    assert_eq!(
        elements(&rs, "cluster-ips"),
        sorted(&[
            "172.30.0.41",
            "172.30.0.42",
            "172.30.0.43",
            "172.30.0.44",
            "172.30.0.45",
            "172.30.0.46"
        ])
    );
    assert_eq!(
        elements(&rs, "service-ips"),
        sorted(&[
            "172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80",
            "172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80",
            "192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80",
            "1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80",
            "172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80",
            "172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80",
            "192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80",
            "172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80",
            "5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80",
        ])
    );
    assert_eq!(
        elements(&rs, "service-nodeports"),
        sorted(&[
            "tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80",
            "tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80",
            "tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80",
        ])
    );
    assert_eq!(
        elements(&rs, "no-endpoint-services"),
        sorted(&[
            "1.2.3.4 . tcp . 80 comment \"ns2/svc2:p80\" : drop",
            "192.168.99.22 . tcp . 80 comment \"ns2/svc2:p80\" : drop",
            "172.30.0.46 . tcp . 80 comment \"ns6/svc6:p80\" : goto reject-chain",
        ])
    );
    assert_eq!(
        elements(&rs, "no-endpoint-nodeports"),
        ["tcp . 3001 comment \"ns2/svc2:p80\" : drop"]
    );
    assert_eq!(
        elements(&rs, "firewall-ips"),
        ["5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80"]
    );
    // No chain for svc6 (no endpoints), no local- chain for svc2 (no
    // local endpoints).
    assert!(!rs.tables[0]
        .chains
        .iter()
        .any(|c| c.name.contains("ns6/svc6")));
    assert!(!rs.tables[0]
        .chains
        .iter()
        .any(|c| c.name.starts_with("local-")));
}

#[test]
fn nodeport_addresses_default_to_the_primary_address() {
    let node = NodeInfo {
        name: "n".into(),
        ip: "192.168.0.2".parse().unwrap(),
        pod_cidr: None,
        zone: None,
        addresses: vec![
            "10.244.0.1".parse().unwrap(),
            "192.168.0.2".parse().unwrap(),
        ],
    };
    let cfg = ProxyConfig::default();
    assert_eq!(nodeport_ips(&cfg, &node), Some(vec![node.ip]));
    let all = ProxyConfig {
        node_port_addresses: vec!["0.0.0.0/0".parse().unwrap()],
        ..ProxyConfig::default()
    };
    assert_eq!(nodeport_ips(&all, &node), None);
    let lo = ProxyConfig {
        node_port_addresses: vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ],
        ..ProxyConfig::default()
    };
    let mut n2 = node.clone();
    n2.addresses.push("127.0.0.1".parse().unwrap());
    assert_eq!(
        nodeport_ips(&lo, &n2),
        Some(vec!["10.244.0.1".parse().unwrap()])
    );
}
