//! What kube-proxy (iptables mode) writes into the node's kernel settings
//! when it starts, before any rule: the conntrack table's size and
//! timeouts (`cmd/kube-proxy/app/server_linux.go`, `setupConntrack`), then
//! `route_localnet` for localhost node ports (`NewProxier`).

use super::ProxyConfig;
use crate::network::sysctl::{self, SetBy, Sysctl};
use std::net::Ipv4Addr;

/// kube-proxy's `conntrack` settings (KubeProxyConfiguration), durations
/// in whole seconds as kube-proxy writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConntrackConfig {
    /// `maxPerCore` (default 32768; 0 leaves the table size alone).
    pub max_per_core: i32,
    /// `min` (default 131072).
    pub min: i32,
    /// `tcpEstablishedTimeout` (default 24h; 0 leaves it alone).
    pub tcp_established_timeout: u64,
    /// `tcpCloseWaitTimeout` (default 1h; 0 leaves it alone).
    pub tcp_close_wait_timeout: u64,
    /// `tcpBeLiberal` (default false).
    pub tcp_be_liberal: bool,
    /// `udpTimeout` (default 0: left alone).
    pub udp_timeout: u64,
    /// `udpStreamTimeout` (default 0: left alone).
    pub udp_stream_timeout: u64,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        ConntrackConfig {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: 24 * 3600,
            tcp_close_wait_timeout: 3600,
            tcp_be_liberal: false,
            udp_timeout: 0,
            udp_stream_timeout: 0,
        }
    }
}

/// Whether localhost node ports are served: `iptables.localhostNodePorts`,
/// and `nodePortAddresses` covering an IPv4 loopback address (an empty
/// list covers everything). `NewProxier` turns the setting off otherwise.
pub fn localhost_node_ports(config: &ProxyConfig) -> bool {
    let loopback = Ipv4Addr::new(127, 0, 0, 0);
    config.localhost_node_ports
        && (config.node_port_addresses.is_empty()
            || config
                .node_port_addresses
                .iter()
                .any(|c| c.addr().is_loopback() || c.contains(&loopback)))
}

/// The settings kube-proxy writes at start on a node with `cpus` CPUs
/// (`None`: unknown), in the order it writes them.
pub fn sysctls(config: &ProxyConfig, ct: &ConntrackConfig, cpus: Option<u32>) -> Vec<Sysctl> {
    let mut out = Vec::new();
    if let Some(s) = conntrack_max(ct, cpus) {
        out.push(s);
    }
    // In kube-proxy's order; a zero duration leaves the kernel's value.
    let timeout = |out: &mut Vec<Sysctl>, key: &str, secs: u64, field: &str| {
        if secs > 0 {
            out.push(Sysctl::new(key, secs, SetBy::KubeProxy, field));
        }
    };
    timeout(
        &mut out,
        sysctl::NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED,
        ct.tcp_established_timeout,
        "conntrack.tcpEstablishedTimeout",
    );
    timeout(
        &mut out,
        sysctl::NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT,
        ct.tcp_close_wait_timeout,
        "conntrack.tcpCloseWaitTimeout",
    );
    if ct.tcp_be_liberal {
        out.push(Sysctl::new(
            sysctl::NF_CONNTRACK_TCP_BE_LIBERAL,
            1,
            SetBy::KubeProxy,
            "conntrack.tcpBeLiberal: out-of-window TCP packets are not INVALID",
        ));
    }
    timeout(
        &mut out,
        sysctl::NF_CONNTRACK_UDP_TIMEOUT,
        ct.udp_timeout,
        "conntrack.udpTimeout",
    );
    timeout(
        &mut out,
        sysctl::NF_CONNTRACK_UDP_TIMEOUT_STREAM,
        ct.udp_stream_timeout,
        "conntrack.udpStreamTimeout",
    );
    if localhost_node_ports(config) {
        out.push(Sysctl::new(
            sysctl::ROUTE_LOCALNET,
            1,
            SetBy::KubeProxy,
            "iptables.localhostNodePorts with nodePortAddresses covering 127.0.0.1: node ports answer on localhost",
        ));
    }
    out
}

/// `getConntrackMax`: `maxPerCore` × `cpus`, at least `min`; `None` when
/// `maxPerCore` is 0 (kube-proxy leaves the table size alone).
pub fn conntrack_max_value(ct: &ConntrackConfig, cpus: u32) -> Option<u64> {
    (ct.max_per_core > 0)
        .then(|| (ct.max_per_core as u64 * u64::from(cpus)).max(ct.min.max(0) as u64))
}

/// The `nf_conntrack_max` setting [`conntrack_max_value`] gives, with why.
fn conntrack_max(ct: &ConntrackConfig, cpus: Option<u32>) -> Option<Sysctl> {
    if ct.max_per_core <= 0 {
        return None;
    }
    let floor = i64::from(ct.min.max(0));
    let rule = format!(
        "conntrack.maxPerCore {} × CPUs, at least conntrack.min {floor}",
        ct.max_per_core
    );
    Some(match cpus {
        Some(n) => Sysctl::new(
            sysctl::NF_CONNTRACK_MAX,
            conntrack_max_value(ct, n).expect("maxPerCore above 0"),
            SetBy::KubeProxy,
            format!("{rule}, on {n} CPUs"),
        ),
        None => Sysctl {
            key: sysctl::NF_CONNTRACK_MAX.into(),
            value: None,
            set_by: SetBy::KubeProxy,
            why: format!("{rule}; the node's CPU count is not in the scenario (nodes[].cpus)"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[Sysctl]) -> Vec<(&str, Option<&str>)> {
        v.iter()
            .map(|s| (s.key.as_str(), s.value.as_deref()))
            .collect()
    }

    #[test]
    fn defaults_write_the_table_size_two_timeouts_and_route_localnet() {
        let s = sysctls(
            &ProxyConfig::default(),
            &ConntrackConfig::default(),
            Some(8),
        );
        assert_eq!(
            keys(&s),
            [
                (sysctl::NF_CONNTRACK_MAX, Some("262144")),
                (sysctl::NF_CONNTRACK_TCP_TIMEOUT_ESTABLISHED, Some("86400")),
                (sysctl::NF_CONNTRACK_TCP_TIMEOUT_CLOSE_WAIT, Some("3600")),
                (sysctl::ROUTE_LOCALNET, Some("1")),
            ]
        );
        // Two CPUs: 65536 is below the floor.
        let small = sysctls(
            &ProxyConfig::default(),
            &ConntrackConfig::default(),
            Some(2),
        );
        assert_eq!(small[0].value.as_deref(), Some("131072"));
        let unknown = sysctls(&ProxyConfig::default(), &ConntrackConfig::default(), None);
        assert_eq!(unknown[0].value, None);
    }

    #[test]
    fn route_localnet_needs_loopback_among_node_port_addresses() {
        let mut c = ProxyConfig {
            node_port_addresses: vec!["192.168.0.0/16".parse().unwrap()],
            ..ProxyConfig::default()
        };
        assert!(!localhost_node_ports(&c));
        c.node_port_addresses.push("127.0.0.1/32".parse().unwrap());
        assert!(localhost_node_ports(&c));
        c.localhost_node_ports = false;
        assert!(!localhost_node_ports(&c));
        let none = ConntrackConfig {
            max_per_core: 0,
            tcp_established_timeout: 0,
            tcp_close_wait_timeout: 0,
            ..ConntrackConfig::default()
        };
        assert!(sysctls(&c, &none, Some(4)).is_empty());
    }
}
