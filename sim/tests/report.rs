//! `kpsim report`, driven as users and CI drive it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn kpsim(args: &[&str], threads: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kpsim"));
    c.args(args).current_dir(root());
    if let Some(t) = threads {
        c.env("RAYON_NUM_THREADS", t);
    }
    c.output().expect("kpsim runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Per table: (rules, chains) as the `iptables-save` text lists them.
fn counted(text: &str) -> BTreeMap<String, (usize, usize)> {
    let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut table = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.to_string();
            out.entry(table.clone()).or_default();
        } else if line.starts_with("-A ") {
            out.get_mut(&table).unwrap().0 += 1;
        } else if line.starts_with(':') {
            out.get_mut(&table).unwrap().1 += 1;
        }
    }
    out
}

fn report(spec: &Path, out: &Path, threads: Option<&str>) {
    let o = kpsim(
        &[
            "report",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        threads,
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

fn csv_rows(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(dir.join("figures.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn a_base_only_report_counts_each_node_as_kpsim_rules_prints_it() {
    for scenario in [
        "nodeport-local-policy.yaml",
        "loadbalancer-source-ranges.yaml",
        "topology-aware-routing.yaml",
        "session-affinity.yaml",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        let base = root().join("scenarios").join(scenario);
        std::fs::write(
            &spec,
            format!("report: base-only\nbase: {}\n", base.display()),
        )
        .unwrap();
        let out = dir.path().join("out");
        report(&spec, &out, None);
        let rows = csv_rows(&out);
        assert!(!rows.is_empty());
        for row in rows {
            assert_eq!(row["point"], "base");
            let node = &row["node"];
            let o = kpsim(&["rules", base.to_str().unwrap(), "--node", node], None);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            let c = counted(&String::from_utf8_lossy(&o.stdout));
            let n = |k: &str| row[k].parse::<usize>().unwrap();
            assert_eq!(n("nat_rules"), c["nat"].0, "{scenario} {node} nat rules");
            assert_eq!(n("filter_rules"), c["filter"].0, "{scenario} {node}");
            assert_eq!(n("mangle_rules"), c["mangle"].0, "{scenario} {node}");
            assert_eq!(n("nat_chains"), c["nat"].1, "{scenario} {node}");
            assert_eq!(n("filter_chains"), c["filter"].1, "{scenario} {node}");
            // kube-proxy's own count leaves out the jumps from built-in
            // chains, which it ensures outside the restore.
            assert!(n("kube_proxy_nat_rules") < n("nat_rules"));
            let metrics = std::fs::read_to_string(
                out.join("metrics")
                    .join(format!("base__as-is__iptables__{node}.prom")),
            )
            .unwrap();
            assert!(metrics.contains(&format!(
                "kubeproxy_sync_proxy_rules_iptables_total{{ip_family=\"IPv4\",table=\"nat\"}} {}\n",
                row["kube_proxy_nat_rules"]
            )));
        }
    }
}

#[test]
fn output_is_the_same_with_one_thread_or_many() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "report: det\nshape:\n  services: 30\n  endpointsPerService: [1, 3]\n  nodes: 3\n  nodePortShare: 0.2\n  loadBalancerShare: 0.1\n  localShare: 0.5\nsweep:\n  services: [10, 30]\nvariants:\n  - name: a\n  - name: b\n    masqueradeAll: true\ntraffic:\n  nodeCPUs: 4\n  tcp: { connectionsPerSecond: 10, lifetime: 1s }\n",
    )
    .unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    report(&spec, &a, Some("1"));
    report(&spec, &b, Some("4"));
    let files = |d: &Path| -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for sub in ["", "charts", "metrics"] {
            for e in std::fs::read_dir(d.join(sub)).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                if p.is_file() && name != "timings.md" {
                    out.insert(format!("{sub}/{name}"), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    };
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        assert!(v == &fb[k], "{k} differs between 1 and 4 threads");
    }
    assert!(fa.contains_key("/report.md") && fa.contains_key("charts/rules.svg"));
}

#[test]
fn a_bad_spec_is_an_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "report: bad\nshape:\n  services: 10\n  endpointsPerService: 2\n  nodes: 2\n  flavour: spicy\n",
    )
    .unwrap();
    let o = kpsim(
        &[
            "report",
            spec.to_str().unwrap(),
            "--out",
            dir.path().join("o").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("spec.yaml:6:3"), "{e}");
    assert!(e.contains("flavour"), "{e}");
}

/// Needs root (network namespaces): `cargo test --test report -- --ignored`.
#[test]
#[ignore]
fn calibration_runs_on_this_kernel_and_records_where() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal.json");
    let o = kpsim(
        &["calibrate", "--quick", "--out", out.to_str().unwrap()],
        None,
    );
    let err = stderr(&o);
    if err.contains("cannot run here") {
        eprintln!("SKIPPED: {err}");
        return;
    }
    assert_eq!(o.status.code(), Some(0), "{err}");
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for key in ["kernel", "iptables", "cpu"] {
        assert!(!c["provenance"][key].as_str().unwrap().is_empty());
    }
    // Rules counted by kpsim grow with the service's place in
    // KUBE-SERVICES; restore inputs grow with the cluster.
    for (line, n) in [("connect", 3), ("restore", 3)] {
        let xs: Vec<f64> = c[line]["fitted"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["x"].as_f64().unwrap())
            .collect();
        assert_eq!(xs.len(), n);
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{line}: {xs:?}");
        assert_eq!(c[line]["held_out"].as_array().unwrap().len(), 1);
    }
}
