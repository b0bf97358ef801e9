//! The report spec (`reports/NAME/spec.yaml`): what cluster to measure
//! (`base:` a scenario and/or `shape:` a generated cluster), which axes to
//! sweep, which what-ifs to compare, what traffic to size conntrack and
//! SNAT for. Read strictly like a scenario: an unknown key, a wrong type
//! or a value out of range is an error with file, line and column.
//!
//! ```yaml
//! report: growth
//! description: How a node's rules grow with the number of Services.
//! shape:
//!   services: 1000
//!   endpointsPerService: 8          # or a cycle: [1, 2, 8]
//!   nodes: 3
//!   podsPerNode: 10                 # default 10
//!   nodePortShare: 0.05             # default 0
//!   loadBalancerShare: 0            # default 0
//!   localShare: 0                   # of NodePort/LB Services; default 0
//!   affinityShare: 0                # default 0
//! sweep:
//!   services: [100, 1000, 10000, 50000]
//! variants:
//!   - name: cluster
//!   - name: local
//!     externalTrafficPolicy: Local
//! traffic:
//!   nodeCPUs: 8
//!   tcp: { connectionsPerSecond: 500, lifetime: 30s }
//!   udp: { connectionsPerSecond: 200, lifetime: 100ms }
//! calibration: ../calibration.json
//! ```

use crate::scenario::{
    syntax_error, DetectLocalMode, Limits, Loc, Problem, Scenario, ScenarioError,
};
use crate::synth::Shape;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    report: S<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    base: Option<S<String>>,
    #[serde(default)]
    shape: Option<S<RawShape>>,
    #[serde(default)]
    sweep: Option<S<RawSweep>>,
    #[serde(default)]
    variants: Vec<S<RawVariant>>,
    #[serde(default)]
    traffic: Option<S<RawTraffic>>,
    #[serde(default)]
    calibration: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawShape {
    services: S<u64>,
    endpoints_per_service: S<OneOrMany>,
    nodes: S<u64>,
    #[serde(default)]
    pods_per_node: Option<S<u64>>,
    #[serde(default)]
    node_port_share: Option<S<f64>>,
    #[serde(default)]
    load_balancer_share: Option<S<f64>>,
    #[serde(default)]
    local_share: Option<S<f64>>,
    #[serde(default)]
    affinity_share: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u64),
    Many(Vec<u64>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSweep {
    #[serde(default)]
    services: Option<S<Vec<u64>>>,
    #[serde(default)]
    nodes: Option<S<Vec<u64>>>,
    #[serde(default)]
    endpoints_per_service: Option<S<Vec<u64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawVariant {
    name: S<String>,
    #[serde(default)]
    external_traffic_policy: Option<S<String>>,
    #[serde(default)]
    internal_traffic_policy: Option<S<String>>,
    #[serde(default)]
    session_affinity: Option<S<String>>,
    #[serde(default)]
    masquerade_all: Option<bool>,
    #[serde(default)]
    detect_local_mode: Option<S<String>>,
    #[serde(default)]
    local_share: Option<S<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTraffic {
    #[serde(rename = "nodeCPUs")]
    node_cpus: S<u64>,
    #[serde(default)]
    tcp: Option<S<RawFlows>>,
    #[serde(default)]
    udp: Option<S<RawFlows>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFlows {
    connections_per_second: S<f64>,
    lifetime: S<String>,
}

/// A validated report spec.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub description: String,
    /// The spec file.
    pub path: PathBuf,
    /// The scenario given as `base:` (loaded), if any.
    pub base: Option<Scenario>,
    /// `base:` as written (relative to the spec), for the report's text.
    pub base_file: Option<String>,
    pub shape: Option<Shape>,
    /// Swept axes in a fixed order (services, nodes, endpointsPerService);
    /// points are their cartesian product.
    pub sweep: Vec<Axis>,
    /// At least one; `as-is` when the spec names none.
    pub variants: Vec<Variant>,
    pub traffic: Option<Traffic>,
    /// `calibration:` resolved against the spec's folder.
    pub calibration: Option<PathBuf>,
}

/// One swept axis of a shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axis {
    Services(Vec<usize>),
    Nodes(Vec<usize>),
    Endpoints(Vec<usize>),
}

impl Axis {
    pub fn name(&self) -> &'static str {
        match self {
            Axis::Services(_) => "services",
            Axis::Nodes(_) => "nodes",
            Axis::Endpoints(_) => "endpointsPerService",
        }
    }

    pub fn values(&self) -> &[usize] {
        match self {
            Axis::Services(v) | Axis::Nodes(v) | Axis::Endpoints(v) => v,
        }
    }

    /// Set this axis to `value` in `shape`.
    pub fn apply(&self, shape: &mut Shape, value: usize) {
        match self {
            Axis::Services(_) => shape.services = value,
            Axis::Nodes(_) => shape.nodes = value,
            Axis::Endpoints(_) => shape.endpoints = vec![value],
        }
    }
}

/// A what-if applied to the base or shape. `None` leaves a setting as
/// the base or shape has it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Variant {
    pub name: String,
    /// `Cluster` or `Local`, for every NodePort and LoadBalancer Service.
    pub external_traffic_policy: Option<String>,
    /// `Cluster` or `Local`, for every Service.
    pub internal_traffic_policy: Option<String>,
    /// `None` or `ClientIP` (timeout 10800 s), for every Service.
    pub session_affinity: Option<String>,
    pub masquerade_all: Option<bool>,
    pub detect_local_mode: Option<DetectLocalMode>,
    /// The shape's `localShare`, for this variant.
    pub local_share: Option<f64>,
}

