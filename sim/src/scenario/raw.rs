//! The scenario file as written: serde types mirroring the contract
//! (`scenario-format.md`) with source locations on every value a later
//! check may point at. Unknown keys are errors everywhere.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawScenario {
    pub scenario: S<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub cluster: RawCluster,
    #[serde(default)]
    pub kube_proxy: Option<S<RawKubeProxy>>,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub externals: Vec<RawExternal>,
    #[serde(default)]
    pub pods: Vec<RawPod>,
    #[serde(default)]
    pub objects: Vec<S<super::kube::Object>>,
    #[serde(default)]
    pub include: Vec<S<String>>,
    #[serde(default)]
    pub checks: Vec<RawCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCluster {
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: S<String>,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: S<String>,
    #[serde(default)]
    pub network: Option<S<String>>,
    #[serde(default)]
    pub load_balancer: Option<RawLoadBalancer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLoadBalancer {
    #[serde(default)]
    pub delivery: Option<S<String>>,
    #[serde(default)]
    pub nodes: Option<S<String>>,
    #[serde(default)]
    pub address: Option<S<String>>,
}

/// KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) field names.
/// Fields kpsim models are typed; the others are accepted as written and
/// listed as ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubeProxy {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// `kubeProxy: { include: path }`: read the configuration from a file.
    #[serde(default)]
    pub include: Option<S<String>>,
    #[serde(default)]
    pub mode: Option<S<String>>,
    #[serde(default)]
    pub detect_local_mode: Option<S<String>>,
    #[serde(default)]
    pub detect_local: Option<RawDetectLocal>,
    #[serde(default, rename = "clusterCIDR")]
    pub cluster_cidr: Option<S<String>>,
    #[serde(default)]
    pub masquerade_all: Option<bool>,
    #[serde(default)]
    pub iptables: Option<RawIptables>,
    #[serde(default)]
    pub node_port_addresses: Option<Vec<S<String>>>,
    #[serde(default)]
    pub conntrack: Option<RawConntrack>,
    #[serde(default)]
    pub linux: Option<RawLinux>,
    #[serde(default)]
    pub port_range: Option<S<String>>,
    // Real fields kpsim does not model.
    #[serde(default)]
    pub bind_address: Option<serde_json::Value>,
    #[serde(default)]
    pub bind_address_hard_fail: Option<serde_json::Value>,
    #[serde(default)]
    pub client_connection: Option<serde_json::Value>,
    #[serde(default)]
    pub config_sync_period: Option<serde_json::Value>,
    #[serde(default)]
    pub enable_profiling: Option<serde_json::Value>,
    #[serde(default)]
    pub feature_gates: Option<serde_json::Value>,
    #[serde(default)]
    pub healthz_bind_address: Option<S<String>>,
    #[serde(default)]
    pub hostname_override: Option<serde_json::Value>,
    #[serde(default)]
    pub ipvs: Option<serde_json::Value>,
    #[serde(default)]
    pub nftables: Option<RawNftables>,
    #[serde(default)]
    pub logging: Option<serde_json::Value>,
    #[serde(default)]
    pub metrics_bind_address: Option<serde_json::Value>,
    #[serde(default)]
    pub oom_score_adj: Option<serde_json::Value>,
    #[serde(default)]
    pub show_hidden_metrics_for_version: Option<serde_json::Value>,
    #[serde(default)]
    pub udp_idle_timeout: Option<serde_json::Value>,
    #[serde(default)]
    pub winkernel: Option<serde_json::Value>,
    #[serde(default)]
    pub windows_run_as_service: Option<serde_json::Value>,
    #[serde(default)]
    pub sync_period: Option<serde_json::Value>,
    #[serde(default)]
    pub min_sync_period: Option<serde_json::Value>,
}

