//! `kpsim matrix`.

use super::{compiled, emit, Fail, RulesOverride, EXIT_OK};
use kpsim::matrix::{compute, Cell, MatrixDocument};
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
    let texts: Vec<[String; 5]> = cells
        .iter()
        .map(|c| {
            [
                c.sender.clone(),
                c.entry.label.clone(),
                c.receivers(),
                c.source(),
                c.reply().to_string(),
            ]
        })
        .collect();
    let rows: Vec<[&str; 5]> = texts
        .iter()
        .map(|r| [&*r[0], &*r[1], &*r[2], &*r[3], &*r[4]])
        .collect();
    match format {
        "json" => {
            let doc = MatrixDocument::of(cells);
            serde_json::to_string_pretty(&doc).expect("the matrix serialises") + "\n"
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
