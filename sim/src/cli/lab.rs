//! `kpsim lab`: replay scenarios on the real kernel and compare.

use super::{check::scenario_files, compiled, Fail, RulesOverride, EXIT_FAILED, EXIT_OK};
use kpsim::lab::{self, ScenarioReport};
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Scenario files or folders (every YAML file under a folder, except
    /// manifests that a scenario among them includes).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also list every flow that agreed, with the kernel's counts.
    #[arg(long)]
    verbose: bool,
    /// Exit with 1 instead of 0 when the machine cannot run the lab (for
    /// a CI job that must run it).
    #[arg(long)]
    require: bool,
    /// Also probe the entry points where kube-proxy's modes differ (node
    /// ports on other node addresses and on 127.0.0.1, unused cluster-IP
    /// ports, an unallocated service address).
    #[arg(long)]
    corners: bool,
    /// Load a node dump into both kpsim and the kernel (as in `trace`):
    /// checks that kpsim reads a live node's rules as the kernel runs them.
    #[command(flatten)]
    overrides: RulesOverride,
}

pub fn run(a: LabArgs) -> Result<i32, Fail> {
    let files = scenario_files(&a.paths)?;
    if let Some(why) = lab::unavailable() {
        println!("lab SKIPPED: {why}; nothing was compared");
        return Ok(if a.require { EXIT_FAILED } else { EXIT_OK });
    }
    lab::catch_interrupt();
    let mut failed = false;
    let mut totals = (0usize, 0usize, 0usize, 0usize);
    for f in files {
        let c = compiled(&f, &a.overrides)?;
        let opts = lab::Options {
            corners: a.corners,
            ..Default::default()
        };
        let report = lab::run(&c, &opts).map_err(|e| Fail {
            code: EXIT_FAILED,
            message: format!("{}: lab: {e}", f.display()),
        })?;
        let (text, counts) = render(&f.display().to_string(), &report, a.verbose);
        print!("{text}");
        totals.0 += counts.0;
        totals.1 += counts.1;
        totals.2 += counts.2;
        totals.3 += counts.3;
        failed |= counts.2 > 0;
    }
    println!(
        "lab total: {} flows compared, {} agreed, {} disagreed, {} skipped",
        totals.0, totals.1, totals.2, totals.3
    );
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// One scenario's table; returns (compared, agreed, disagreed, skipped).
fn render(file: &str, r: &ScenarioReport, verbose: bool) -> (String, (usize, usize, usize, usize)) {
    let mut out = String::new();
    let compared = r.flows.iter().filter(|f| f.agreement.is_some()).count();
    let agreed = r.flows.iter().filter(|f| f.agrees()).count();
    let skipped = r.flows.len() - compared;
    let disagreed = compared - agreed;
    let _ = writeln!(
        out,
        "{file}: {compared} flows compared, {agreed} agreed, {disagreed} disagreed, {skipped} skipped"
    );
    for f in &r.flows {
        match (&f.agreement, &f.skipped) {
            (Some(a), _) if !a.problems.is_empty() || verbose => {
                let mark = if a.problems.is_empty() {
                    "ok  "
                } else {
                    "DIFF"
                };
                let _ = writeln!(out, "  {mark} {} ({} tries)", f.label, a.tries);
                for p in &a.problems {
                    let _ = writeln!(out, "       {p}");
                }
                if !a.problems.is_empty() || verbose {
                    for (o, p) in &f.predicted {
                        let _ = writeln!(out, "       kpsim:  {o}  p={p:.4}");
                    }
                    for (o, n) in &a.seen {
                        let _ = writeln!(out, "       kernel: {o}  x{n}");
                    }
                }
            }
            (None, Some(why)) => {
                let _ = writeln!(out, "  skip {} ({why})", f.label);
            }
            _ => {}
        }
    }
    (out, (compared, agreed, disagreed, skipped))
}
