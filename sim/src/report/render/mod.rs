//! Writing a report: `report.md`, `charts/*.svg`, `figures.csv`,
//! `figures.json`, `metrics/*.prom` (each node's predicted `/metrics`),
//! all deterministic; and `timings.md`, kpsim's own time and memory,
//! which vary from run to run and are kept out of every other file.

pub mod charts;
pub mod figures;
pub mod markdown;

use super::first_packet::{Fate, SenderClass};
use super::{Measured, Report};
use charts::{human, Chart, Series};
use std::path::{Path, PathBuf};

/// Files that vary from run to run (not compared by CI).
pub const VOLATILE: [&str; 1] = ["timings.md"];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Chart(String),
    #[error("figures: {0}")]
    Csv(#[from] csv::Error),
    #[error("figures: {0}")]
    Json(#[from] serde_json::Error),
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), RenderError> {
    std::fs::write(path, bytes).map_err(|source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), RenderError> {
    std::fs::create_dir_all(path).map_err(|source| RenderError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A chart's file name and what it shows.
pub struct Drawn {
    pub file: String,
    pub chart: Chart,
}

/// Write every file of the report into `dir` (created if needed). Files
/// a previous run left under `charts/` and `metrics/` are replaced.
pub fn write_all(r: &Report, dir: &Path) -> Result<(), RenderError> {
    for sub in ["charts", "metrics"] {
        let d = dir.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|source| RenderError::Io {
                path: d.clone(),
                source,
            })?;
        }
        mkdir(&d)?;
    }
    let drawn = charts_of(r);
    for d in &drawn {
        let svg = charts::svg(&d.chart).map_err(RenderError::Chart)?;
        write(&dir.join("charts").join(&d.file), svg.as_bytes())?;
    }
    for m in &r.results {
        for n in &m.nodes {
            write(
                &dir.join("metrics").join(metrics_file(m, &n.node)),
                n.metrics_text.as_bytes(),
            )?;
        }
    }
    write(&dir.join("figures.csv"), &figures::csv(r)?)?;
    write(&dir.join("figures.json"), &figures::json(r)?)?;
    write(
        &dir.join("report.md"),
        markdown::report(r, &drawn).as_bytes(),
    )?;
    write(&dir.join("timings.md"), markdown::timings(r).as_bytes())?;
    Ok(())
}

/// `metrics/<point>__<variant>__<mode>__<node>.prom`.
pub fn metrics_file(m: &Measured, node: &str) -> String {
    let point = m.point.label.replace([',', '='], "-");
    format!("{point}__{}__{}__{node}.prom", m.variant, m.mode.as_str())
}

/// How an axis is named on a chart.
fn axis_desc(axis: &str) -> &'static str {
    match axis {
        "services" => "Services",
        "nodes" => "nodes",
        _ => "endpoints per Service",
    }
}

/// The largest of a figure over a result's nodes.
fn node_max(m: &Measured, f: impl Fn(&super::NodeFigures) -> Option<f64>) -> Option<f64> {
    m.nodes.iter().filter_map(f).reduce(f64::max)
}

/// Share of a sender class's pairs whose source was kept.
pub fn share(m: &Measured, class: SenderClass, fate: Fate) -> Option<f64> {
    let by_kind = m.fates.get(&class)?;
    let total: f64 = by_kind.values().flat_map(|f| f.values()).sum();
    let part: f64 = by_kind.values().filter_map(|f| f.get(&fate)).sum();
    (total > 0.0).then(|| part / total)
}

type Metric<'a> = (&'a str, &'a dyn Fn(&Measured) -> Option<f64>);

/// Series for the given metrics: over the first swept axis (one series
/// per variant, mode, other axis values and metric), or per variant as
/// categories when nothing is swept.
fn series(r: &Report, metrics: &[Metric]) -> (Vec<Series>, Option<Vec<String>>) {
    let many_modes = r.modes.len() > 1;
    if r.axes.is_empty() {
        let mut out = Vec::new();
        for mode in &r.modes {
            for (name, f) in metrics {
                let points = r
                    .variants
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| {
                        let m = r
                            .results
                            .iter()
                            .find(|m| &m.variant == v && m.mode == *mode)?;
                        Some((i as f64, f(m)?))
                    })
                    .collect();
                let label = if many_modes {
                    format!("{name} [{}]", mode.as_str())
                } else {
                    name.to_string()
                };
                out.push(Series {
                    name: label,
                    points,
                    color: out.len(),
                    dashed: false,
                });
            }
        }
        return (out, Some(r.variants.clone()));
    }
    let mut out: Vec<Series> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for m in &r.results {
        let others: Vec<String> = m.point.values[1..]
            .iter()
            .map(|(a, v)| format!("{a}={v}"))
            .collect();
        let x = m.point.values[0].1 as f64;
        for (k, (name, f)) in metrics.iter().enumerate() {
            let Some(y) = f(m) else { continue };
            let mut label = m.variant.clone();
            if many_modes {
                label.push_str(&format!(" [{}]", m.mode.as_str()));
            }
            if !others.is_empty() {
                label.push_str(&format!(" ({})", others.join(", ")));
            }
            let group = label.clone();
            if metrics.len() > 1 {
                label.push_str(&format!(" {name}"));
            }
            match out.iter_mut().find(|s| s.name == label) {
                Some(s) => s.points.push((x, y)),
                None => {
                    // Series of one variant (mode, other axes) share a
                    // colour; its second figure is dashed.
                    let color = match groups.iter().position(|g| *g == group) {
                        Some(i) => i,
                        None => {
                            groups.push(group);
                            groups.len() - 1
                        }
                    };
                    out.push(Series {
                        name: label,
                        points: vec![(x, y)],
                        color,
                        dashed: k > 0,
                    })
                }
            }
        }
    }
    (out, None)
}