impl RawKubeProxy {
    /// Names of the real fields that were set but are not modelled.
    pub fn ignored(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut note = |set: bool, name: &'static str| {
            if set {
                v.push(name);
            }
        };
        note(self.bind_address.is_some(), "bindAddress");
        note(self.bind_address_hard_fail.is_some(), "bindAddressHardFail");
        note(self.client_connection.is_some(), "clientConnection");
        note(self.config_sync_period.is_some(), "configSyncPeriod");
        note(self.enable_profiling.is_some(), "enableProfiling");
        note(self.feature_gates.is_some(), "featureGates");
        note(self.hostname_override.is_some(), "hostnameOverride");
        note(self.ipvs.is_some(), "ipvs");
        note(self.logging.is_some(), "logging");
        note(self.metrics_bind_address.is_some(), "metricsBindAddress");
        note(self.oom_score_adj.is_some(), "oomScoreAdj");
        note(
            self.show_hidden_metrics_for_version.is_some(),
            "showHiddenMetricsForVersion",
        );
        note(self.udp_idle_timeout.is_some(), "udpIdleTimeout");
        note(self.winkernel.is_some(), "winkernel");
        note(self.windows_run_as_service.is_some(), "windowsRunAsService");
        note(self.sync_period.is_some(), "syncPeriod");
        note(self.min_sync_period.is_some(), "minSyncPeriod");
        if let Some(i) = &self.iptables {
            note(i.min_sync_period.is_some(), "iptables.minSyncPeriod");
            note(i.sync_period.is_some(), "iptables.syncPeriod");
        }
        if let Some(n) = &self.nftables {
            note(n.min_sync_period.is_some(), "nftables.minSyncPeriod");
            note(n.sync_period.is_some(), "nftables.syncPeriod");
        }
        if let Some(l) = &self.linux {
            note(l.oom_score_adj.is_some(), "linux.oomScoreAdj");
        }
        v
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawDetectLocal {
    #[serde(default)]
    pub bridge_interface: Option<String>,
    #[serde(default)]
    pub interface_name_prefix: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawIptables {
    #[serde(default)]
    pub masquerade_all: Option<bool>,
    #[serde(default)]
    pub masquerade_bit: Option<S<i64>>,
    #[serde(default)]
    pub localhost_node_ports: Option<bool>,
    #[serde(default)]
    pub min_sync_period: Option<serde_json::Value>,
    #[serde(default)]
    pub sync_period: Option<serde_json::Value>,
}

/// `nftables:` of KubeProxyConfiguration (nftables mode's own mark bit and
/// masquerade-all).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNftables {
    #[serde(default)]
    pub masquerade_all: Option<bool>,
    #[serde(default)]
    pub masquerade_bit: Option<S<i64>>,
    #[serde(default)]
    pub min_sync_period: Option<serde_json::Value>,
    #[serde(default)]
    pub sync_period: Option<serde_json::Value>,
}

/// `conntrack`: what kube-proxy writes into the node's conntrack
/// settings. Durations are Go durations (`24h0m0s`, `300s`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawConntrack {
    #[serde(default)]
    pub tcp_be_liberal: Option<bool>,
    #[serde(default)]
    pub max_per_core: Option<S<i64>>,
    #[serde(default)]
    pub min: Option<S<i64>>,
    #[serde(default)]
    pub tcp_close_wait_timeout: Option<S<String>>,
    #[serde(default)]
    pub tcp_established_timeout: Option<S<String>>,
    #[serde(default)]
    pub udp_stream_timeout: Option<S<String>>,
    #[serde(default)]
    pub udp_timeout: Option<S<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawLinux {
    #[serde(default)]
    pub masquerade_all: Option<bool>,
    #[serde(default)]
    pub conntrack: Option<RawConntrack>,
    #[serde(default)]
    pub oom_score_adj: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawNode {
    pub name: S<String>,
    pub address: S<String>,
    /// More addresses of the node (a second InternalIP, an ExternalIP),
    /// held by `eth0` beside `address`.
    #[serde(default)]
    pub extra_addresses: Vec<S<String>>,
    /// The node's CPU count (kube-proxy sizes the conntrack table by it).
    #[serde(default)]
    pub cpus: Option<S<i64>>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: S<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExternal {
    pub name: S<String>,
    pub address: S<String>,
    /// Routes beyond the node addresses (a router that learnt service
    /// addresses by BGP).
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `{to: PREFIX, via: NODE}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRoute {
    pub to: S<String>,
    pub via: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPod {
    pub name: S<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub node: S<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ip: Option<S<String>>,
    #[serde(default)]
    pub ready: Option<bool>,
    #[serde(default)]
    pub terminating: Option<bool>,
    #[serde(default)]
    pub host_network: Option<bool>,
    /// Container ports (`name`, `containerPort`, `protocol`), for named
    /// target ports and for which ports answer.
    #[serde(default)]
    pub ports: Vec<RawContainerPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawContainerPort {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: S<i64>,
    #[serde(default)]
    pub protocol: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawCheck {
    pub name: S<String>,
    pub from: S<String>,
    pub to: S<String>,
    /// The kube-proxy modes whose behaviour the check states (all when
    /// absent).
    #[serde(default)]
    pub modes: Option<S<Vec<String>>>,
    pub expect: RawExpect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExpect {
    #[serde(default)]
    pub delivered: Option<S<Vec<String>>>,
    #[serde(default)]
    pub source_seen: Option<S<String>>,
    #[serde(default)]
    pub reply: Option<S<String>>,
    #[serde(default)]
    pub verdict: Option<S<OneOrMore>>,
    #[serde(default)]
    pub probability: Option<BTreeMap<String, S<String>>>,
    /// The share of outcomes that reach no pod.
    #[serde(default)]
    pub dropped: Option<S<String>>,
    #[serde(default)]
    pub masqueraded: Option<bool>,
    #[serde(default)]
    pub snat: Option<bool>,
    #[serde(default)]
    pub decided_by: Option<S<String>>,
    #[serde(default)]
    pub http_status: Option<S<i64>>,
}

/// A word or a list of words (`verdict: dropped`, `verdict: [delivered, dropped]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMore {
    One(String),
    More(Vec<String>),
}

impl OneOrMore {
    pub fn items(&self) -> Vec<String> {
        match self {
            OneOrMore::One(s) => vec![s.clone()],
            OneOrMore::More(v) => v.clone(),
        }
    }
}
