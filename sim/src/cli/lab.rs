//! `kpsim lab`: replay scenarios on the real kernel and compare.

use super::{check::scenario_files, compiled, Fail, RulesOverride, EXIT_FAILED, EXIT_OK};
use kpsim::lab::{self, ScenarioReport};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

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
    /// How many scenarios are replayed at once, each in namespaces of its
    /// own. The lab mostly waits on the kernel (namespace set-up, probes
    /// that must time out to show a drop), so a few at a time finish
    /// sooner even on one core; output stays in file order.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
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
    in_file_order(
        &files,
        a.jobs.into(),
        |f| replay(f, &a),
        |result| {
            let report = result?;
            let (text, counts) = report;
            print!("{text}");
            totals.0 += counts.0;
            totals.1 += counts.1;
            totals.2 += counts.2;
            totals.3 += counts.3;
            failed |= counts.2 > 0;
            Ok(())
        },
    )?;
    println!(
        "lab total: {} flows compared, {} agreed, {} disagreed, {} skipped",
        totals.0, totals.1, totals.2, totals.3
    );
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

type Counts = (usize, usize, usize, usize);

/// Compile one scenario and replay it on the kernel: its rendered table and
/// counts.
fn replay(f: &Path, a: &LabArgs) -> Result<(String, Counts), Fail> {
    let c = compiled(f, &a.overrides)?;
    let opts = lab::Options {
        corners: a.corners,
        ..Default::default()
    };
    let report = lab::run(&c, &opts).map_err(|e| Fail {
        code: EXIT_FAILED,
        message: format!("{}: lab: {e}", f.display()),
    })?;
    Ok(render(&f.display().to_string(), &report, a.verbose))
}

/// Run `work` on every item with up to `jobs` threads, handing each result
/// to `emit` in the items' order as soon as it and all before it are done.
/// The first error `emit` returns ends the run (work already started
/// finishes; nothing new starts).
fn in_file_order<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> R + Sync,
    mut emit: impl FnMut(R) -> Result<(), Fail>,
) -> Result<(), Fail> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, R)>();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            let tx = tx.clone();
            let (next, stop, work) = (&next, &stop, &work);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= items.len() || stop.load(Ordering::SeqCst) {
                    break;
                }
                if tx.send((i, work(&items[i]))).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut due = 0;
        for (i, r) in rx {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&due) {
                due += 1;
                if let Err(e) = emit(r) {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
        Ok(())
    })
}

/// One scenario's table; returns (compared, agreed, disagreed, skipped).
fn render(file: &str, r: &ScenarioReport, verbose: bool) -> (String, Counts) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn results_come_out_in_item_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..12).collect();
        let mut seen = Vec::new();
        // Early items take longest, so later ones finish first.
        in_file_order(
            &items,
            4,
            |&i| {
                std::thread::sleep(std::time::Duration::from_millis(5 * (12 - i)));
                i * 10
            },
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..12).map(|i| i * 10).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_error_ends_the_run_and_nothing_new_starts() {
        let items: Vec<usize> = (0..50).collect();
        let started = Mutex::new(Vec::new());
        let mut emitted = Vec::new();
        let r = in_file_order(
            &items,
            2,
            |&i| {
                started.lock().unwrap().push(i);
                std::thread::sleep(std::time::Duration::from_millis(2));
                i
            },
            |i| {
                emitted.push(i);
                if i == 3 {
                    Err(Fail {
                        code: EXIT_FAILED,
                        message: "stop".into(),
                    })
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(r.unwrap_err().message, "stop");
        assert_eq!(emitted, vec![0, 1, 2, 3]);
        assert!(
            started.lock().unwrap().len() < 50,
            "work went on after the error"
        );
    }
}