/// New connections per second each node's conntrack table sees, by
/// protocol, and the node size kube-proxy scales `nf_conntrack_max` by.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    pub node_cpus: u32,
    pub tcp: Option<Flows>,
    pub udp: Option<Flows>,
}

/// A connection rate and how long each connection lasts.
#[derive(Clone, Debug, PartialEq)]
pub struct Flows {
    pub connections_per_second: f64,
    /// Seconds from the first packet to the last (TCP: to the close).
    pub lifetime: f64,
}

struct Problems(Vec<Problem>);

impl Problems {
    fn err<T>(&mut self, at: &S<T>, message: impl Into<String>) {
        self.0.push(Problem {
            file: None,
            loc: Loc::from_location(&at.referenced),
            message: message.into(),
        });
    }
}

impl Spec {
    /// Read and validate a spec file; `base:` is loaded too (its own
    /// errors name its own file).
    pub fn load(path: &Path) -> Result<Spec, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Spec::from_str(&text, path)
    }

    pub fn from_str(text: &str, path: &Path) -> Result<Spec, ScenarioError> {
        let limits = Limits::default();
        let raw: RawSpec = serde_saphyr::from_str_with_options(text, limits.options())
            .map_err(|e| syntax_error(path, text, &e, &limits))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut p = Problems(Vec::new());
        if raw.base.is_none() && raw.shape.is_none() {
            p.err(
                &raw.report,
                "a report needs `base:` (a scenario file) or `shape:` (a generated cluster), or both",
            );
        }
        let base = match &raw.base {
            Some(b) => Some(Scenario::load(&dir.join(&b.value))?.scenario),
            None => None,
        };
        let shape = raw.shape.as_ref().map(|s| shape(&mut p, s));
        let sweep = raw
            .sweep
            .as_ref()
            .map(|s| sweep(&mut p, s, raw.shape.is_some()))
            .unwrap_or_default();
        let mut variants: Vec<Variant> = raw.variants.iter().map(|v| variant(&mut p, v)).collect();
        for (i, v) in raw.variants.iter().enumerate() {
            if raw.variants[..i]
                .iter()
                .any(|w| w.value.name.value == v.value.name.value)
            {
                p.err(
                    &v.value.name,
                    format!("variant {:?} is named twice", v.value.name.value),
                );
            }
            if v.value.local_share.is_some() && raw.shape.is_none() {
                p.err(
                    &v.value.name,
                    "localShare is a shape setting: this spec has no `shape:`",
                );
            }
        }
        if variants.is_empty() {
            variants.push(Variant {
                name: "as-is".into(),
                ..Default::default()
            });
        }
        let traffic = raw.traffic.as_ref().map(|t| traffic(&mut p, t));
        if !p.0.is_empty() {
            p.0.sort_by_key(|x| (x.loc.line, x.loc.column));
            return Err(ScenarioError::Invalid {
                path: path.to_path_buf(),
                problems: p.0,
                source_text: text.to_string(),
                included: Vec::new(),
            });
        }
        let base_node_ports = base.as_ref().map(|b| b.kube_proxy.port_range);
        Ok(Spec {
            name: raw.report.value,
            description: raw.description.unwrap_or_default(),
            path: path.to_path_buf(),
            base,
            base_file: raw.base.map(|b| b.value),
            shape: shape.map(|mut s| {
                if let Some(r) = base_node_ports {
                    s.node_port_range = r;
                }
                s
            }),
            sweep,
            variants,
            traffic,
            calibration: raw.calibration.map(|c| dir.join(c.value)),
        })
    }
}

fn share(p: &mut Problems, v: &Option<S<f64>>, name: &str) -> f64 {
    match v {
        None => 0.0,
        Some(s) if (0.0..=1.0).contains(&s.value) => s.value,
        Some(s) => {
            p.err(
                s,
                format!("{name}: expected a share from 0 to 1, got {}", s.value),
            );
            0.0
        }
    }
}

