//! The raw figures: `figures.csv` (one row per point, variant, mode and
//! node) and `figures.json` (the same and more: per-sender quantiles,
//! source-address fates, conntrack and SNAT, the calibration used).

use super::super::{Measured, NodeFigures, Report};
use serde::Serialize;

/// The CSV's columns, in order.
pub const COLUMNS: [&str; 24] = [
    "point",
    "variant",
    "mode",
    "node",
    "services",
    "endpoints",
    "nat_rules",
    "filter_rules",
    "mangle_rules",
    "nat_chains",
    "filter_chains",
    "restore_bytes",
    "kube_proxy_nat_rules",
    "kube_proxy_filter_rules",
    "no_local_endpoints_internal",
    "no_local_endpoints_external",
    "first_packet_pairs",
    "first_packet_rules_min",
    "first_packet_rules_p50",
    "first_packet_rules_p99",
    "first_packet_rules_max",
    "model_sync_seconds",
    "model_connect_p50_seconds",
    "model_connect_max_seconds",
];

fn table(n: &NodeFigures, name: &str) -> (usize, usize) {
    n.tables.get(name).map_or((0, 0), |t| (t.rules, t.chains))
}

/// A model figure with six significant digits (deterministic text).
pub fn seconds(x: Option<f64>) -> String {
    x.map(|v| format!("{v:.6e}")).unwrap_or_default()
}

fn row(m: &Measured, n: &NodeFigures) -> Vec<String> {
    let (nat_rules, nat_chains) = table(n, "nat");
    let (filter_rules, filter_chains) = table(n, "filter");
    let (mangle_rules, _) = table(n, "mangle");
    let q = |f: fn(&super::super::first_packet::Quantiles) -> u64| {
        n.first_packet
            .as_ref()
            .map(f)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    vec![
        m.point.label.clone(),
        m.variant.clone(),
        m.mode.as_str().to_string(),
        n.node.clone(),
        m.services.to_string(),
        m.endpoints.to_string(),
        nat_rules.to_string(),
        filter_rules.to_string(),
        mangle_rules.to_string(),
        nat_chains.to_string(),
        filter_chains.to_string(),
        n.sync.bytes.to_string(),
        n.sync.nat_rules.to_string(),
        n.sync.filter_rules.to_string(),
        n.no_local_endpoints.internal.to_string(),
        n.no_local_endpoints.external.to_string(),
        n.pairs.to_string(),
        q(|q| q.min),
        q(|q| q.p50),
        q(|q| q.p99),
        q(|q| q.max),
        seconds(n.sync_seconds),
        seconds(n.connect_p50_seconds),
        seconds(n.connect_max_seconds),
    ]
}

pub fn csv(r: &Report) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(COLUMNS)?;
    for m in &r.results {
        for n in &m.nodes {
            w.write_record(row(m, n))?;
        }
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

#[derive(Serialize)]
struct Json<'a> {
    report: &'a Report,
    calibration: Option<&'a super::super::model::Calibration>,
}

pub fn json(r: &Report) -> serde_json::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(&Json {
        report: r,
        calibration: r.calibration.as_ref(),
    })?;
    v.push(b'\n');
    Ok(v)
}