fn chart(r: &Report, title: &str, y_desc: &str, metrics: &[Metric], notes: Vec<String>) -> Chart {
    let (series, categories) = series(r, metrics);
    let y_range = y_desc.contains("(%)").then_some((0.0, 105.0));
    Chart {
        title: title.to_string(),
        x_desc: match r.axes.first() {
            Some(a) => axis_desc(a).to_string(),
            None => "variant".to_string(),
        },
        y_desc: y_desc.to_string(),
        series,
        categories,
        notes,
        y_range,
    }
}

/// The largest input a model was measured at.
fn measured_up_to(l: &super::model::Line) -> f64 {
    l.fitted
        .iter()
        .chain(&l.held_out)
        .map(|s| s.x)
        .fold(0.0, f64::max)
}

/// Every chart of the report, in the order `report.md` shows them.
pub fn charts_of(r: &Report) -> Vec<Drawn> {
    let mut out = Vec::new();
    let rules = |m: &Measured| {
        node_max(m, |n| {
            Some(n.tables.values().map(|t| t.rules).sum::<usize>() as f64)
        })
    };
    out.push(Drawn {
        file: "rules.svg".into(),
        chart: chart(
            r,
            "Rules per node (iptables-save view, largest node)",
            "rules per node",
            &[("all tables", &rules)],
            vec!["Exact counts from the compiler: what `kpsim rules` prints (built-in chains' and kubelet's rules included).".into()],
        ),
    });
    let bytes = |m: &Measured| node_max(m, |n| Some(n.sync.bytes as f64));
    out.push(Drawn {
        file: "restore-bytes.svg".into(),
        chart: chart(
            r,
            "kube-proxy full-sync iptables-restore input (largest node)",
            "bytes per full sync",
            &[("restore input", &bytes)],
            vec!["Exact: the filter and nat sections kube-proxy hands to `iptables-restore --noflush` on a full sync.".into()],
        ),
    });
    let p50 = |m: &Measured| node_max(m, |n| n.first_packet.map(|q| q.p50 as f64));
    let max = |m: &Measured| node_max(m, |n| n.first_packet.map(|q| q.max as f64));
    out.push(Drawn {
        file: "first-packet-rules.svg".into(),
        chart: chart(
            r,
            "Rules a first packet tries (every entry point, pods, nodes, externals)",
            "rules tried per first packet",
            &[("median", &p50), ("max", &max)],
            vec!["Exact counts from the engine's walk (linear, as ipt_do_table), summed over every host on the way; worst node shown.".into()],
        ),
    });
    if let Some(cal) = &r.calibration {
        let sync = |m: &Measured| node_max(m, |n| n.sync_seconds);
        out.push(Drawn {
            file: "sync-time.svg".into(),
            chart: chart(
                r,
                "Full sync time, modelled (iptables-restore of the input above)",
                "seconds per full sync",
                &[("modelled", &sync)],
                vec![
                    format!("Model: {} (least squares on {} kernel measurements).", cal.restore_formula(), cal.restore.fitted.len()),
                    format!("Constants {}; reports/calibration.json.", cal.source()),
                    format!(
                        "Measured up to {} B of input; beyond that the curve is extrapolated. kube-proxy's own rule generation in Go is not included.",
                        human(measured_up_to(&cal.restore))
                    ),
                ],
            ),
        });
        let c50 = |m: &Measured| node_max(m, |n| n.connect_p50_seconds).map(|s| s * 1e6);
        let cmax = |m: &Measured| node_max(m, |n| n.connect_max_seconds).map(|s| s * 1e6);
        out.push(Drawn {
            file: "connect-latency.svg".into(),
            chart: chart(
                r,
                "First-packet connect latency, modelled from the rule counts",
                "µs per TCP connect",
                &[("median", &c50), ("max", &cmax)],
                vec![
                    format!(
                        "Model: {} (least squares on {} kernel measurements).",
                        cal.connect_formula(),
                        cal.connect.fitted.len()
                    ),
                    format!("Constants {}; reports/calibration.json.", cal.source()),
                    format!(
                        "Measured up to {} rules tried; beyond that the line is extrapolated.",
                        human(measured_up_to(&cal.connect))
                    ),
                ],
            ),
        });
    }
    let ext = |m: &Measured| share(m, SenderClass::External, Fate::Preserved).map(|s| s * 100.0);
    let dropped = |m: &Measured| share(m, SenderClass::External, Fate::Dropped).map(|s| s * 100.0);
    out.push(Drawn {
        file: "source-preserved.svg".into(),
        chart: chart(
            r,
            "External clients: address kept, or packet dropped",
            "share of (sender, entry point) pairs (%)",
            &[("client address kept", &ext), ("dropped", &dropped)],
            vec!["Exact, from the engine's traces: every load-balancing path weighted by its probability.".into()],
        ),
    });
    out
}