fn count(p: &mut Problems, v: &S<u64>, name: &str, range: std::ops::RangeInclusive<u64>) -> usize {
    if !range.contains(&v.value) {
        p.err(
            v,
            format!(
                "{name}: expected {}..={}, got {}",
                range.start(),
                range.end(),
                v.value
            ),
        );
    }
    v.value as usize
}

fn shape(p: &mut Problems, s: &S<RawShape>) -> Shape {
    let r = &s.value;
    let endpoints = match &r.endpoints_per_service.value {
        OneOrMany::One(n) => vec![*n as usize],
        OneOrMany::Many(v) => v.iter().map(|n| *n as usize).collect(),
    };
    if endpoints.is_empty() || endpoints.iter().any(|&e| e > 10_000) {
        p.err(
            &r.endpoints_per_service,
            "endpointsPerService: expected a count (0..=10000) or a non-empty list of counts",
        );
    }
    Shape {
        services: count(p, &r.services, "services", 0..=1_000_000),
        endpoints,
        nodes: count(p, &r.nodes, "nodes", 1..=crate::synth::MAX_NODES as u64),
        pods_per_node: match &r.pods_per_node {
            Some(v) => count(
                p,
                v,
                "podsPerNode",
                1..=crate::synth::MAX_PODS_PER_NODE as u64,
            ),
            None => DEFAULT_PODS_PER_NODE,
        },
        node_port_share: share(p, &r.node_port_share, "nodePortShare"),
        load_balancer_share: share(p, &r.load_balancer_share, "loadBalancerShare"),
        local_share: share(p, &r.local_share, "localShare"),
        affinity_share: share(p, &r.affinity_share, "affinityShare"),
        node_port_range: (30000, 32767),
    }
}

/// Pods per node that back the endpoints when the shape does not say.
pub const DEFAULT_PODS_PER_NODE: usize = 10;

fn sweep(p: &mut Problems, s: &S<RawSweep>, has_shape: bool) -> Vec<Axis> {
    let mut out = Vec::new();
    if !has_shape {
        p.err(
            s,
            "sweep: only a `shape:` can be swept (a base scenario is one point)",
        );
        return out;
    }
    let r = &s.value;
    let mut axis = |v: &Option<S<Vec<u64>>>,
                    name: &str,
                    range: std::ops::RangeInclusive<u64>,
                    make: fn(Vec<usize>) -> Axis| {
        let Some(v) = v else { return };
        if v.value.is_empty() {
            p.err(v, format!("sweep.{name}: expected at least one value"));
        }
        if let Some(bad) = v.value.iter().find(|x| !range.contains(x)) {
            p.err(
                v,
                format!(
                    "sweep.{name}: {bad} is outside {}..={}",
                    range.start(),
                    range.end()
                ),
            );
        }
        out.push(make(v.value.iter().map(|x| *x as usize).collect()));
    };
    axis(&r.services, "services", 0..=1_000_000, Axis::Services);
    axis(
        &r.nodes,
        "nodes",
        1..=crate::synth::MAX_NODES as u64,
        Axis::Nodes,
    );
    axis(
        &r.endpoints_per_service,
        "endpointsPerService",
        0..=10_000,
        Axis::Endpoints,
    );
    if out.is_empty() {
        p.err(
            s,
            "sweep: name at least one axis (services, nodes, endpointsPerService)",
        );
    }
    out
}

fn one_of(p: &mut Problems, v: &Option<S<String>>, name: &str, allowed: &[&str]) -> Option<String> {
    let v = v.as_ref()?;
    if allowed.contains(&v.value.as_str()) {
        Some(v.value.clone())
    } else {
        p.err(
            v,
            format!(
                "{name}: expected {}, got {:?}",
                allowed.join(" or "),
                v.value
            ),
        );
        None
    }
}

