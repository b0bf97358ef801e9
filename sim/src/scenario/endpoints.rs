//! What the EndpointSlice controller would create for services with a
//! selector and no EndpointSlice of their own (`pkg/controller/endpointslice`):
//!
//! * pods in the service's namespace whose labels match the selector, that
//!   are scheduled and have an IP (running pods; terminating ones too, with
//!   their conditions);
//! * conditions: `serving` = the pod is Ready; `terminating` = it has a
//!   deletion timestamp; `ready` = `publishNotReadyAddresses` or (serving
//!   and not terminating);
//! * ports: each service port's `targetPort`, a number as is, a name
//!   resolved against the pod's container ports (pods without that port are
//!   left out of that port's slice), no targetPort = the port itself;
//!   endpoints that resolve to the same port set share a slice, at most 100
//!   per slice;
//! * `nodeName` and `zone` (the node's zone label) on each endpoint; the
//!   slice carries `kubernetes.io/service-name` and
//!   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`.
//!
//! Slices are named `<service>-<n>` (the controller uses random suffixes;
//! kpsim's are deterministic).

use super::{Origin, PodDef, Problems};
use foldhash::fast::FixedState;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// The controller's maximum endpoints per slice (`--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Derived slices for every selector service without explicit slices.
pub(crate) fn derive(
    services: &[(Service, Origin)],
    explicit: &[EndpointSlice],
    pods: &[PodDef],
    p: &mut Problems,
) -> Vec<EndpointSlice> {
    let by_label = LabelIndex::new(pods);
    let with_slices: std::collections::BTreeSet<(&str, &str)> = explicit
        .iter()
        .filter_map(|s| {
            let svc = s
                .metadata
                .labels
                .as_ref()?
                .get("kubernetes.io/service-name")?;
            Some((
                s.metadata.namespace.as_deref().unwrap_or("default"),
                svc.as_str(),
            ))
        })
        .collect();
    // Services are independent: derived in parallel, gathered (and their
    // warnings given) in service order.
    let derived: Vec<(Option<String>, Vec<EndpointSlice>)> = services
        .par_iter()
        .map(|(svc, _)| service_slices(svc, &with_slices, &by_label))
        .collect();
    let mut out = Vec::new();
    for ((warning, slices), (_, l)) in derived.into_iter().zip(services) {
        if let Some(w) = warning {
            p.warn_at(l, w);
        }
        out.extend(slices);
    }
    out
}

