//! A host's kernel settings (sysctls) that the model depends on, each with
//! who sets it and why, so that `kpsim config` can show them and the lab
//! can set them in the host's namespace.
//!
//! Only settings that change what a packet does, or that a user compares
//! with a live node, are listed. The routing-relevant ones are also read
//! back into the host's [`crate::routing::HostNet`] (`ip_forward`,
//! `route_localnet`).

use std::fmt;

/// `net.ipv4.ip_forward`.
pub const IP_FORWARD: &str = "net.ipv4.ip_forward";
/// `net.bridge.bridge-nf-call-iptables`: bridged IPv4 traffic passes the
/// iptables hooks (needs `br_netfilter`).
pub const BRIDGE_NF_CALL_IPTABLES: &str = "net.bridge.bridge-nf-call-iptables";
/// `net.ipv4.conf.all.route_localnet`: 127.0.0.0/8 may be routed off `lo`.
pub const ROUTE_LOCALNET: &str = "net.ipv4.conf.all.route_localnet";
/// `net.netfilter.nf_conntrack_max`: the size of the connection table. One
/// value for the whole machine: only the initial namespace may write it.
pub const NF_CONNTRACK_MAX: &str = "net.netfilter.nf_conntrack_max";
pub const NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED: &str =
    "net.netfilter.nf_conntrack_tcp_timeout_established";
pub const NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT: &str =
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait";
pub const NF_CONNTRACK_TCP_BE_LIBERAL: &str = "net.netfilter.nf_conntrack_tcp_be_liberal";
pub const NF_CONNTRACK_UDP_TIMEOUT: &str = "net.netfilter.nf_conntrack_udp_timeout";
pub const NF_CONNTRACK_UDP_TIMEOUT_STREAM: &str = "net.netfilter.nf_conntrack_udp_timeout_stream";

/// Who writes a setting on a real node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SetBy {
    /// The node's own set-up (the CNI's requirements, kubeadm's checks).
    Node,
    /// kube-proxy, when it starts.
    KubeProxy,
}

impl fmt::Display for SetBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetBy::Node => "node",
            SetBy::KubeProxy => "kube-proxy",
        })
    }
}

/// One setting.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Sysctl {
    /// The `sysctl` name (`net.ipv4.ip_forward`).
    pub key: String,
    /// The value as `sysctl -w` takes it; `None` when the scenario does
    /// not say enough to know it (`why` says what is missing).
    pub value: Option<String>,
    pub set_by: SetBy,
    /// Why it is set, in plain words.
    pub why: String,
}

impl Sysctl {
    pub fn new(key: &str, value: impl ToString, set_by: SetBy, why: impl Into<String>) -> Sysctl {
        Sysctl {
            key: key.to_string(),
            value: Some(value.to_string()),
            set_by,
            why: why.into(),
        }
    }

    /// Whether each network namespace has its own copy, so that the lab
    /// can set it in a node's namespace without touching the machine's.
    pub fn per_namespace(&self) -> bool {
        self.key != NF_CONNTRACK_MAX
    }

    /// Whether the setting is on (`1`).
    pub fn is_on(&self) -> bool {
        self.value.as_deref() == Some("1")
    }
}

/// The value of `key` among `settings` is `1`.
pub fn enabled(settings: &[Sysctl], key: &str) -> bool {
    settings.iter().any(|s| s.key == key && s.is_on())
}

/// What every node of the model sets for itself (`scenario-format.md`,
/// "Network model").
pub fn node_defaults() -> Vec<Sysctl> {
    vec![
        Sysctl::new(
            IP_FORWARD,
            1,
            SetBy::Node,
            "nodes route pod traffic between their interfaces",
        ),
        Sysctl::new(
            BRIDGE_NF_CALL_IPTABLES,
            1,
            SetBy::Node,
            "pod-to-pod traffic on cni0 passes iptables (br_netfilter), as kube-proxy requires",
        ),
    ]
}
