//! `kpsim check`: run scenarios' checks, for CI.

use super::{emit, load, Fail, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use kpsim::check::{run_check, CheckResult};
use kpsim::compile::compile;
use kpsim::trace::text::Detail;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Scenario files, or folders searched for *.yaml / *.yml.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// text (one line per check, explanations for failures), junit (XML
    /// for CI systems) or json.
    #[arg(long, default_value = "text", value_parser = ["text", "junit", "json"])]
    format: String,
    /// Write the report to this file (text still summarises on stderr).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also print the trace of passing checks.
    #[arg(long)]
    verbose: bool,
    /// How much of each trace to print: one line per host (minimal), the
    /// hooks that did something with their deciding rules (summary), or
    /// every hook, table and rule (full).
    #[arg(long, default_value = "summary", value_parser = ["minimal", "summary", "full"])]
    detail: String,
    /// kube-proxy's mode, iptables or nftables, instead of each scenario's
    /// `kubeProxy.mode`.
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
}

/// Every scenario file under the paths, sorted.
pub fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Fail> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out).map_err(|e| Fail::input(format!("{}: {e}", p.display())))?;
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(Fail::input(format!(
                "{}: no such file or folder",
                p.display()
            )));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
            // Included manifests live in subfolders named like `manifests`;
            // a scenario file has a top-level `scenario:` key.
            let text = std::fs::read_to_string(&p)?;
            if text.lines().any(|l| l.starts_with("scenario:")) {
                out.push(p);
            }
        }
    }
    Ok(())
}

struct FileResult {
    path: PathBuf,
    results: Vec<CheckResult>,
    /// Checks not run: they state another kube-proxy mode's behaviour
    /// (name, and the modes they are for).
    skipped: Vec<(String, String)>,
    /// Per result, its trace at the asked detail (empty for a pass when
    /// not `--verbose`).
    traces: Vec<String>,
    error: Option<String>,
}

