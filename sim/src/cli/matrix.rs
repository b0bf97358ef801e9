//! `kpsim matrix`.

use super::{compiled, emit, Fail, RulesOverride, EXIT_OK};
use kpsim::matrix::{compute, Cell};
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

pub fn render(cells: &[Cell], format: &str) -> String {
    let rows: Vec<[&str; 5]> = cells
        .iter()
        .map(|c| {
            [
                c.sender.as_str(),
                c.entry.as_str(),
                c.receivers.as_str(),
                c.source.as_str(),
                c.reply.as_str(),
            ]
        })
        .collect();
    match format {
        "json" => {
            let v: Vec<serde_json::Value> = cells
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "sender": c.sender, "entry": c.entry, "received_by": c.receivers,
                        "source_seen": c.source, "reply": c.reply,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&v).expect("JSON") + "\n"
        }
        "markdown" => {
            let mut s = format!("| {} |\n|{}\n", HEADER.join(" | "), "---|".repeat(5));
            for r in &rows {
                s.push_str(&format!("| {} |\n", r.join(" | ")));
            }
            s
        }
        _ => {
            let mut widths = HEADER.map(str::len);
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            let line = |r: &[&str; 5]| {
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
            let mut s = line(&HEADER);
            for r in &rows {
                s.push_str(&line(r));
            }
            s
        }
    }
}

pub fn run(a: MatrixArgs) -> Result<i32, Fail> {
    let c = compiled(&a.scenario, &a.overrides)?;
    let cells = compute(&c).map_err(|e| Fail::input(format!("{}: {e}", a.scenario.display())))?;
    emit(a.output.as_deref(), render(&cells, &a.format).as_bytes())?;
    Ok(EXIT_OK)
}
