//! Loading, validation and derivation, against fixtures and inline text.

use super::*;
use std::path::Path;

fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/scenario")
        .join(name)
}

const BASE: &str = "scenario: t
cluster:
  clusterCIDR: 10.244.0.0/16
  serviceCIDR: 10.96.0.0/12
nodes:
  - { name: node-a, address: 192.168.10.11, podCIDR: 10.244.1.0/24 }
  - { name: node-b, address: 192.168.10.12, podCIDR: 10.244.2.0/24 }
";

fn load(extra: &str) -> Result<Loaded, ScenarioError> {
    Scenario::from_str(&format!("{BASE}{extra}"), Path::new("t.yaml"))
}

fn problems(extra: &str) -> Vec<Problem> {
    match load(extra) {
        Err(ScenarioError::Invalid { problems, .. }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_pasted_kubectl_list_and_kube_proxy_configuration_load() {
    let l = Scenario::load(&data("pasted.yaml")).unwrap();
    let s = &l.scenario;
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(s.nodes[0].zone.as_deref(), Some("zone-a"));
    assert_eq!(s.pods.len(), 2);
    let old = s.pod("api-old").unwrap();
    assert!(old.terminating && old.ready);
    assert_eq!(s.kube_proxy.detect_local_mode, DetectLocalMode::NodeCidr);
    assert!(s
        .kube_proxy
        .ignored
        .contains(&"clientConnection".to_string()));
    // The Deployment was skipped with a warning, not an error.
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("skipping Deployment api")));
    // The derived slice resolved the named port; the terminating pod is
    // there with ready=false, serving=true.
    assert_eq!(s.slices.len(), 1);
    let sl = &s.slices[0];
    assert_eq!(sl.ports.as_ref().unwrap()[0].port, Some(9000));
    let old_ep = sl
        .endpoints
        .iter()
        .find(|e| e.addresses[0] == "10.244.1.8")
        .unwrap();
    let c = old_ep.conditions.as_ref().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(old_ep.zone.as_deref(), Some("zone-a"));
    let c = crate::compile::compile(s, &Default::default()).unwrap();
    let r = crate::check::run_check(&c, &s.checks[0]).unwrap();
    assert!(r.passed, "{:?}", r.failures);
}

#[test]
fn include_cycles_are_errors() {
    let e = Scenario::load(&data("cycle.yaml")).unwrap_err();
    assert!(e.to_string().contains("include cycle"), "{e}");
}

#[test]
fn every_problem_is_reported_with_its_place() {
    let ps = problems(
        "pods:
  - { name: p1, node: node-c }
  - { name: p2, node: node-a, ip: 10.244.2.9 }
  - { name: p3, node: node-a, ip: 10.244.1.9 }
  - { name: p4, node: node-a, ip: 10.244.1.9 }
objects:
  - apiVersion: v1
    kind: Service
    metadata: { name: s }
    spec: { type: NodePort, clusterIP: 10.100.0.1, ports: [{ port: 80, nodePort: 80 }] }
  - apiVersion: v2
    kind: Service
    metadata: { name: s2 }
checks:
  - { name: c, from: nobody, to: 'x', expect: {} }
  - { name: d, from: p4, to: 's:8080', expect: {} }
",
    );
    let text: Vec<String> = ps.iter().map(|p| p.to_string()).collect();
    let all = text.join("\n");
    for want in [
        "9:23: pod p1: unknown node \"node-c\"",
        "10:35: pod p2: ip 10.244.2.9 is outside its node node-a's podCIDR 10.244.1.0/24",
        "12:13: duplicate pod IP \"10.244.1.9\"",
        "nodePort 80 is outside the node port range 30000-32767",
        "apiVersion \"v2\" is not supported (expected v1)",
        "from: \"nobody\" is not a pod, node or external",
        "to: expected NAME:PORT, IP:PORT, service/NS/NAME:PORT",
        "23:30: to: service default/s has no port 8080 (its ports: 80/TCP)",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn allocation_is_deterministic() {
    let l = load(
        "pods:
  - { name: a, node: node-a, ip: 10.244.1.2 }
  - { name: b, node: node-a }
  - { name: h, node: node-b, hostNetwork: true }
objects:
  - { apiVersion: v1, kind: Service, metadata: { name: z }, spec: { type: NodePort, ports: [{ port: 80 }] } }
  - { apiVersion: v1, kind: Service, metadata: { name: yy }, spec: { ports: [{ port: 80 }] } }
",
    )
    .unwrap();
    let s = l.scenario;
    assert_eq!(s.pod("b").unwrap().ip.to_string(), "10.244.1.3");
    assert_eq!(s.pod("h").unwrap().ip.to_string(), "192.168.10.12");
    let ip = |n: &str| {
        s.service("default", n)
            .unwrap()
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .clone()
            .unwrap()
    };
    assert_eq!(ip("yy"), "10.96.0.10");
    assert_eq!(ip("z"), "10.96.0.11");
    let np = s
        .service("default", "z")
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()[0]
        .node_port;
    assert_eq!(np, Some(30000));
}

#[test]
fn selectors_matching_nothing_warn() {
    let l = load("objects:\n  - { apiVersion: v1, kind: Service, metadata: { name: s }, spec: { selector: { app: x }, ports: [{ port: 80 }] } }\n").unwrap();
    assert!(l
        .warnings
        .iter()
        .any(|w| w.message.contains("selector matches no pod")));
}

#[test]
fn publish_not_ready_addresses_makes_unready_pods_ready() {
    let l = load(
        "pods:
  - { name: a, node: node-a, labels: { app: x }, ready: false }
objects:
  - { apiVersion: v1, kind: Service, metadata: { name: s }, spec: { selector: { app: x }, publishNotReadyAddresses: true, ports: [{ port: 80 }] } }
  - { apiVersion: v1, kind: Service, metadata: { name: t }, spec: { selector: { app: x }, ports: [{ port: 80 }] } }
",
    )
    .unwrap();
    let cond = |svc: &str| {
        let sl = l
            .scenario
            .slices
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(&format!("{svc}-1")))
            .unwrap();
        sl.endpoints[0].conditions.clone().unwrap()
    };
    assert_eq!(cond("s").ready, Some(true));
    assert_eq!(cond("t").ready, Some(false));
}

#[test]
fn flow_targets_parse() {
    use crate::wire::{PROTO_SCTP, PROTO_UDP};
    assert_eq!(
        FlowTarget::parse("node-a:30080/udp").unwrap(),
        FlowTarget::Named {
            name: "node-a".into(),
            port: PortRef::Number(30080),
            proto: Some(PROTO_UDP)
        }
    );
    assert_eq!(
        FlowTarget::parse("service/kube-system/dns:53/udp").unwrap(),
        FlowTarget::Service {
            namespace: "kube-system".into(),
            name: "dns".into(),
            port: PortRef::Number(53),
            entry: Entry::ClusterIp,
            proto: Some(PROTO_UDP)
        }
    );
    assert_eq!(
        FlowTarget::parse("service/shop/web:http").unwrap(),
        FlowTarget::Service {
            namespace: "shop".into(),
            name: "web".into(),
            port: PortRef::Name("http".into()),
            entry: Entry::ClusterIp,
            proto: None
        }
    );
    assert_eq!(
        FlowTarget::parse("nodeport/shop/web:http@node-b/sctp").unwrap(),
        FlowTarget::Service {
            namespace: "shop".into(),
            name: "web".into(),
            port: PortRef::Name("http".into()),
            entry: Entry::NodePort {
                node: "node-b".into()
            },
            proto: Some(PROTO_SCTP)
        }
    );
    assert_eq!(
        FlowTarget::parse("loadbalancer/shop/web:443").unwrap(),
        FlowTarget::Service {
            namespace: "shop".into(),
            name: "web".into(),
            port: PortRef::Number(443),
            entry: Entry::LoadBalancer,
            proto: None
        }
    );
    assert!(matches!(
        FlowTarget::parse("10.0.0.1:80").unwrap(),
        FlowTarget::Addr { proto: None, .. }
    ));
    assert!(FlowTarget::parse("web").is_err());
    assert!(FlowTarget::parse("web:0").is_err());
    assert!(FlowTarget::parse("10.0.0.1:http").is_err());
    assert!(FlowTarget::parse("nodeport/shop/web:http").is_err());
    assert!(FlowTarget::parse("service/web:http").is_err());
    assert!(FlowTarget::parse("web:Http").is_err());
}

#[test]
fn targets_resolve_to_the_services_own_ports_and_addresses() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let s = Scenario::load(&root.join("scenarios/loadbalancer-source-ranges.yaml"))
        .unwrap()
        .scenario;
    let t = s.targets();
    let at = |to: &str| {
        t.resolve(&FlowTarget::parse(to).unwrap())
            .map(|r| (r.addr.to_string(), r.port, r.proto))
    };
    let tcp = crate::wire::PROTO_TCP;
    assert_eq!(
        at("nodeport/default/web:http@node-b"),
        Ok(("192.168.10.12".into(), 30082, tcp))
    );
    assert_eq!(
        at("loadbalancer/default/web:80"),
        Ok(("198.51.100.20".into(), 80, tcp))
    );
    assert_eq!(at("web:http").map(|r| r.1), Ok(80));
    assert_eq!(
        at("service/default/web:8080"),
        Err("service default/web has no port 8080 (its ports: http (80/TCP))".into())
    );
    assert_eq!(
        at("nodeport/default/web:http@node-z"),
        Err("no node \"node-z\" (nodes: node-a, node-b)".into())
    );
    assert!(at("node-a:http").unwrap_err().contains("is a node"));
}

#[test]
fn the_rendered_error_shows_the_source() {
    let e = Scenario::from_str(
        "scenario: t\ncluster:\n  clusterCIDR: 10.244.0.0/16\n  serviceCIDR: 10.96.0.0/12\nnodes: 3\n",
        Path::new("t.yaml"),
    )
    .unwrap_err();
    insta::with_settings!({snapshot_path => "../../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
        insta::assert_snapshot!("scenario_error_rendering", e.render());
    });
}

/// Every problem of a scenario as `FILE:LINE:COL: message` lines, FILE
/// only for included files.
fn problem_lines(e: ScenarioError) -> String {
    match e {
        ScenarioError::Invalid { problems, .. } => problems
            .iter()
            .map(|p| match &p.file {
                Some(f) => format!("{}:{p}", f.file_name().unwrap().to_string_lossy()),
                None => p.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        ScenarioError::Syntax {
            line,
            column,
            message,
            ..
        } => format!("{line}:{column}: {message}"),
        other => panic!("expected problems, got {other:?}"),
    }
}

const WEB: &str = "objects:
  - apiVersion: v1
    kind: Service
    metadata: { name: web }
    spec:
      type: NodePort
      selector: { app: web }
      externalTrafficPolicy: Local
      ports:
        - { name: http, port: 80, targetPort: 8080, protocol: TCP }
";

fn web_with(from: &str, to: &str) -> String {
    assert!(WEB.contains(from), "{from}");
    problem_lines(load(&WEB.replace(from, to)).unwrap_err())
}

#[test]
fn typos_inside_kubernetes_objects_are_errors_at_the_field() {
    // The field path, the line and column of that very field, and the
    // field the writer probably meant.
    let e = web_with("externalTrafficPolicy", "externalTraficPolicy");
    assert_eq!(e, "15:7: Service web: unknown field \"spec.externalTraficPolicy\"; did you mean \"externalTrafficPolicy\"?");
    let e = web_with("targetPort", "targetport");
    assert!(e.contains("17:35: Service web: unknown field \"spec.ports[0].targetport\"; did you mean \"targetPort\"?"), "{e}");
    let e = web_with("selector", "selectr");
    assert!(
        e.contains("14:7: Service web: unknown field \"spec.selectr\"; did you mean \"selector\"?"),
        "{e}"
    );
    let e = web_with(
        "metadata: { name: web }",
        "metadata: { name: web, lables: { a: b } }",
    );
    assert!(
        e.contains(
            "11:28: Service web: unknown field \"metadata.lables\"; did you mean \"labels\"?"
        ),
        "{e}"
    );
    // No suggestion when nothing is close.
    let e = web_with("selector", "frobnicate");
    assert!(e.ends_with("unknown field \"spec.frobnicate\""), "{e}");
}

#[test]
fn an_endpoint_slice_condition_typo_is_an_error() {
    let e = problem_lines(
        load(
            "objects:
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    endpoints:
      - addresses: [10.244.1.5]
        condition: { ready: true }
",
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("15:9: EndpointSlice web-1: unknown field \"endpoints[0].condition\"; did you mean \"conditions\"?"),
        "{e}"
    );
}

#[test]
fn duplicated_fields_are_errors_with_their_path() {
    let e = web_with(
        "      type: NodePort\n",
        "      type: NodePort\n      type: ClusterIP\n",
    );
    assert_eq!(e, "14:7: Service: duplicate field \"spec.type\"");
}

#[test]
fn a_value_of_the_wrong_type_names_its_field() {
    let e = web_with("port: 80", "port: abc");
    assert!(
        e.starts_with("17:31: Service: \"spec.ports[0].port\": invalid"),
        "{e}"
    );
}

#[test]
fn objects_with_kind_after_other_fields_are_as_strict() {
    let e = problem_lines(
        load(
            "objects:
  - metadata: { name: web }
    spec: { type: ClusterIP, ports: [{ port: 80, targetport: 8080 }] }
    kind: Service
    apiVersion: v1
",
        )
        .unwrap_err(),
    );
    assert!(
        e.contains("10:50: Service web: unknown field \"spec.ports[0].targetport\""),
        "{e}"
    );
}

#[test]
fn typos_in_included_lists_point_into_the_included_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("list.yaml"),
        "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: { name: web }
  spec:
    ports: [{ port: 80 }]
    externalTraficPolicy: Local
",
    )
    .unwrap();
    let scenario = dir.path().join("s.yaml");
    std::fs::write(&scenario, format!("{BASE}include: [list.yaml]\n")).unwrap();
    let e = problem_lines(Scenario::load(&scenario).unwrap_err());
    assert!(
        e.contains("list.yaml:9:5: Service web: unknown field \"spec.externalTraficPolicy\""),
        "{e}"
    );
}

#[test]
fn invalid_values_get_the_api_servers_words() {
    for (from, to, want) in [
        ("port: 80", "port: -80", "17:25: Service web: spec.ports[0].port: Invalid value: -80: must be between 1 and 65535, inclusive"),
        ("port: 80", "port: 0", "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("targetPort: 8080", "targetPort: 70000", "spec.ports[0].targetPort: Invalid value: 70000"),
        ("type: NodePort", "type: Nodeport", "13:7: Service web: spec.type: Unsupported value: \"Nodeport\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ("externalTrafficPolicy: Local", "externalTrafficPolicy: local", "spec.externalTrafficPolicy: Unsupported value: \"local\": supported values: \"Cluster\", \"Local\""),
        ("protocol: TCP", "protocol: tcp", "spec.ports[0].protocol: Unsupported value: \"tcp\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
        ("type: NodePort", "type: ClusterIP", "spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"),
    ] {
        let e = web_with(from, to);
        assert!(e.contains(want), "{to}: missing {want:?} in:\n{e}");
    }
}

#[test]
fn overlapping_networks_are_errors() {
    let text = BASE.replace("serviceCIDR: 10.96.0.0/12", "serviceCIDR: 10.0.0.0/8");
    let e = problem_lines(Scenario::from_str(&text, Path::new("t.yaml")).unwrap_err());
    assert!(
        e.contains("4:16: serviceCIDR 10.0.0.0/8 contains clusterCIDR 10.244.0.0/16"),
        "{e}"
    );
    let e = problems("externals:\n  - { name: x, address: 10.244.9.9 }\n");
    assert!(
        e.iter().any(|p| p
            .message
            .contains("address 10.244.9.9 of external x is inside clusterCIDR")),
        "{e:?}"
    );
}

#[test]
fn container_port_protocols_are_exact() {
    let e = problems(
        "pods:\n  - { name: a, node: node-a, ports: [{ containerPort: 80, protocol: tcp }] }\n",
    );
    assert!(e[0].message.contains("Unsupported value: \"tcp\""), "{e:?}");
}

#[test]
fn pod_addresses_must_be_free_hosts_of_the_node() {
    let e = problems(
        "pods:
  - { name: a, node: node-a, ip: 10.244.1.1 }
  - { name: b, node: node-a, ip: 10.244.1.255 }
objects:
  - apiVersion: v1
    kind: Pod
    metadata: { name: c }
    spec: { nodeName: node-a, containers: [{ name: x }] }
    status: { podIP: 10.244.2.7, conditions: [{ type: Ready, status: \"True\" }] }
",
    );
    let all: Vec<String> = e.iter().map(|p| p.to_string()).collect();
    let all = all.join("\n");
    assert!(
        all.contains("pod a: ip 10.244.1.1 is node node-a's own cni0 address"),
        "{all}"
    );
    assert!(
        all.contains("pod b: ip 10.244.1.255 is the network or broadcast address"),
        "{all}"
    );
    assert!(
        all.contains("16:15: pod c: ip 10.244.2.7 is outside its node node-a's podCIDR"),
        "{all}"
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    const SCENARIO: &str = include_str!("../../../scenarios/nodeport-local-policy.yaml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn mutated_scenarios_never_panic(pos in 0usize..3000, junk in "[ -~\n]{0,10}", cut in 0usize..3000) {
            let mut text = SCENARIO.to_string();
            let p = (0..=pos.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.insert_str(p, &junk);
            let c = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            if let Ok(l) = Scenario::from_str(&text[..c], Path::new("m.yaml")) {
                let _ = crate::compile::compile(&l.scenario, &Default::default());
            }
            let _ = Scenario::from_str(&text, Path::new("m.yaml")).map_err(|e| e.render());
        }
    }
}

#[test]
fn kube_proxy_conntrack_settings_and_an_empty_cluster_cidr_are_read() {
    let l = load(
        "kubeProxy:
  clusterCIDR: \"\"
  conntrack: { maxPerCore: 0, tcpEstablishedTimeout: 2h0m0s, udpTimeout: 30s }
",
    )
    .unwrap();
    let kp = &l.scenario.kube_proxy;
    assert_eq!(kp.cluster_cidr, None);
    assert_eq!(kp.conntrack.max_per_core, 0);
    assert_eq!(kp.conntrack.min, 131072);
    assert_eq!(kp.conntrack.tcp_established_timeout, 7200);
    assert_eq!(kp.conntrack.tcp_close_wait_timeout, 3600);
    assert_eq!(kp.conntrack.udp_timeout, 30);
    let p = problems(
        "kubeProxy:
  conntrack: { tcpCloseWaitTimeout: soon, min: -1 }
",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].message.contains("conntrack.tcpCloseWaitTimeout"));
    assert_eq!((p[0].loc.line, p[0].loc.column), (9, 37));
    assert!(p[1].message.contains("conntrack.min"));
}

#[test]
fn external_routes_go_via_a_node_and_primary_stands_alone() {
    let l = load(
        "externals:
  - name: router
    address: 203.0.113.1
    routes: [{ to: 10.96.0.0/12, via: node-b }]
",
    )
    .unwrap();
    assert_eq!(
        l.scenario.externals[0].routes,
        vec![(
            "10.96.0.0/12".parse().unwrap(),
            "192.168.10.12".parse().unwrap()
        )]
    );
    let p = problems(
        "externals:
  - name: router
    address: 203.0.113.1
    routes: [{ to: 10.96.0.0/12, via: node-z }]
kubeProxy:
  nodePortAddresses: [primary, 10.0.0.0/8]
",
    );
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0]
        .message
        .contains("routes.via: \"node-z\" is not a node"));
    assert_eq!(p[0].loc.line, 11);
    assert!(p[1].message.contains("can't use both 'primary' and CIDRs"));
}

#[test]
fn node_ports_and_health_check_ports_share_one_pool() {
    let svc = |name: &str, extra: &str| {
        format!(
            "  - apiVersion: v1
    kind: Service
    metadata: {{ name: {name} }}
    spec:
      type: LoadBalancer
      externalTrafficPolicy: Local
      ports: [{{ port: 80 }}]
{extra}"
        )
    };
    // A health-check port of 30000 and no node port: the node port goes
    // around it; a service without either gets both.
    let l = load(&format!(
        "objects:\n{}{}",
        svc("a", "      healthCheckNodePort: 30000\n"),
        svc("b", "")
    ))
    .unwrap();
    let spec = |i: usize| l.scenario.services[i].spec.clone().unwrap();
    assert_eq!(spec(0).health_check_node_port, Some(30000));
    assert_eq!(spec(0).ports.unwrap()[0].node_port, Some(30001));
    assert_eq!(spec(1).ports.unwrap()[0].node_port, Some(30002));
    assert_eq!(spec(1).health_check_node_port, Some(30003));
    // Asking twice for one port is refused, naming the holder.
    let p = problems(&format!(
        "objects:\n{}{}",
        svc("a", "      healthCheckNodePort: 30000\n"),
        svc("b", "      healthCheckNodePort: 30000\n")
    ));
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].message,
        "service default/b: spec.healthCheckNodePort 30000 is already allocated to default/a (spec.healthCheckNodePort)"
    );
    // At the field itself: b's healthCheckNodePort.
    assert_eq!((p[0].loc.line, p[0].loc.column), (24, 7));
    let p = problems(&format!(
        "objects:\n{}",
        svc(
            "a",
            "      healthCheckNodePort: 30080\n      allocateLoadBalancerNodePorts: true\n"
        )
        .replace("{ port: 80 }", "{ port: 80, nodePort: 30080 }")
    ));
    assert!(
        p[0].message.contains("spec.healthCheckNodePort 30080 is already allocated to default/a (spec.ports[0].nodePort)"),
        "{p:?}"
    );
}

#[test]
fn allocate_load_balancer_node_ports_false_allocates_none() {
    let l = load(
        "objects:
  - apiVersion: v1
    kind: Service
    metadata: { name: a }
    spec:
      type: LoadBalancer
      allocateLoadBalancerNodePorts: false
      ports: [{ name: http, port: 80 }, { name: https, port: 81, nodePort: 30005 }]
",
    )
    .unwrap();
    let ports = l.scenario.services[0].spec.clone().unwrap().ports.unwrap();
    assert_eq!(ports[0].node_port, None);
    assert_eq!(ports[1].node_port, Some(30005));
}

#[test]
fn a_pod_may_not_take_its_bridge_network_or_broadcast_address() {
    let p = problems(
        "pods:
  - { name: a, node: node-a, ip: 10.244.1.1 }
  - { name: b, node: node-a, ip: 10.244.1.0 }
  - { name: c, node: node-b, ip: 10.244.2.255 }
",
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert_eq!(
        p[0].message,
        "pod a: ip 10.244.1.1 is node node-a's own cni0 address (the first of its podCIDR 10.244.1.0/24)"
    );
    assert_eq!((p[0].loc.line, p[0].loc.column), (9, 34));
    assert!(p[1].message.contains("network or broadcast address"));
    assert!(p[2].message.contains("network or broadcast address"));
}