fn variant(p: &mut Problems, v: &S<RawVariant>) -> Variant {
    let r = &v.value;
    if r.name.value.is_empty()
        || !r
            .name
            .value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        p.err(
            &r.name,
            "name: expected letters, digits, '-' or '_' (it names files and columns)",
        );
    }
    let policies = ["Cluster", "Local"];
    Variant {
        name: r.name.value.clone(),
        external_traffic_policy: one_of(
            p,
            &r.external_traffic_policy,
            "externalTrafficPolicy",
            &policies,
        ),
        internal_traffic_policy: one_of(
            p,
            &r.internal_traffic_policy,
            "internalTrafficPolicy",
            &policies,
        ),
        session_affinity: one_of(
            p,
            &r.session_affinity,
            "sessionAffinity",
            &["None", "ClientIP"],
        ),
        masquerade_all: r.masquerade_all,
        detect_local_mode: one_of(
            p,
            &r.detect_local_mode,
            "detectLocalMode",
            &[
                "ClusterCIDR",
                "NodeCIDR",
                "BridgeInterface",
                "InterfaceNamePrefix",
            ],
        )
        .map(|m| match m.as_str() {
            "NodeCIDR" => DetectLocalMode::NodeCidr,
            "BridgeInterface" => DetectLocalMode::BridgeInterface,
            "InterfaceNamePrefix" => DetectLocalMode::InterfaceNamePrefix,
            _ => DetectLocalMode::ClusterCidr,
        }),
        local_share: r
            .local_share
            .as_ref()
            .map(|_| share(p, &r.local_share, "localShare")),
    }
}

fn traffic(p: &mut Problems, t: &S<RawTraffic>) -> Traffic {
    let r = &t.value;
    let flows = |p: &mut Problems, f: &Option<S<RawFlows>>, name: &str| -> Option<Flows> {
        let f = &f.as_ref()?.value;
        let rate = f.connections_per_second.value;
        if !(rate.is_finite() && rate >= 0.0) {
            p.err(
                &f.connections_per_second,
                format!("{name}.connectionsPerSecond: expected a rate of 0 or more"),
            );
        }
        let lifetime = match crate::scenario::go_duration(&f.lifetime.value) {
            Some(d) => d.as_secs_f64(),
            None => {
                p.err(
                    &f.lifetime,
                    format!(
                        "{name}.lifetime: expected a duration like 30s, 100ms or 2m, got {:?}",
                        f.lifetime.value
                    ),
                );
                0.0
            }
        };
        Some(Flows {
            connections_per_second: rate,
            lifetime,
        })
    };
    Traffic {
        node_cpus: count(p, &r.node_cpus, "nodeCPUs", 1..=4096) as u32,
        tcp: flows(p, &r.tcp, "tcp"),
        udp: flows(p, &r.udp, "udp"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Spec, ScenarioError> {
        Spec::from_str(text, Path::new("reports/x/spec.yaml"))
    }

    const SHAPE: &str =
        "report: x\nshape:\n  services: 100\n  endpointsPerService: [1, 8]\n  nodes: 3\n";

    #[test]
    fn a_shape_with_defaults_and_a_sweep_loads() {
        let s = load(&format!("{SHAPE}sweep:\n  services: [10, 100]\n")).unwrap();
        let sh = s.shape.unwrap();
        assert_eq!(sh.endpoints, vec![1, 8]);
        assert_eq!(sh.pods_per_node, DEFAULT_PODS_PER_NODE);
        assert_eq!(s.sweep, vec![Axis::Services(vec![10, 100])]);
        assert_eq!(s.variants.len(), 1);
        assert_eq!(s.variants[0].name, "as-is");
    }

    #[test]
    fn an_unknown_key_is_an_error_with_its_line_and_column() {
        let e = load(&format!("{SHAPE}  nodePortShar: 0.5\n")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("reports/x/spec.yaml:6:3"), "{text}");
        assert!(text.contains("nodePortShar"), "{text}");
    }

    #[test]
    fn bad_values_are_each_reported_where_they_stand() {
        let e = load(&format!(
            "{SHAPE}  nodePortShare: 1.5\nvariants:\n  - name: a\n    externalTrafficPolicy: Sometimes\ntraffic:\n  nodeCPUs: 4\n  tcp: {{ connectionsPerSecond: 10, lifetime: soon }}\n"
        ))
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(":6:18: nodePortShare: expected a share"),
            "{text}"
        );
        assert!(
            text.contains(":9:28: externalTrafficPolicy: expected Cluster or Local"),
            "{text}"
        );
        assert!(text.contains("tcp.lifetime: expected a duration"), "{text}");
    }

    #[test]
    fn a_spec_needs_a_base_or_a_shape_and_only_shapes_sweep() {
        let e = load("report: x\nsweep:\n  services: [1]\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("needs `base:`"), "{text}");
        assert!(text.contains("only a `shape:` can be swept"), "{text}");
    }

    #[test]
    fn traffic_reads_go_durations() {
        let s = load(&format!(
            "{SHAPE}traffic:\n  nodeCPUs: 8\n  udp: {{ connectionsPerSecond: 2.5, lifetime: 1m30s }}\n"
        ))
        .unwrap();
        let t = s.traffic.unwrap();
        assert_eq!(t.node_cpus, 8);
        assert_eq!(t.udp.unwrap().lifetime, 90.0);
        assert!(t.tcp.is_none());
    }
}
