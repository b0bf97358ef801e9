//! Kubernetes API objects in a scenario: `objects:` entries and `include:`
//! files (multi-document YAML, `kind: List` wrappers), read into
//! k8s-openapi types by apiVersion and kind, exactly as
//! `kubectl get -o yaml` prints them.

use super::raw::{RawKubeProxy, RawScenario, S};
use super::{syntax_error, Loc, NodeDef, PodDef, Problems, ScenarioError};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::path::{Path, PathBuf};

/// The objects found, each with the place in the scenario that brought it.
#[derive(Default)]
pub struct Objects {
    pub services: Vec<(Service, Loc)>,
    pub slices: Vec<EndpointSlice>,
    pub pods: Vec<(PodDef, Loc)>,
    pub nodes: Vec<(NodeDef, Loc)>,
    pub kube_proxy: Option<RawKubeProxy>,
    /// The included KubeProxyConfiguration as written.
    pub kube_proxy_given: Option<serde_json::Value>,
}

/// Kinds kpsim reads, with the apiVersion each must have.
const KINDS: &[(&str, &str)] = &[
    ("Service", "v1"),
    ("Pod", "v1"),
    ("Node", "v1"),
    ("EndpointSlice", "discovery.k8s.io/v1"),
    ("List", "v1"),
    ("KubeProxyConfiguration", "kubeproxy.config.k8s.io/v1alpha1"),
];

pub fn collect_objects(
    raw: &RawScenario,
    base: &Path,
    path: &Path,
    p: &mut Problems,
) -> Result<Objects, ScenarioError> {
    let mut out = Objects::default();
    for o in &raw.objects {
        let l = Loc::from_location(&o.referenced);
        add_value(&o.value, &l, &mut out, p);
    }
    let mut stack = vec![canonical(path)];
    for inc in &raw.include {
        include(inc, base, &mut stack, &mut out, p)?;
    }
    if let Some(kp) = &raw.kube_proxy {
        if let Some(inc) = &kp.value.include {
            let file = base.join(&inc.value);
            let text = read(&file, inc, p);
            if let Some(text) = text {
                let parsed: RawKubeProxy =
                    serde_saphyr::from_str_with_options(&text, super::yaml_options())
                        .map_err(|e| syntax_error(&file, &text, &e))?;
                out.kube_proxy = Some(parsed);
                out.kube_proxy_given =
                    serde_saphyr::from_str_with_options(&text, super::yaml_options()).ok();
            }
        }
    }
    Ok(out)
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn read(file: &Path, at: &S<String>, p: &mut Problems) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) => {
            p.err(at, format!("include: cannot read {}: {e}", file.display()));
            None
        }
    }
}

fn include(
    inc: &S<String>,
    base: &Path,
    stack: &mut Vec<PathBuf>,
    out: &mut Objects,
    p: &mut Problems,
) -> Result<(), ScenarioError> {
    let file = base.join(&inc.value);
    let canon = canonical(&file);
    if stack.contains(&canon) {
        p.err(
            inc,
            format!(
                "include cycle: {} is already being included",
                file.display()
            ),
        );
        return Ok(());
    }
    let Some(text) = read(&file, inc, p) else {
        return Ok(());
    };
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple_with_options(&text, super::yaml_options())
            .map_err(|e| syntax_error(&file, &text, &e))?;
    let l = Loc::from_location(&inc.referenced);
    stack.push(canon);
    for d in docs {
        if d.is_null() {
            continue;
        }
        // A document that is itself a list of includes.
        if let Some(nested) = d.get("include").and_then(|v| v.as_array()) {
            let nested_base = file.parent().unwrap_or(Path::new(".")).to_path_buf();
            for n in nested {
                if let Some(s) = n.as_str() {
                    let spanned = S {
                        value: s.to_string(),
                        referenced: inc.referenced,
                        defined: inc.defined,
                    };
                    include(&spanned, &nested_base, stack, out, p)?;
                }
            }
            continue;
        }
        add_value(&d, &l, out, p);
    }
    stack.pop();
    Ok(())
}

