//! `kpsim config`: the configuration kube-proxy runs with, and the kernel
//! settings each node has.

use super::{emit, load, node_index, Fail, EXIT_OK};
use kpsim::compile::kube_proxy_sysctls;
use kpsim::network::sysctl::{node_defaults, Sysctl};
use kpsim::scenario::{kubeproxy, NodeDef, Scenario};
use serde_json::json;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ConfigArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Only this node's kernel settings (default: every node's).
    #[arg(long)]
    node: Option<String>,
    /// yaml (the configuration file, settings as comments) or json.
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
    format: String,
}

pub fn run(a: ConfigArgs) -> Result<i32, Fail> {
    let s = load(&a.scenario)?;
    let nodes: Vec<&NodeDef> = match &a.node {
        Some(n) => vec![&s.nodes[node_index(&s, n)?]],
        None => s.nodes.iter().collect(),
    };
    let given = kubeproxy::as_written(&s).map_err(Fail::input)?;
    let config = kubeproxy::effective(&s.kube_proxy, &given);
    let text = match a.format.as_str() {
        "json" => {
            let nodes: Vec<serde_json::Value> = nodes
                .iter()
                .map(|n| json!({"name": n.name, "sysctls": settings(&s, n)}))
                .collect();
            let doc = json!({"kubeProxyConfiguration": config, "nodes": nodes});
            serde_json::to_string_pretty(&doc).expect("JSON values serialize") + "\n"
        }
        _ => yaml(&s, &config, &nodes)?,
    };
    emit(None, text.as_bytes())?;
    Ok(EXIT_OK)
}

/// Every setting of the node: the model's own, then kube-proxy's.
fn settings(s: &Scenario, n: &NodeDef) -> Vec<Sysctl> {
    let mut v = node_defaults();
    v.extend(kube_proxy_sysctls(s, n));
    v
}

fn yaml(s: &Scenario, config: &serde_json::Value, nodes: &[&NodeDef]) -> Result<String, Fail> {
    let body = serde_saphyr::to_string(config)
        .map_err(|e| Fail::input(format!("cannot write the configuration as YAML: {e}")))?;
    let mut out = format!(
        "# kube-proxy {} ({} mode) of scenario {}: what the scenario sets, the\n# defaults filled in, as a KubeProxyConfiguration file holds it.\n",
        kpsim::proxier::KUBE_PROXY_VERSION,
        s.kube_proxy.mode.as_str(),
        s.name
    );
    out.push_str(&body);
    for n in nodes {
        let _ = writeln!(out, "# {}: kernel settings (sysctl -w)", n.name);
        for st in settings(s, n) {
            let value = st.value.as_deref().unwrap_or("?");
            let _ = writeln!(
                out,
                "#   {} = {value}    ({}: {})",
                st.key, st.set_by, st.why
            );
        }
    }
    Ok(out)
}