/// The slices the controller makes for `svc` (none when it has slices of
/// its own or no selector), and a warning when its selector matches no
/// pod.
fn service_slices(
    svc: &Service,
    with_slices: &std::collections::BTreeSet<(&str, &str)>,
    by_label: &LabelIndex,
) -> (Option<String>, Vec<EndpointSlice>) {
    let mut out = Vec::new();
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    if with_slices.contains(&(ns, name)) {
        return (None, out);
    }
    let Some(spec) = &svc.spec else {
        return (None, out);
    };
    let Some(selector) = spec.selector.as_ref().filter(|s| !s.is_empty()) else {
        return (None, out);
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return (None, out);
    }
    let matching = by_label.matching(ns, selector);
    let warning = matching
        .is_empty()
        .then(|| format!("service {ns}/{name}: selector matches no pod"));
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    // Group endpoints by their resolved port set.
    let mut groups: BTreeMap<Vec<(String, i32, String)>, Vec<Endpoint>> = BTreeMap::new();
    for pd in &matching {
        let ports: Vec<(String, i32, String)> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let proto = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                let port = match &sp.target_port {
                    None => sp.port,
                    Some(IntOrString::Int(n)) => *n,
                    Some(IntOrString::String(named)) => match named.parse::<i32>() {
                        Ok(n) => n,
                        Err(_) => pd
                            .ports
                            .iter()
                            .find(|(n, _, pr)| {
                                n.as_deref() == Some(named.as_str())
                                    && pr.eq_ignore_ascii_case(&proto)
                            })
                            .map(|(_, port, _)| i32::from(*port))?,
                    },
                };
                Some((sp.name.clone().unwrap_or_default(), port, proto))
            })
            .collect();
        if ports.is_empty() {
            continue;
        }
        let serving = pd.ready;
        let terminating = pd.terminating;
        let ready = publish || (serving && !terminating);
        groups.entry(ports).or_default().push(Endpoint {
            addresses: vec![pd.ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            node_name: Some(pd.node.clone()),
            zone: None,
            target_ref: Some(k8s_openapi::api::core::v1::ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pd.name.clone()),
                namespace: Some(pd.namespace.clone()),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let mut n = 0;
    for (ports, eps) in groups {
        for chunk in in_chunks(eps, MAX_ENDPOINTS_PER_SLICE) {
            n += 1;
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{n}")),
                    namespace: Some(ns.to_string()),
                    labels: Some(BTreeMap::from([
                        ("kubernetes.io/service-name".to_string(), name.to_string()),
                        (
                            "endpointslice.kubernetes.io/managed-by".to_string(),
                            "endpointslice-controller.k8s.io".to_string(),
                        ),
                    ])),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: chunk,
                ports: Some(
                    ports
                        .iter()
                        .map(|(pn, port, proto)| EndpointPort {
                            name: Some(pn.clone()),
                            port: Some(*port),
                            protocol: Some(proto.clone()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            });
        }
    }
    (warning, out)
}

/// `items` cut into runs of at most `size`, in order, moved rather than
/// copied.
fn in_chunks<T>(mut items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut out = Vec::with_capacity(items.len().div_ceil(size));
    while items.len() > size {
        let rest = items.split_off(size);
        out.push(std::mem::replace(&mut items, rest));
    }
    if !items.is_empty() {
        out.push(items);
    }
    out
}

/// Fill in each endpoint's zone from its node (the controller copies the
/// node's `topology.kubernetes.io/zone` label).
pub fn set_zones(slices: &mut [EndpointSlice], zone_of: impl Fn(&str) -> Option<String>) {
    for s in slices {
        for e in &mut s.endpoints {
            if e.zone.is_none() {
                e.zone = e.node_name.as_deref().and_then(&zone_of);
            }
        }
    }
}

/// Topology hints the controller writes for `spec.trafficDistribution`
/// (the `trafficdist` heuristics): `PreferClose`/`PreferSameZone` hint each
/// endpoint to its own zone; `PreferSameNode` hints it to its own node and
/// zone. Endpoints without a zone get no zone hint (kube-proxy then ignores
/// zone hints for the whole service). The `topology-mode: Auto` annotation's
/// CPU-proportional allocation is not derived: give such slices explicitly.
pub fn set_hints(slices: &mut [EndpointSlice], services: &[Service]) {
    // Services by (namespace, name), the first of each: a slice finds its
    // own in a lookup (clusters have thousands of both).
    let mut by_name: HashMap<(&str, Option<&str>), &Service, FixedState> = HashMap::default();
    for svc in services {
        let key = (
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            svc.metadata.name.as_deref(),
        );
        by_name.entry(key).or_insert(svc);
    }
    for s in slices {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        let name = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"));
        let Some(svc) = by_name.get(&(ns, name.map(String::as_str))) else {
            continue;
        };
        let mode = svc
            .spec
            .as_ref()
            .and_then(|sp| sp.traffic_distribution.as_deref());
        let same_node = match mode {
            Some("PreferClose" | "PreferSameZone") => false,
            Some("PreferSameNode") => true,
            _ => continue,
        };
        for e in &mut s.endpoints {
            let hints = k8s_openapi::api::discovery::v1::EndpointHints {
                for_zones: e
                    .zone
                    .clone()
                    .map(|name| vec![k8s_openapi::api::discovery::v1::ForZone { name }]),
                for_nodes: e
                    .node_name
                    .clone()
                    .filter(|_| same_node)
                    .map(|name| vec![k8s_openapi::api::discovery::v1::ForNode { name }]),
            };
            if hints.for_zones.is_some() || hints.for_nodes.is_some() {
                e.hints = Some(hints);
            }
        }
    }
}

/// Pods by (namespace, label key, label value), so a selector looks at the
/// pods carrying its first label instead of every pod.
struct LabelIndex<'a> {
    pods: &'a [PodDef],
    by: HashMap<(&'a str, &'a str, &'a str), Vec<usize>, FixedState>,
}

impl<'a> LabelIndex<'a> {
    fn new(pods: &'a [PodDef]) -> LabelIndex<'a> {
        let mut by: HashMap<(&str, &str, &str), Vec<usize>, FixedState> = HashMap::default();
        for (i, pd) in pods.iter().enumerate() {
            for (k, v) in &pd.labels {
                by.entry((pd.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(i);
            }
        }
        LabelIndex { pods, by }
    }

    /// Pods of `ns` whose labels match every pair of `selector`, in
    /// declaration order.
    fn matching(&self, ns: &str, selector: &BTreeMap<String, String>) -> Vec<&'a PodDef> {
        let Some((k, v)) = selector.iter().next() else {
            return Vec::new();
        };
        self.by
            .get(&(ns, k.as_str(), v.as_str()))
            .into_iter()
            .flatten()
            .map(|&i| &self.pods[i])
            .filter(|pd| selector.iter().all(|(k, v)| pd.labels.get(k) == Some(v)))
            .collect()
    }
}
