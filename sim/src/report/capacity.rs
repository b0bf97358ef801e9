//! Conntrack and SNAT capacity: steady-state entries for a traffic mix
//! against `nf_conntrack_max` as kube-proxy sets it, and the source ports
//! MASQUERADE can hand out towards one endpoint.
//!
//! Facts used, and where they come from:
//! * kube-proxy sets `nf_conntrack_max = max(maxPerCore × CPUs, min)` when
//!   `maxPerCore > 0` (`cmd/kube-proxy/app/server_linux.go`,
//!   `getConntrackMax`), defaults 32768 and 131072.
//! * An entry lives as long as its connection plus a timeout after the
//!   last packet: TCP closed with FIN/ACK stays in TIME_WAIT
//!   (`nf_conntrack_tcp_timeout_time_wait`, 120 s, not set by kube-proxy);
//!   a UDP flow that saw replies is extended by `nf_conntrack_udp_timeout`
//!   (30 s) within its first 2 s and by `nf_conntrack_udp_timeout_stream`
//!   (120 s) after (`nf_conntrack_proto_udp.c`); kube-proxy overrides the
//!   UDP ones only when `udpTimeout`/`udpStreamTimeout` are above zero.
//!   Steady state is Little's law: entries = rate × time held.
//! * MASQUERADE without `--to-ports` maps a source port of 1024 or more
//!   into 1024–65535 (`nf_nat_l4proto_unique_tuple`), so one node holds at
//!   most 64512 connections per (masquerade address, endpoint address and
//!   port, protocol). With `--random-fully` each new connection tries
//!   runs of 128, 64, 32, 16 and 8 ports from random offsets (248 tries)
//!   and is dropped at confirm when all are taken.

use super::spec::{Flows, Traffic};
use crate::proxier::startup::{conntrack_max_value, ConntrackConfig};
use serde::Serialize;

/// `nf_conntrack_tcp_timeout_time_wait`, kernel default (seconds).
pub const TCP_TIME_WAIT: f64 = 120.0;
/// `nf_conntrack_udp_timeout`, kernel default (seconds).
pub const UDP_TIMEOUT: f64 = 30.0;
/// `nf_conntrack_udp_timeout_stream`, kernel default since 5.19 (seconds).
pub const UDP_STREAM_TIMEOUT: f64 = 120.0;
/// A UDP flow older than this gets the stream timeout.
pub const UDP_STREAM_AFTER: f64 = 2.0;
/// Ports MASQUERADE maps a source port ≥ 1024 into: 1024–65535.
pub const SNAT_PORTS: u64 = 65535 - 1024 + 1;
/// Ports `--random-fully` tries before giving up (128+64+32+16+8).
pub const SNAT_RUNS: [u32; 5] = [128, 64, 32, 16, 8];
/// The new-connection failure rate the SNAT "safe" occupancy is set at.
pub const SNAT_FAILURE_RATE: f64 = 1e-3;

/// The node's conntrack table under the traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conntrack {
    /// As kube-proxy sets it; `None`: left at the kernel's value.
    pub max: Option<u64>,
    /// Entries held in steady state, TCP then UDP.
    pub tcp_entries: f64,
    pub udp_entries: f64,
    /// (tcp + udp) / max.
    pub utilisation: Option<f64>,
}

/// Seconds a TCP connection's entry is held: its life plus TIME_WAIT.
pub fn tcp_hold(f: &Flows) -> f64 {
    f.lifetime + TCP_TIME_WAIT
}

/// Seconds a UDP flow's entry is held: its life plus the timeout that
/// applies after its last packet.
pub fn udp_hold(f: &Flows, s: &ConntrackConfig) -> f64 {
    // kube-proxy writes a timeout only when above zero; otherwise the
    // kernel's default stays.
    let or_kernel = |set: u64, kernel: f64| if set > 0 { set as f64 } else { kernel };
    let after = if f.lifetime > UDP_STREAM_AFTER {
        or_kernel(s.udp_stream_timeout, UDP_STREAM_TIMEOUT)
    } else {
        or_kernel(s.udp_timeout, UDP_TIMEOUT)
    };
    f.lifetime + after
}