fn add_value(v: &serde_json::Value, l: &Loc, out: &mut Objects, p: &mut Problems) {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api = v.get("apiVersion").and_then(|k| k.as_str()).unwrap_or("");
    let name = v
        .pointer("/metadata/name")
        .and_then(|k| k.as_str())
        .unwrap_or("?");
    match KINDS.iter().find(|(k, _)| *k == kind) {
        None => {
            p.warn(Some(l.clone()), format!("skipping {kind} {name} ({api}): kpsim reads Service, EndpointSlice, Pod, Node and List objects"));
            return;
        }
        Some((_, want)) if *want != api => {
            p.at(
                l,
                format!("{kind} {name}: apiVersion {api:?} is not supported (expected {want})"),
            );
            return;
        }
        _ => {}
    }
    macro_rules! typed {
        ($t:ty) => {
            match serde_json::from_value::<$t>(v.clone()) {
                Ok(x) => x,
                Err(e) => {
                    p.at(l, format!("{kind} {name}: {e}"));
                    return;
                }
            }
        };
    }
    match kind {
        "List" => {
            for item in v
                .get("items")
                .and_then(|i| i.as_array())
                .into_iter()
                .flatten()
            {
                add_value(item, l, out, p);
            }
        }
        "Service" => out.services.push((typed!(Service), l.clone())),
        "EndpointSlice" => out.slices.push(typed!(EndpointSlice)),
        "Pod" => {
            let pod = typed!(Pod);
            if let Some(pd) = pod_def(&pod, l, p) {
                out.pods.push((pd, l.clone()));
            }
        }
        "Node" => {
            let node = typed!(Node);
            if let Some(nd) = node_def(&node, l, p) {
                out.nodes.push((nd, l.clone()));
            }
        }
        "KubeProxyConfiguration" => match serde_json::from_value::<RawKubeProxy>(v.clone()) {
            Ok(k) => out.kube_proxy = Some(k),
            Err(e) => p.at(l, format!("KubeProxyConfiguration: {e}")),
        },
        _ => {}
    }
}

/// A Pod object as the simulator sees it: node from spec.nodeName, IP from
/// status.podIP, ready from the Ready condition, terminating from
/// metadata.deletionTimestamp.
fn pod_def(pod: &Pod, l: &Loc, p: &mut Problems) -> Option<PodDef> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref()?;
    let status = pod.status.clone().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        p.warn(
            Some(l.clone()),
            format!(
                "pod {name}: phase {} — not running, skipped",
                status.phase.unwrap_or_default()
            ),
        );
        return None;
    }
    let Some(node) = spec.node_name.clone() else {
        p.warn(
            Some(l.clone()),
            format!("pod {name}: not scheduled (no spec.nodeName), skipped"),
        );
        return None;
    };
    let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
        p.warn(
            Some(l.clone()),
            format!("pod {name}: no IPv4 status.podIP yet, skipped"),
        );
        return None;
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|cp| {
            (
                cp.name.clone(),
                cp.container_port.clamp(0, 65535) as u16,
                cp.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect();
    Some(PodDef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name,
        node,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        ready,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        host_network: spec.host_network.unwrap_or(false),
        ports,
    })
}

/// A Node object: InternalIP, spec.podCIDR, the zone label; its other
/// IPv4 addresses (a second InternalIP, ExternalIPs) and its CPU count
/// (`status.capacity.cpu`).
fn node_def(node: &Node, l: &Loc, p: &mut Problems) -> Option<NodeDef> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let status = node.status.as_ref();
    let ipv4 = |types: &[&str]| -> Vec<std::net::Ipv4Addr> {
        status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| types.contains(&a.type_.as_str()))
            .filter_map(|a| a.address.parse().ok())
            .collect()
    };
    let internal = ipv4(&["InternalIP"]);
    let address = internal.first().copied();
    let pod_cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok());
    let (Some(address), Some(pod_cidr)) = (address, pod_cidr) else {
        p.at(l, format!("Node {name}: needs an IPv4 InternalIP in status.addresses and an IPv4 spec.podCIDR"));
        return None;
    };
    let mut extra_addresses: Vec<std::net::Ipv4Addr> = internal[1..].to_vec();
    for a in ipv4(&["ExternalIP"]) {
        if a != address && !extra_addresses.contains(&a) {
            extra_addresses.push(a);
        }
    }
    let cpus = status
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("cpu"))
        .map(|q| q.0.as_str());
    let cpus = match cpus {
        None => None,
        Some(q) => match cpu_count(q) {
            Some(n) => Some(n),
            None => {
                p.at(
                    l,
                    format!("Node {name}: status.capacity.cpu {q:?} is not a whole number of CPUs"),
                );
                None
            }
        },
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    Some(NodeDef {
        zone: labels.get("topology.kubernetes.io/zone").cloned(),
        name,
        address,
        extra_addresses,
        pod_cidr: pod_cidr.trunc(),
        labels,
        cpus,
    })
}

/// A CPU quantity as kubelet reports capacity: `4`, or `4000m`.
fn cpu_count(q: &str) -> Option<u32> {
    match q.strip_suffix('m') {
        Some(milli) => milli
            .parse::<u32>()
            .ok()
            .filter(|m| m % 1000 == 0 && *m > 0)
            .map(|m| m / 1000),
        None => q.parse().ok().filter(|n| *n > 0),
    }
}
