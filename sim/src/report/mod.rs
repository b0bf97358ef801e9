//! Capacity what-if reports: a spec ([`spec`]) names a cluster (a
//! scenario, a generated shape, or both), axes to sweep and what-ifs to
//! compare; every point × variant is compiled by the same compiler the
//! traces use and measured per node:
//!
//! * [`ruleset`]: rules and chains per table as `iptables-save` shows
//!   them, and kube-proxy's full-sync `iptables-restore` input;
//! * [`first_packet`]: rules a first packet tries, for every entry point
//!   and sender, counted by the engine, and what became of its source;
//! * [`capacity`]: conntrack steady state against `nf_conntrack_max`, and
//!   SNAT source ports towards one endpoint;
//! * [`metrics`]: kube-proxy's `/metrics` gauges, predicted;
//! * [`model`]: times (sync, connect) from lines calibrated on a real
//!   kernel ([`calibrate`]), each with its constants and their source.
//!
//! [`render`] writes `report.md`, SVG charts, `figures.csv` and
//! `figures.json`. Output depends only on the spec (and calibration): the
//! points run in parallel and are gathered in spec order. kpsim's own time
//! and memory are kept apart ([`Timing`]) because they differ from run to
//! run.
//!
//! Proxy modes: every result carries its [`Mode`]; a mode is one more
//! series on every chart, so another backend (nftables) adds a variant of
//! [`measure_point`] and nothing else.

pub mod calibrate;
pub mod capacity;
pub mod first_packet;
pub mod metrics;
pub mod model;
pub mod render;
pub mod ruleset;
pub mod spec;

use crate::compile::{compile, proxier_inputs, CompileError, Compiled};
use crate::proxier::{self, ProxyModel};
use crate::scenario::{DetectLocalMode, Scenario};
use crate::synth::{self, ShapeError};
use crate::trace::TraceError;
use first_packet::{Fate, KindName, Quantiles, SenderClass};
use model::Calibration;
use rayon::prelude::*;
use serde::Serialize;
use spec::{Spec, Variant};
use std::collections::BTreeMap;
use std::time::Instant;

/// The proxy backend a result was measured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Iptables,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
        }
    }
}

/// One point of the sweep: a value per swept axis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    /// `services=1000,nodes=3`, or `base` when nothing is swept.
    pub label: String,
    pub values: Vec<(String, usize)>,
}

/// Everything measured on one node.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeFigures {
    pub node: String,
    /// As `iptables-save` (and `kpsim rules`) shows the node's rules.
    pub tables: ruleset::TableCounts,
    /// kube-proxy's full-sync input.
    pub sync: ruleset::SyncPayload,
    pub no_local_endpoints: metrics::NoLocalEndpoints,
    /// Rules a first packet tries, over every (sender, entry point).
    pub first_packet: Option<Quantiles>,
    pub first_packet_by_sender: BTreeMap<SenderClass, Quantiles>,
    /// (sender, entry point) pairs measured.
    pub pairs: usize,
    /// Predicted `/metrics` text.
    #[serde(skip)]
    pub metrics_text: String,
    /// Modelled full-sync seconds (with a calibration).
    pub sync_seconds: Option<f64>,
    /// Modelled connect seconds at the median and the maximum rule count.
    pub connect_p50_seconds: Option<f64>,
    pub connect_max_seconds: Option<f64>,
}

/// Shares of (sender, entry point) pairs by what became of the source.
pub type Fates = BTreeMap<SenderClass, BTreeMap<KindName, BTreeMap<Fate, f64>>>;

/// One point × variant × mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Measured {
    pub point: Point,
    pub variant: String,
    pub mode: Mode,
    pub services: usize,
    pub service_ports: usize,
    pub endpoints: usize,
    pub nodes: Vec<NodeFigures>,
    /// Weight of pairs (over all nodes) by sender, entry kind and fate;
    /// each (sender, entry point) pair weighs 1.
    pub fates: Fates,
    pub conntrack: Option<capacity::Conntrack>,
    pub snat: capacity::Snat,
    /// kpsim's own cost (varies from run to run).
    #[serde(skip)]
    pub timing: Timing,
}

/// kpsim's own time for a point (not part of the compared output).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Timing {
    pub seconds: f64,
}

/// A whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub name: String,
    pub description: String,
    #[serde(skip)]
    pub spec: Spec,
    pub axes: Vec<String>,
    pub variants: Vec<String>,
    pub modes: Vec<Mode>,
    /// Point-major, then variant, then mode: the spec's order.
    pub results: Vec<Measured>,
    #[serde(skip)]
    pub calibration: Option<Calibration>,
    /// kpsim's own cost for the whole run (varies from run to run).
    #[serde(skip)]
    pub run: RunCost,
}

