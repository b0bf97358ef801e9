//! `kpsim check`: run scenarios' checks, for CI.
//!
//! Every `.yaml`/`.yml` file under the given folders is read. A file that
//! is not a scenario is an error naming it, unless a scenario of the same
//! run includes it (its `include:` or `kubeProxy.include`): then it is that
//! scenario's manifest, checked as part of it. One bad file does not stop
//! the others; the summary counts files that could not be run apart from
//! failed checks, and any of them makes the exit code 2.

use super::{emit, limits, Fail, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK};
use kpsim::check::{
    run_check, CheckDoc, CheckReport, CheckResult, FileReport, FileStatus, ReportSummary,
    SkippedCheck,
};
use kpsim::compile::compile;
use kpsim::scenario::{Loaded, ProxyMode, Scenario};
use kpsim::trace::text::Detail;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Scenario files, or folders searched for *.yaml / *.yml.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// text (one line per check, explanations for failures), junit (XML
    /// for CI systems) or json (see `kpsim schema check`).
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

/// Every YAML file under the paths, sorted; a path that does not exist is
/// an error.
fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Fail> {
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
            out.push(p);
        }
    }
    Ok(())
}

/// One file's result.
struct FileResult {
    path: PathBuf,
    status: FileStatus,
    scenario: Option<String>,
    /// (plain, rendered with source snippets)
    error: Option<(String, String)>,
    included_by: Option<String>,
    /// Each check run, its result, and its trace at the asked detail
    /// (empty for a pass unless `--verbose`).
    checks: Vec<(kpsim::scenario::Check, CheckResult, String)>,
    /// Checks not run: they state another kube-proxy mode's behaviour.
    skipped: Vec<SkippedCheck>,
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

type Loads = Vec<(PathBuf, Result<Loaded, kpsim::scenario::ScenarioError>)>;

/// Every YAML file under the paths, loaded as a scenario, and which
/// scenario of them includes which file (canonical path → includer).
fn load_all(paths: &[PathBuf]) -> Result<(Loads, BTreeMap<PathBuf, String>), Fail> {
    let loads: Loads = files(paths)?
        .into_iter()
        .map(|f| {
            let l = Scenario::load_with(&f, limits());
            (f, l)
        })
        .collect();
    let mut includers = BTreeMap::new();
    for (f, l) in &loads {
        if let Ok(l) = l {
            for inc in &l.included {
                includers
                    .entry(canonical(inc))
                    .or_insert_with(|| f.display().to_string());
            }
        }
    }
    Ok((loads, includers))
}

/// The files to run as scenarios: every YAML file under the paths except
/// the manifests a scenario among them includes.
pub fn scenario_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Fail> {
    let (loads, includers) = load_all(paths)?;
    Ok(loads
        .into_iter()
        .filter(|(f, l)| l.is_ok() || !includers.contains_key(&canonical(f)))
        .map(|(f, _)| f)
        .collect())
}

/// How to run each file's checks.
struct Run {
    detail: Detail,
    verbose: bool,
    mode: Option<ProxyMode>,
}

pub fn run(a: CheckArgs) -> Result<i32, Fail> {
    let how = Run {
        detail: a.detail.parse().map_err(Fail::input)?,
        verbose: a.verbose,
        mode: super::single_mode(a.mode.as_deref())?,
    };
    let (loads, includers) = load_all(&a.paths)?;
    let mut all = Vec::new();
    for (f, l) in loads {
        let mut fr = FileResult {
            path: f.clone(),
            status: FileStatus::Checked,
            scenario: None,
            error: None,
            included_by: None,
            checks: Vec::new(),
            skipped: Vec::new(),
        };
        match l {
            Err(e) => match includers.get(&canonical(&f)) {
                Some(by) => {
                    fr.status = FileStatus::Included;
                    fr.included_by = Some(by.clone());
                }
                None => {
                    fr.status = FileStatus::Error;
                    fr.error = Some((e.to_string(), e.render()));
                }
            },
            Ok(l) => {
                for w in &l.warnings {
                    eprintln!("{}", w.render(&f));
                }
                let mut s = l.scenario;
                s.path = f.clone();
                if let Some(m) = how.mode {
                    s.kube_proxy.mode = m;
                }
                fr.scenario = Some(s.name.clone());
                run_file(&mut fr, &s, &how);
            }
        }
        all.push(fr);
    }
    let summary = summarise(&all);
    let report = match a.format.as_str() {
        "junit" => junit(&all),
        "json" => json(&all, &summary),
        _ => text(&all, &summary, how.detail),
    };
    emit(a.output.as_deref(), report.as_bytes())?;
    if a.output.is_some() || a.format != "text" {
        eprintln!("{}", summary_line(&summary));
    }
    Ok(if summary.errors > 0 {
        EXIT_BAD_INPUT
    } else if summary.failed > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// Compile a loaded scenario and run its checks into `fr`; a check that
/// states another kube-proxy mode's behaviour (`modes:`) is skipped.
fn run_file(fr: &mut FileResult, s: &Scenario, how: &Run) {
    let f = fr.path.display().to_string();
    let c = match compile(s, &BTreeMap::new()) {
        Ok(c) => c,
        Err(e) => {
            let m = format!("{f}: {e}");
            fr.status = FileStatus::Error;
            fr.error = Some((m.clone(), m));
            return;
        }
    };
    let mode = c.scenario.kube_proxy.mode;
    for ch in &c.scenario.checks {
        if !ch.applies_in(mode) {
            fr.skipped.push(SkippedCheck {
                name: ch.name.clone(),
                modes: ch.modes.iter().map(|m| m.as_str().to_string()).collect(),
            });
            continue;
        }
        match run_check(&c, ch) {
            Ok(r) => {
                let trace = if !r.passed || how.verbose {
                    r.trace(&c, how.detail)
                } else {
                    String::new()
                };
                fr.checks.push((ch.clone(), r, trace));
            }
            Err(e) => {
                let m = format!("{f}: check {}: {e}", ch.name);
                fr.status = FileStatus::Error;
                fr.error = Some((m.clone(), m));
            }
        }
    }
}

fn summarise(all: &[FileResult]) -> ReportSummary {
    let checks = all.iter().flat_map(|f| &f.checks);
    ReportSummary {
        files: all.len(),
        checks: checks.clone().count(),
        passed: checks.clone().filter(|(_, r, _)| r.passed).count(),
        failed: checks.filter(|(_, r, _)| !r.passed).count(),
        skipped: all.iter().map(|f| f.skipped.len()).sum(),
        errors: all.iter().filter(|f| f.status == FileStatus::Error).count(),
    }
}

fn summary_line(s: &ReportSummary) -> String {
    let mut line = format!(
        "{}: {} passed, {} failed",
        counted(s.checks, "check"),
        s.passed,
        s.failed
    );
    if s.skipped > 0 {
        line.push_str(&format!(
            ", {} skipped (another mode's behaviour)",
            s.skipped
        ));
    }
    if s.errors > 0 {
        line.push_str(&format!(
            "; {} file{} could not be run",
            s.errors,
            if s.errors == 1 { "" } else { "s" }
        ));
    }
    line
}

fn text(all: &[FileResult], summary: &ReportSummary, detail: Detail) -> String {
    let mut s = String::new();
    for f in all {
        if let Some((_, rendered)) = &f.error {
            s.push_str(&format!("ERROR {}\n{rendered}\n", f.path.display()));
        }
        for k in &f.skipped {
            s.push_str(&format!(
                "SKIP  {}: {}   (states {} mode only)\n",
                f.scenario.as_deref().unwrap_or_default(),
                k.name,
                k.modes.join(", ")
            ));
        }
        for (_, r, trace) in &f.checks {
            if r.passed {
                s.push_str(&format!("PASS  {}: {}\n", r.scenario, r.check));
                s.push_str(&indent(trace));
            } else {
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
    s.push_str(&format!("\n{}\n", summary_line(summary)));
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

fn junit(all: &[FileResult]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("kpsim");
    for f in all.iter().filter(|f| f.status != FileStatus::Included) {
        let file = f.path.display().to_string();
        let name = f.scenario.clone().unwrap_or_else(|| file.clone());
        let mut suite = TestSuite::new(name.clone());
        suite.extra.insert("file".into(), file.into());
        if let Some((plain, _)) = &f.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status
                .set_message("bad input")
                .set_description(plain.clone());
            let mut case = TestCase::new("load", status);
            case.set_classname(name.clone());
            suite.add_test_case(case);
        }
        for k in &f.skipped {
            let mut status = TestCaseStatus::skipped();
            status.set_message(format!("states {} mode only", k.modes.join(", ")));
            let mut case = TestCase::new(k.name.clone(), status);
            case.set_classname(name.clone());
            suite.add_test_case(case);
        }
        for (_, r, trace) in &f.checks {
            let status = if r.passed {
                TestCaseStatus::success()
            } else {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(r.failures.join("; "))
                    .set_description(format!("{}\n\n{}", r.summary.join("\n"), trace));
                s
            };
            let mut case = TestCase::new(r.check.clone(), status);
            case.set_classname(name.clone());
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
    }
    report.to_string().expect("JUnit XML serialises")
}

fn json(all: &[FileResult], summary: &ReportSummary) -> String {
    let doc = CheckReport {
        summary: summary.clone(),
        files: all
            .iter()
            .map(|f| FileReport {
                file: f.path.display().to_string(),
                status: f.status,
                scenario: f.scenario.clone(),
                error: f.error.as_ref().map(|(plain, _)| plain.clone()),
                included_by: f.included_by.clone(),
                checks: f
                    .checks
                    .iter()
                    .map(|(c, r, _)| CheckDoc::of(c, r))
                    .collect(),
                skipped: f.skipped.clone(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).expect("the report serialises") + "\n"
}
