//! kube-proxy's `/metrics`, predicted for a node after one full sync on a
//! clean node: the gauges that follow from the rules alone, counted where
//! kube-proxy v1.34 counts them (`pkg/proxy/iptables/proxier.go`,
//! `syncProxyRules`) and named as `pkg/proxy/metrics` registers them
//! (subsystem `kubeproxy`, `[ALPHA]` help prefix, the `ip_family` label
//! added in v1.33):
//!
//! * `sync_proxy_rules_iptables_total{table}` and
//!   `sync_proxy_rules_iptables_last{table}`: the rule lines of the
//!   restore's filter and nat parts (on a first full sync no chain is
//!   stale and none is skipped, so both are equal);
//! * `sync_proxy_rules_no_local_endpoints_total{traffic_policy}`: Services
//!   with endpoints somewhere, a Local policy, and none on this node.
//!
//! Durations, timestamps and change counters depend on the node's history
//! and clock, not on the rules; they are not predicted. Series come in the
//! order the Prometheus client writes them: families by name, series by
//! label values.

use super::ruleset::SyncPayload;
use crate::proxier::model::categorize;
use crate::proxier::ProxyModel;
use serde::Serialize;
use std::fmt::Write;

/// kube-proxy's label for an IPv4 proxier (`v1.IPv4Protocol`).
const IP_FAMILY: &str = "IPv4";

/// Services counted by `sync_proxy_rules_no_local_endpoints_total`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NoLocalEndpoints {
    pub internal: usize,
    pub external: usize,
}

/// Count as the proxier does: only services with usable endpoints
/// somewhere count, once per policy that is Local and finds none here.
pub fn no_local_endpoints(model: &ProxyModel, node: &str, zone: Option<&str>) -> NoLocalEndpoints {
    let mut n = NoLocalEndpoints::default();
    for (svc, eps) in &model.ports {
        let cat = categorize(svc, eps, node, zone);
        if !cat.has_any {
            continue;
        }
        if svc.internal_policy_local && cat.local.is_empty() {
            n.internal += 1;
        }
        if svc.external_policy_local && cat.local.is_empty() {
            n.external += 1;
        }
    }
    n
}

/// The node's predicted `/metrics` lines, Prometheus text format.
pub fn prometheus_text(payload: &SyncPayload, no_local: &NoLocalEndpoints) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, help: &str| {
        let _ = writeln!(out, "# HELP kubeproxy_{name} [ALPHA] {help}");
        let _ = writeln!(out, "# TYPE kubeproxy_{name} gauge");
    };
    let tables = [("filter", payload.filter_rules), ("nat", payload.nat_rules)];
    for (name, help) in [
        (
            "sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync",
        ),
        (
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
        ),
    ] {
        family(&mut out, name, help);
        for (table, rules) in tables {
            let _ = writeln!(
                out,
                "kubeproxy_{name}{{ip_family=\"{IP_FAMILY}\",table=\"{table}\"}} {rules}"
            );
        }
    }
    let name = "sync_proxy_rules_no_local_endpoints_total";
    family(
        &mut out,
        name,
        "Number of services with a Local traffic policy and no endpoints",
    );
    for (policy, n) in [
        ("external", no_local.external),
        ("internal", no_local.internal),
    ] {
        let _ = writeln!(
            out,
            "kubeproxy_{name}{{ip_family=\"{IP_FAMILY}\",traffic_policy=\"{policy}\"}} {n}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_prometheus_exposition_in_client_order() {
        let p = SyncPayload {
            filter_rules: 4,
            nat_rules: 21,
            ..Default::default()
        };
        let t = prometheus_text(
            &p,
            &NoLocalEndpoints {
                internal: 0,
                external: 2,
            },
        );
        let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "kubeproxy_sync_proxy_rules_iptables_last{ip_family=\"IPv4\",table=\"filter\"} 4",
                "kubeproxy_sync_proxy_rules_iptables_last{ip_family=\"IPv4\",table=\"nat\"} 21",
                "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv4\",table=\"filter\"} 4",
                "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv4\",table=\"nat\"} 21",
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"} 2",
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"} 0",
            ]
        );
        assert!(t.contains("# TYPE kubeproxy_sync_proxy_rules_iptables_total gauge\n"));
    }
}