/// Wall time and peak memory of a whole run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct RunCost {
    pub seconds: f64,
    /// The process's peak resident set (`VmHWM`), when the OS says.
    pub peak_rss_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("point {point}, variant {variant}: {source}")]
    Shape {
        point: String,
        variant: String,
        source: ShapeError,
    },
    #[error("point {point}, variant {variant}: {source}")]
    Compile {
        point: String,
        variant: String,
        source: Box<CompileError>,
    },
    #[error("point {point}, variant {variant}: {source}")]
    Trace {
        point: String,
        variant: String,
        source: TraceError,
    },
    #[error(transparent)]
    Calibration(#[from] model::CalibrationError),
}

/// Told as points finish (for a progress bar).
pub trait Progress: Sync {
    fn start(&self, total: usize);
    fn done(&self, what: &str);
}

/// No progress shown.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: usize) {}
    fn done(&self, _: &str) {}
}

/// The sweep's points, in order (the last axis varies fastest).
pub fn points(spec: &Spec) -> Vec<Point> {
    let mut out = vec![Point {
        label: String::new(),
        values: Vec::new(),
    }];
    for axis in &spec.sweep {
        out = out
            .into_iter()
            .flat_map(|p| {
                axis.values().iter().map(move |&v| {
                    let mut q = p.clone();
                    q.values.push((axis.name().to_string(), v));
                    q
                })
            })
            .collect();
    }
    for p in &mut out {
        p.label = if p.values.is_empty() {
            "base".into()
        } else {
            p.values
                .iter()
                .map(|(a, v)| format!("{a}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
    }
    out
}

/// Run the whole report.
pub fn run(spec: &Spec, progress: &dyn Progress) -> Result<Report, ReportError> {
    let started = Instant::now();
    let calibration = spec
        .calibration
        .as_deref()
        .map(Calibration::load)
        .transpose()?;
    let jobs: Vec<(Point, &Variant)> = points(spec)
        .into_iter()
        .flat_map(|p| spec.variants.iter().map(move |v| (p.clone(), v)))
        .collect();
    progress.start(jobs.len());
    let results = jobs
        .par_iter()
        .map(|(p, v)| {
            let r = measure_point(spec, p, v, calibration.as_ref());
            progress.done(&format!("{} {}", p.label, v.name));
            r
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        name: spec.name.clone(),
        description: spec.description.clone(),
        spec: spec.clone(),
        axes: spec.sweep.iter().map(|a| a.name().to_string()).collect(),
        variants: spec.variants.iter().map(|v| v.name.clone()).collect(),
        modes: vec![Mode::Iptables],
        results,
        calibration,
        run: RunCost {
            seconds: started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss(),
        },
    })
}

/// The scenario of one point × variant.
pub fn scenario_for(spec: &Spec, point: &Point, v: &Variant) -> Result<Scenario, ShapeError> {
    let mut s = match &spec.shape {
        Some(shape) => {
            let mut sh = shape.clone();
            for (name, value) in &point.values {
                let axis = spec
                    .sweep
                    .iter()
                    .find(|a| a.name() == name)
                    .expect("points come from the sweep");
                axis.apply(&mut sh, *value);
            }
            if let Some(share) = v.local_share {
                sh.local_share = share;
            }
            if let Some(p) = &v.external_traffic_policy {
                sh.local_share = if p == "Local" { 1.0 } else { 0.0 };
            }
            let mut s = synth::shaped(&sh)?;
            if let Some(base) = &spec.base {
                s.cluster = base.cluster.clone();
                s.kube_proxy = base.kube_proxy.clone();
            }
            s
        }
        None => {
            let mut s = spec.base.clone().expect("a spec has a base or a shape");
            if let Some(p) = &v.external_traffic_policy {
                set_external_policy(&mut s, p);
            }
            s
        }
    };
    apply_variant(&mut s, v);
    Ok(s)
}

/// `externalTrafficPolicy` on every NodePort and LoadBalancer Service,
/// with the health check node port the API server allocates (Local
/// LoadBalancer) or releases (Cluster).
fn set_external_policy(s: &mut Scenario, policy: &str) {
    let (first, last) = s.kube_proxy.port_range;
    let mut used: Vec<i32> = s
        .services
        .iter()
        .filter_map(|svc| svc.spec.as_ref())
        .flat_map(|sp| {
            sp.ports
                .iter()
                .flatten()
                .filter_map(|p| p.node_port)
                .chain(sp.health_check_node_port)
        })
        .collect();
    for svc in &mut s.services {
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty != "NodePort" && ty != "LoadBalancer" {
            continue;
        }
        spec.external_traffic_policy = Some(policy.to_string());
        if ty == "LoadBalancer" {
            if policy == "Local" {
                if spec.health_check_node_port.is_none() {
                    let free = (i32::from(first)..=i32::from(last))
                        .rev()
                        .find(|p| !used.contains(p));
                    spec.health_check_node_port = free;
                    used.extend(free);
                }
            } else {
                spec.health_check_node_port = None;
            }
        }
    }
}

/// The variant's settings that apply to any scenario.
fn apply_variant(s: &mut Scenario, v: &Variant) {
    for svc in &mut s.services {
        let Some(spec) = svc.spec.as_mut() else {
            continue;
        };
        if let Some(p) = &v.internal_traffic_policy {
            spec.internal_traffic_policy = Some(p.clone());
        }
        match v.session_affinity.as_deref() {
            Some("ClientIP") => {
                spec.session_affinity = Some("ClientIP".into());
                spec.session_affinity_config =
                    Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                        client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                            timeout_seconds: Some(10800),
                        }),
                    });
            }
            Some(_) => {
                spec.session_affinity = Some("None".into());
                spec.session_affinity_config = None;
            }
            None => {}
        }
    }
    if let Some(m) = v.masquerade_all {
        s.kube_proxy.masquerade_all = m;
    }
    if let Some(m) = &v.detect_local_mode {
        s.kube_proxy.detect_local_mode = m.clone();
        if *m == DetectLocalMode::BridgeInterface && s.kube_proxy.bridge_interface.is_empty() {
            s.kube_proxy.bridge_interface = "cni0".into();
        }
    }
}