pub fn conntrack(t: &Traffic, s: &ConntrackConfig) -> Conntrack {
    let tcp = t
        .tcp
        .as_ref()
        .map_or(0.0, |f| f.connections_per_second * tcp_hold(f));
    let udp = t
        .udp
        .as_ref()
        .map_or(0.0, |f| f.connections_per_second * udp_hold(f, s));
    let max = conntrack_max_value(s, t.node_cpus);
    Conntrack {
        max,
        tcp_entries: tcp,
        udp_entries: udp,
        utilisation: max.map(|m| (tcp + udp) / m as f64),
    }
}

/// What MASQUERADE can carry from one node to one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Snat {
    /// Source ports per (masquerade address, endpoint, protocol).
    pub ports: u64,
    /// Ports in use at which one new connection in 1000 finds no free
    /// port in its 248 tries (ports taken at random, as `--random-fully`
    /// takes them).
    pub ports_at_failure_rate: u64,
    /// New TCP connections per second one node can open to one endpoint
    /// before its ports run out (ports / time each is held).
    pub tcp_rate_limit: Option<f64>,
    pub udp_rate_limit: Option<f64>,
}

/// Probability that all of `run` ports starting at a random offset are
/// among `used` of `total` taken at random.
fn run_taken(used: u64, total: u64, run: u32) -> f64 {
    (0..u64::from(run))
        .map(|i| used.saturating_sub(i) as f64 / (total - i) as f64)
        .product()
}

/// Probability that a new connection finds no port with `used` taken.
pub fn snat_failure(used: u64) -> f64 {
    SNAT_RUNS
        .iter()
        .map(|&r| run_taken(used, SNAT_PORTS, r))
        .product()
}

pub fn snat(t: Option<&Traffic>, s: &ConntrackConfig) -> Snat {
    // The smallest occupancy whose failure rate reaches the threshold.
    let (mut lo, mut hi) = (0u64, SNAT_PORTS);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if snat_failure(mid) >= SNAT_FAILURE_RATE {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Snat {
        ports: SNAT_PORTS,
        ports_at_failure_rate: lo,
        tcp_rate_limit: t
            .and_then(|t| t.tcp.as_ref())
            .map(|f| SNAT_PORTS as f64 / tcp_hold(f)),
        udp_rate_limit: t
            .and_then(|t| t.udp.as_ref())
            .map(|f| SNAT_PORTS as f64 / udp_hold(f, s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_max_is_per_core_with_a_floor() {
        let d = ConntrackConfig::default();
        assert_eq!(conntrack_max_value(&d, 2), Some(131072));
        assert_eq!(conntrack_max_value(&d, 8), Some(262144));
        let off = ConntrackConfig {
            max_per_core: 0,
            ..d
        };
        assert_eq!(conntrack_max_value(&off, 8), None);
    }

    #[test]
    fn steady_state_is_rate_times_hold() {
        let t = Traffic {
            node_cpus: 4,
            tcp: Some(Flows {
                connections_per_second: 100.0,
                lifetime: 30.0,
            }),
            udp: Some(Flows {
                connections_per_second: 10.0,
                lifetime: 0.1,
            }),
        };
        let c = conntrack(&t, &ConntrackConfig::default());
        assert_eq!(c.tcp_entries, 100.0 * 150.0);
        assert!((c.udp_entries - 10.0 * 30.1).abs() < 1e-9);
        assert_eq!(c.max, Some(131072));
    }

    #[test]
    fn snat_failures_start_near_the_top_of_the_range() {
        assert_eq!(snat_failure(0), 0.0);
        assert!(snat_failure(SNAT_PORTS) > 0.999);
        let s = snat(None, &ConntrackConfig::default());
        assert_eq!(s.ports, 64512);
        // f^248 = 1e-3 at f ≈ 0.9725.
        assert!(
            (62_500..62_900).contains(&s.ports_at_failure_rate),
            "{}",
            s.ports_at_failure_rate
        );
    }
}
