//! `kpsim matrix`.

use super::{compiled, emit, Fail, RulesOverride, EXIT_OK};
use kpsim::matrix::{compute, service_ports, Cell, MatrixDocument, ModeComparison, ServicePort};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct MatrixArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// text (aligned columns), markdown (a table) or json.
    #[arg(long, default_value = "text", value_parser = ["text", "markdown", "json"])]
    format: String,
    /// Write the output to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    overrides: RulesOverride,
}

const HEADER: [&str; 5] = [
    "sender",
    "entry point",
    "received by",
    "source seen",
    "reply",
];

const PORTS_HEADER: [&str; 5] = [
    "service port",
    "cluster IP",
    "node port",
    "load balancer",
    "external IPs",
];

/// The matrix in `format`; text and markdown open with each service
/// port's addresses, its allocated node port among them.
pub fn render(ports: &[ServicePort], cells: &[Cell], format: &str) -> String {
    if format == "json" {
        let doc = MatrixDocument::of(cells);
        return serde_json::to_string_pretty(&doc).expect("the matrix serialises") + "\n";
    }
    let list = |addrs: &[std::net::Ipv4Addr], port: u16| {
        if addrs.is_empty() {
            "-".to_string()
        } else {
            addrs
                .iter()
                .map(|a| format!("{a}:{port}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let port_rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                format!("{}:{}", p.cluster_ip, p.port),
                p.node_port.map_or("-".into(), |n| n.to_string()),
                list(&p.load_balancers, p.port),
                list(&p.external_ips, p.port),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|c| {
            vec![
                c.sender.clone(),
                c.entry.label.clone(),
                c.receivers(),
                c.source(),
                c.reply().to_string(),
            ]
        })
        .collect();
    table(&PORTS_HEADER, &port_rows, format) + "\n" + &table(&HEADER, &rows, format)
}

/// A table as aligned columns (text) or in markdown.
fn table(header: &[&str], rows: &[Vec<String>], format: &str) -> String {
    if format == "markdown" {
        let mut s = format!(
            "| {} |\n|{}\n",
            header.join(" | "),
            "---|".repeat(header.len())
        );
        for r in rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        return s;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |r: &[&str]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.push('\n');
        s
    };
    let mut s = line(header);
    for r in rows {
        s.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    s
}

/// Two modes side by side: the cells where they differ, and how many.
pub fn render_comparison(pairs: &[(Cell, Cell)], modes: [&str; 2], format: &str) -> String {
    let outcome = |c: &Cell| {
        format!(
            "{} | source {} | reply {}",
            c.receivers(),
            c.source(),
            c.reply()
        )
    };
    let differ: Vec<&(Cell, Cell)> = pairs
        .iter()
        .filter(|(x, y)| outcome(x) != outcome(y))
        .collect();
    match format {
        "json" => {
            let doc = ModeComparison::of(pairs, &differ, modes);
            serde_json::to_string_pretty(&doc).expect("the comparison serialises") + "\n"
        }
        "markdown" => {
            let mut s = format!(
                "| sender | entry point | {} | {} |\n|---|---|---|---|\n",
                modes[0], modes[1]
            );
            for (x, y) in &differ {
                s.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    x.sender,
                    x.entry.label,
                    outcome(x),
                    outcome(y)
                ));
            }
            s.push_str(&format!(
                "\n{} of {} cells differ\n",
                differ.len(),
                pairs.len()
            ));
            s
        }
        _ => {
            let mut s = String::new();
            for (x, y) in &differ {
                s.push_str(&format!(
                    "{} -> {}\n  {:<9} {}\n  {:<9} {}\n",
                    x.sender,
                    x.entry.label,
                    modes[0],
                    outcome(x),
                    modes[1],
                    outcome(y)
                ));
            }
            s.push_str(&format!(
                "{} of {} cells differ between {} and {} mode\n",
                differ.len(),
                pairs.len(),
                modes[0],
                modes[1]
            ));
            s
        }
    }
}

pub fn run(a: MatrixArgs) -> Result<i32, Fail> {
    let modes = super::modes(a.overrides.mode.as_deref())?;
    if modes.len() == 2 {
        let x = super::compiled_in(&a.scenario, &a.overrides, Some(modes[0]))?;
        let y = super::compiled_in(&a.scenario, &a.overrides, Some(modes[1]))?;
        let pairs = kpsim::matrix::side_by_side(&x, &y)
            .map_err(|e| Fail::input(format!("{}: {e}", a.scenario.display())))?;
        let text = render_comparison(&pairs, [modes[0].as_str(), modes[1].as_str()], &a.format);
        emit(a.output.as_deref(), text.as_bytes())?;
        return Ok(EXIT_OK);
    }
    if modes.len() > 2 {
        return Err(Fail::input("--mode: matrix compares at most two modes"));
    }
    let c = compiled(&a.scenario, &a.overrides)?;
    let cells = compute(&c).map_err(|e| Fail::input(format!("{}: {e}", a.scenario.display())))?;
    let ports = service_ports(&c);
    emit(
        a.output.as_deref(),
        render(&ports, &cells, &a.format).as_bytes(),
    )?;
    Ok(EXIT_OK)
}