/// Compile and measure one point × variant in iptables mode.
pub fn measure_point(
    spec: &Spec,
    point: &Point,
    v: &Variant,
    calibration: Option<&Calibration>,
) -> Result<Measured, ReportError> {
    let started = Instant::now();
    let names = || (point.label.clone(), v.name.clone());
    let s = scenario_for(spec, point, v).map_err(|source| ReportError::Shape {
        point: names().0,
        variant: names().1,
        source,
    })?;
    let c = compile(&s, &Default::default()).map_err(|source| ReportError::Compile {
        point: names().0,
        variant: names().1,
        source: Box::new(source),
    })?;
    let work = first_packet::measure(&c).map_err(|source| ReportError::Trace {
        point: names().0,
        variant: names().1,
        source,
    })?;
    let model = ProxyModel::build(&s.services, &s.slices);
    let inputs = proxier_inputs(&s, &c.cluster.network);
    let nodes: Vec<NodeFigures> = inputs
        .par_iter()
        .zip(work.par_iter())
        .enumerate()
        .map(|(i, ((cfg, info), w))| {
            node_figures(
                &c,
                i,
                proxier::node_rules(cfg, info, &model).restore_text,
                &model,
                w,
                calibration,
            )
        })
        .collect();
    let mut fates: Fates = BTreeMap::new();
    for w in &work {
        for ((class, kind, fate), weight) in &w.fates {
            *fates
                .entry(*class)
                .or_default()
                .entry(*kind)
                .or_default()
                .entry(*fate)
                .or_default() += weight;
        }
    }
    let conntrack_settings = &s.kube_proxy.conntrack;
    Ok(Measured {
        point: point.clone(),
        variant: v.name.clone(),
        mode: Mode::Iptables,
        services: s.services.len(),
        service_ports: model.ports.len(),
        endpoints: model.ports.iter().map(|(_, e)| e.len()).sum(),
        nodes,
        fates,
        conntrack: spec
            .traffic
            .as_ref()
            .map(|t| capacity::conntrack(t, conntrack_settings)),
        snat: capacity::snat(spec.traffic.as_ref(), conntrack_settings),
        timing: Timing {
            seconds: started.elapsed().as_secs_f64(),
        },
    })
}

fn node_figures(
    c: &Compiled,
    i: usize,
    restore_text: String,
    model: &ProxyModel,
    w: &first_packet::NodeWork,
    calibration: Option<&Calibration>,
) -> NodeFigures {
    let n = &c.scenario.nodes[i];
    let sync = ruleset::sync_payload(&ruleset::sync_input(&restore_text));
    drop(restore_text);
    let no_local = metrics::no_local_endpoints(model, &n.name, n.zone.as_deref());
    let fp = first_packet::quantiles(&w.rules);
    NodeFigures {
        node: n.name.clone(),
        tables: ruleset::table_counts(c.rules(i)),
        metrics_text: metrics::prometheus_text(&sync, &no_local),
        sync,
        no_local_endpoints: no_local,
        first_packet: fp,
        first_packet_by_sender: w
            .rules_by_sender
            .iter()
            .filter_map(|(k, d)| Some((*k, first_packet::quantiles(d)?)))
            .collect(),
        pairs: w.pairs,
        sync_seconds: calibration.map(|m| m.restore.predict(sync.bytes as f64)),
        connect_p50_seconds: calibration
            .zip(fp)
            .map(|(m, q)| m.connect.predict(q.p50 as f64)),
        connect_max_seconds: calibration
            .zip(fp)
            .map(|(m, q)| m.connect.predict(q.max as f64)),
    }
}

/// The process's peak resident set (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