pub fn run(a: CheckArgs) -> Result<i32, Fail> {
    let detail: Detail = a.detail.parse().map_err(Fail::input)?;
    let files = files(&a.paths)?;
    let mode = super::single_mode(a.mode.as_deref())?;
    let mut all = Vec::new();
    let mut bad_input = false;
    for f in &files {
        let mut fr = FileResult {
            path: f.clone(),
            results: Vec::new(),
            skipped: Vec::new(),
            traces: Vec::new(),
            error: None,
        };
        match load(f).and_then(|mut s| {
            if let Some(m) = mode {
                s.kube_proxy.mode = m;
            }
            compile(&s, &BTreeMap::new()).map_err(|e| Fail::input(format!("{}: {e}", f.display())))
        }) {
            Err(e) => {
                bad_input = true;
                fr.error = Some(e.message);
            }
            Ok(c) => {
                let mode = c.scenario.kube_proxy.mode;
                for ch in &c.scenario.checks {
                    if !ch.applies_in(mode) {
                        let modes: Vec<&str> = ch.modes.iter().map(|m| m.as_str()).collect();
                        fr.skipped.push((
                            format!("{}: {}", c.scenario.name, ch.name),
                            modes.join(", "),
                        ));
                        continue;
                    }
                    match run_check(&c, ch) {
                        Ok(r) => {
                            let shown = !r.passed || a.verbose;
                            fr.traces.push(if shown {
                                r.trace(&c, detail)
                            } else {
                                String::new()
                            });
                            fr.results.push(r);
                        }
                        Err(e) => {
                            bad_input = true;
                            fr.error = Some(format!("{}: check {:?}: {e}", f.display(), ch.name));
                        }
                    }
                }
            }
        }
        all.push(fr);
    }
    let failed = all
        .iter()
        .flat_map(|f| &f.results)
        .filter(|r| !r.passed)
        .count();
    let total = all.iter().map(|f| f.results.len()).sum::<usize>();
    let report = match a.format.as_str() {
        "junit" => junit(&all),
        "json" => json(&all),
        _ => text(&all, a.verbose, detail),
    };
    emit(a.output.as_deref(), report.as_bytes())?;
    if a.output.is_some() || a.format != "text" {
        eprintln!(
            "{}, {failed} failed, {}",
            counted(total, "check"),
            counted(files.len(), "file")
        );
    }
    Ok(if bad_input {
        EXIT_BAD_INPUT
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

fn text(all: &[FileResult], verbose: bool, detail: Detail) -> String {
    let mut s = String::new();
    let (mut pass, mut fail) = (0, 0);
    for f in all {
        if let Some(e) = &f.error {
            s.push_str(&format!("ERROR {}\n{e}\n", f.path.display()));
        }
        for (check, modes) in &f.skipped {
            s.push_str(&format!("SKIP  {check}   (states {modes} mode only)\n"));
        }
        for (r, trace) in f.results.iter().zip(&f.traces) {
            if r.passed {
                pass += 1;
                s.push_str(&format!("PASS  {}: {}\n", r.scenario, r.check));
                if verbose {
                    s.push_str(&indent(trace));
                }
            } else {
                fail += 1;
                s.push_str(&format!(
                    "FAIL  {}: {}   ({})\n",
                    r.scenario,
                    r.check,
                    f.path.display()
                ));
                for x in &r.failures {
                    s.push_str(&format!("      - {x}\n"));
                }
                // Summary and minimal traces open with the results.
                if detail == Detail::Full {
                    s.push_str("      what happened:\n");
                    for x in &r.summary {
                        s.push_str(&format!("        {x}\n"));
                    }
                }
                s.push_str("      trace:\n");
                s.push_str(&indent(trace));
            }
        }
    }
    let skipped: usize = all.iter().map(|f| f.skipped.len()).sum();
    let skipped = if skipped > 0 {
        format!(", {skipped} skipped (another mode's behaviour)")
    } else {
        String::new()
    };
    s.push_str(&format!(
        "\n{}: {pass} passed, {fail} failed{skipped}\n",
        counted(pass + fail, "check")
    ));
    s
}

/// `1 check`, `2 checks`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn indent(t: &str) -> String {
    t.lines().map(|l| format!("        {l}\n")).collect()
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn junit(all: &[FileResult]) -> String {
    let total: usize = all
        .iter()
        .map(|f| f.results.len() + usize::from(f.error.is_some()))
        .sum();
    let failures: usize = all
        .iter()
        .flat_map(|f| &f.results)
        .filter(|r| !r.passed)
        .count();
    let errors: usize = all.iter().filter(|f| f.error.is_some()).count();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kpsim\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\">\n"
    );
    for f in all {
        let name = f
            .results
            .first()
            .map(|r| r.scenario.clone())
            .unwrap_or_else(|| f.path.display().to_string());
        let fails = f.results.iter().filter(|r| !r.passed).count();
        s.push_str(&format!(
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{fails}\" errors=\"{}\">\n",
            xml(&name),
            xml(&f.path.display().to_string()),
            f.results.len() + usize::from(f.error.is_some()),
            usize::from(f.error.is_some())
        ));
        if let Some(e) = &f.error {
            s.push_str(&format!(
                "    <testcase name=\"load\" classname=\"{}\"><error message=\"bad input\">{}</error></testcase>\n",
                xml(&name),
                xml(e)
            ));
        }
        for (r, trace) in f.results.iter().zip(&f.traces) {
            s.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\">",
                xml(&r.check),
                xml(&name)
            ));
            if !r.passed {
                s.push_str(&format!(
                    "<failure message=\"{}\">{}</failure>",
                    xml(&r.failures.join("; ")),
                    xml(&format!("{}\n\n{}", r.summary.join("\n"), trace))
                ));
            }
            s.push_str("</testcase>\n");
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

fn json(all: &[FileResult]) -> String {
    let v: Vec<serde_json::Value> = all
        .iter()
        .map(|f| {
            serde_json::json!({
                "file": f.path.display().to_string(),
                "error": f.error,
                "checks": f.results.iter().map(|r| serde_json::json!({
                    "scenario": r.scenario, "check": r.check, "passed": r.passed,
                    "failures": r.failures, "outcomes": r.summary,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&v).expect("JSON") + "\n"
}
