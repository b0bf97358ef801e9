//! Snapshots of every bundled scenario: each node's generated rules, the
//! matrix, the text trace of each check, and the JSON trace of each check as
//! the `kpsim` binary prints it. A change to rule generation,
//! the engine or the tracer shows up as a reviewable diff under the
//! top-level `snapshots/` folder.

use kpsim::check::run_check;
use kpsim::compile::compile;
use kpsim::scenario::Scenario;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn scenarios() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn matrix_text(c: &kpsim::compile::Compiled) -> String {
    kpsim::matrix::compute(c)
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} -> {}: {} | source {} | reply {}\n",
                c.sender,
                c.entry.label,
                c.receivers(),
                c.source(),
                c.reply()
            )
        })
        .collect()
}

#[test]
fn bundled_scenarios() {
    let files = scenarios();
    assert!(files.len() >= 15, "the scenario library is missing");
    for f in files {
        let loaded = Scenario::load(&f).unwrap_or_else(|e| panic!("{e}"));
        let s = loaded.scenario;
        let c = compile(&s, &BTreeMap::new()).unwrap();
        let name = s.name.clone();
        insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
            for (i, node) in s.nodes.iter().enumerate() {
                let rules = c.rules(i);
                insta::assert_snapshot!(format!("{name}__rules__{}", node.name), rules.to_iptables_save());
            }
            insta::assert_snapshot!(format!("{name}__matrix"), matrix_text(&c));
            for (i, check) in s.checks.iter().enumerate() {
                let r = run_check(&c, check).unwrap();
                assert!(r.passed, "{name}: {}: {:?}", check.name, r.failures);
                insta::assert_snapshot!(format!("{name}__check{}", i + 1), format!("# {}\n{}", check.name, r.trace));
            }
        });
    }
}

/// `kpsim trace --format json` for every check of every bundled scenario,
/// run through the binary as a tool would.
#[test]
fn json_traces_of_every_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in scenarios() {
        let s = Scenario::load(&f)
            .unwrap_or_else(|e| panic!("{e}"))
            .scenario;
        let name = s.name.clone();
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
        insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
            for (i, check) in s.checks.iter().enumerate() {
                let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
                    .current_dir(&root)
                    .args(["trace", rel.to_str().unwrap(), "--from", &check.from, "--to", &check.to, "--format", "json"])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
                let text = String::from_utf8(o.stdout).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).expect("valid JSON");
                insta::assert_snapshot!(format!("{name}__check{}__json", i + 1), text);
            }
        });
    }
}
