//! Snapshots of every bundled scenario: each node's generated rules, the
//! matrix, the text trace of each check, and the JSON trace of each check as
//! the `kpsim` binary prints it. A change to rule generation,
//! the engine or the tracer shows up as a reviewable diff under the
//! top-level `snapshots/` folder.

use kpsim::check::run_check;
use kpsim::compile::compile;
use kpsim::scenario::Scenario;
use kpsim::trace::text::Detail;
use std::collections::BTreeMap;
use std::path::PathBuf;

mod common;
use common::scenario_files as scenarios;

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
                if !check.applies_in(s.kube_proxy.mode) {
                    continue;
                }
                let r = run_check(&c, check).unwrap();
                assert!(r.passed, "{name}: {}: {:?}", check.name, r.failures);
                insta::assert_snapshot!(format!("{name}__check{}", i + 1), format!("# {}\n{}", check.name, r.trace(&c, Detail::Full)));
                for detail in [Detail::Summary, Detail::Minimal] {
                    insta::assert_snapshot!(
                        format!("{name}__check{}__{}", i + 1, detail.as_str()),
                        format!("# {}\n{}", check.name, r.trace(&c, detail))
                    );
                }
            }
        });
    }
}

/// The same scenarios with kube-proxy in nftables mode: each node's
/// `ip kube-proxy` table as `nft list ruleset` prints it, the matrix and
/// the full and minimal text trace of each check (every check must pass in
/// both modes).
#[test]
fn bundled_scenarios_in_nftables_mode() {
    for f in scenarios() {
        let mut s = Scenario::load(&f)
            .unwrap_or_else(|e| panic!("{e}"))
            .scenario;
        s.kube_proxy.mode = kpsim::scenario::ProxyMode::Nftables;
        let c = compile(&s, &BTreeMap::new()).unwrap();
        let name = s.name.clone();
        insta::with_settings!({snapshot_path => "../../snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
            for (i, node) in s.nodes.iter().enumerate() {
                let rules = c.nft_rules(i).expect("nftables mode");
                insta::assert_snapshot!(format!("{name}__nftables__rules__{}", node.name), rules.to_nft());
            }
            insta::assert_snapshot!(format!("{name}__nftables__matrix"), matrix_text(&c));
            for (i, check) in s.checks.iter().enumerate() {
                if !check.applies_in(kpsim::scenario::ProxyMode::Nftables) {
                    continue;
                }
                let r = run_check(&c, check).unwrap();
                assert!(r.passed, "{name} (nftables): {}: {:?}", check.name, r.failures);
                insta::assert_snapshot!(format!("{name}__nftables__check{}", i + 1), format!("# {}\n{}", check.name, r.trace(&c, Detail::Full)));
                insta::assert_snapshot!(
                    format!("{name}__nftables__check{}__minimal", i + 1),
                    format!("# {}\n{}", check.name, r.trace(&c, Detail::Minimal))
                );
            }
        });
    }
}

/// `kpsim schema NAME`, as a validator.
fn schema(name: &str) -> jsonschema::Validator {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
        .current_dir(&root)
        .args(["schema", name])
        .output()
        .unwrap();
    assert!(o.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

/// Every error of `doc` against `v`, in words.
fn violations(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// `kpsim trace --format json` for every check of every bundled scenario,
/// run through the binary as a tool would; each validates against `kpsim
/// schema trace`.
#[test]
fn json_traces_of_every_check() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let trace_schema = schema("trace");
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
                let doc = serde_json::from_str::<serde_json::Value>(&text).expect("valid JSON");
                let errors = violations(&trace_schema, &doc);
                assert!(errors.is_empty(), "{name} check {}: {errors:#?}", i + 1);
                insta::assert_snapshot!(format!("{name}__check{}__json", i + 1), text);
            }
        });
    }
}

/// In nftables mode too (map lookups, numgen draws, base chains at their
/// priorities), every check's JSON trace validates against `kpsim schema
/// trace`, and the two modes' comparison against `kpsim schema
/// matrix-modes`.
#[test]
fn json_of_nftables_mode_fits_the_schemas() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
            .current_dir(&root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&o.stdout).expect("valid JSON")
    };
    let trace_schema = schema("trace");
    let modes_schema = schema("matrix-modes");
    for f in scenarios() {
        let s = Scenario::load(&f)
            .unwrap_or_else(|e| panic!("{e}"))
            .scenario;
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
        let rel = rel.to_str().unwrap();
        for check in &s.checks {
            let doc = run(&[
                "trace",
                rel,
                "--from",
                &check.from,
                "--to",
                &check.to,
                "--mode",
                "nftables",
                "--format",
                "json",
            ]);
            let errors = violations(&trace_schema, &doc);
            assert!(errors.is_empty(), "{rel}: {}: {errors:#?}", check.name);
        }
        let doc = run(&[
            "matrix",
            rel,
            "--mode",
            "iptables,nftables",
            "--format",
            "json",
        ]);
        let errors = violations(&modes_schema, &doc);
        assert!(errors.is_empty(), "{rel}: {errors:#?}");
    }
}

/// The schemas do judge: a document with a field missing or of the wrong
/// kind is refused.
#[test]
fn the_trace_schema_refuses_what_does_not_fit() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
        .current_dir(&root)
        .args([
            "trace",
            "scenarios/three-endpoints.yaml",
            "--from",
            "client-a",
            "--to",
            "web:80",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let v = schema("trace");
    assert!(violations(&v, &doc).is_empty());
    let mut missing = doc.clone();
    missing["outcomes"][0]
        .as_object_mut()
        .unwrap()
        .remove("verdict");
    assert!(!violations(&v, &missing).is_empty());
    let mut wrong = doc.clone();
    wrong["outcomes"][0]["verdict"] = serde_json::json!("Nat(Dnat(..))");
    assert!(!violations(&v, &wrong).is_empty());
    let mut text_port = doc;
    text_port["flow"]["src"] = serde_json::json!("10.244.1.5:40000");
    assert!(!violations(&v, &text_port).is_empty());
}

/// `matrix --format json` and `check --format json` of every bundled
/// scenario validate against their schemas.
#[test]
fn json_matrices_and_reports_fit_their_schemas() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let matrix_schema = schema("matrix");
    for f in scenarios() {
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_path_buf();
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
            .current_dir(&root)
            .args(["matrix", rel.to_str().unwrap(), "--format", "json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let errors = violations(&matrix_schema, &doc);
        assert!(errors.is_empty(), "{}: {errors:#?}", rel.display());
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kpsim"))
        .current_dir(&root)
        .args(["check", "scenarios/", "--format", "json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let errors = violations(&schema("check"), &doc);
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(doc["summary"]["failed"], 0);
    assert!(doc["summary"]["checks"].as_u64().unwrap() >= 40);
}
