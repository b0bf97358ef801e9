//! What the API server and the CNI hand out, and refuse: node ports and
//! health-check node ports come from one pool (the API server's node-port
//! allocator, `pkg/registry/core/service/storage/alloc.go`), and a pod may
//! not take an address its node's bridge or its pod CIDR reserves.
//!
//! Allocation is deterministic where the API server's is random: services
//! in (namespace, name) order, each taking the lowest free port of the
//! range, its node ports first, then its health-check node port.

use super::{FieldPath, Origin, Problems};
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;

/// Who holds a port of the pool: the service and the field.
type Holder = (String, String);

/// The node-port pool of one cluster.
struct Pool {
    range: (u16, u16),
    taken: BTreeMap<i32, Holder>,
    next: i32,
}

impl Pool {
    fn new(range: (u16, u16)) -> Pool {
        Pool {
            range,
            taken: BTreeMap::new(),
            next: i32::from(range.0),
        }
    }

    /// Claim `port` for `holder`; the error names who has it.
    fn claim(&mut self, port: i32, holder: Holder) -> Result<(), String> {
        if port < i32::from(self.range.0) || port > i32::from(self.range.1) {
            return Err(format!(
                "is outside the node port range {}-{}",
                self.range.0, self.range.1
            ));
        }
        match self.taken.get(&port) {
            Some((svc, field)) => Err(format!("is already allocated to {svc} ({field})")),
            None => {
                self.taken.insert(port, holder);
                Ok(())
            }
        }
    }

    /// The lowest free port, claimed for `holder`.
    fn next_free(&mut self, holder: Holder) -> Option<i32> {
        while self.taken.contains_key(&self.next) {
            self.next += 1;
        }
        (self.next <= i32::from(self.range.1)).then(|| {
            self.taken.insert(self.next, holder);
            self.next
        })
    }
}

/// Whether the service gets node ports allocated: NodePort, and
/// LoadBalancer unless `allocateLoadBalancerNodePorts: false`.
fn allocates_node_ports(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => true,
        Some("LoadBalancer") => spec
            .and_then(|s| s.allocate_load_balancer_node_ports)
            .unwrap_or(true),
        _ => false,
    }
}

/// Whether the service needs a health-check node port: LoadBalancer with
/// `externalTrafficPolicy: Local`.
fn needs_health_check_port(svc: &Service) -> bool {
    let spec = svc.spec.as_ref();
    spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
        && spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local")
}

/// Node ports and health-check node ports of every service (in the given
/// order): the given ones claimed first, each refused when out of range or
/// already held (naming the holder), then the missing ones allocated.
pub fn node_ports(
    p: &mut Problems,
    services: &mut [(Service, Origin)],
    name: impl Fn(&Service) -> String,
    range: (u16, u16),
) {
    let mut pool = Pool::new(range);
    for (svc, l) in services.iter() {
        claim_given(p, &mut pool, svc, l, &name(svc));
    }
    for (svc, l) in services.iter_mut() {
        let n = name(svc);
        let full = |p: &mut Problems, what: &str| {
            p.at_origin(
                l,
                format!(
                    "service {n}: no free node port left in {}-{} for {what}",
                    range.0, range.1
                ),
            )
        };
        let allocate = allocates_node_ports(svc);
        let needs_hc = needs_health_check_port(svc);
        let spec = svc.spec.get_or_insert_with(Default::default);
        if allocate {
            for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
                if port.node_port.is_none() {
                    let field = format!("spec.ports[{i}].nodePort");
                    match pool.next_free((n.clone(), field.clone())) {
                        Some(np) => port.node_port = Some(np),
                        None => full(p, &field),
                    }
                }
            }
        }
        if needs_hc && spec.health_check_node_port.unwrap_or(0) == 0 {
            let field = "spec.healthCheckNodePort".to_string();
            match pool.next_free((n.clone(), field.clone())) {
                Some(hc) => spec.health_check_node_port = Some(hc),
                None => full(p, &field),
            }
        }
    }
}

/// Claim the ports a service names. A node port shared by two ports of
/// the same service with different protocols is one allocation. Whether a
/// health-check node port may be set at all is the API server's rule
/// (`validation`); a misplaced one is not claimed here.
fn claim_given(p: &mut Problems, pool: &mut Pool, svc: &Service, l: &Origin, name: &str) {
    let Some(spec) = &svc.spec else {
        return;
    };
    let spec_at = FieldPath::default().key("spec");
    let mut own: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let Some(np) = port.node_port else {
            continue;
        };
        let at = spec_at.key("ports").index(i).key("nodePort");
        let field = at.to_string();
        let proto = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let protos = own.entry(np).or_default();
        if protos.contains(&proto) {
            p.field(
                l,
                &at,
                format!("service {name}: {field} {np} is used twice for {proto}"),
            );
            continue;
        }
        let first = protos.is_empty();
        protos.push(proto);
        if first {
            if let Err(e) = pool.claim(np, (name.to_string(), field.clone())) {
                p.field(l, &at, format!("service {name}: {field} {np} {e}"));
            }
        }
    }
    if let Some(hc) = spec.health_check_node_port.filter(|hc| *hc != 0) {
        let at = spec_at.key("healthCheckNodePort");
        let field = at.to_string();
        if needs_health_check_port(svc) {
            if let Err(e) = pool.claim(hc, (name.to_string(), field.clone())) {
                p.field(l, &at, format!("service {name}: {field} {hc} {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_names_the_holder_and_hands_out_the_lowest_free_port() {
        let mut pool = Pool::new((30000, 30002));
        let h = |s: &str| ("default/web".to_string(), s.to_string());
        assert!(pool.claim(30000, h("spec.healthCheckNodePort")).is_ok());
        let e = pool.claim(30000, h("spec.ports[0].nodePort")).unwrap_err();
        assert_eq!(
            e,
            "is already allocated to default/web (spec.healthCheckNodePort)"
        );
        assert!(pool.claim(40000, h("x")).unwrap_err().contains("outside"));
        assert_eq!(pool.next_free(h("a")), Some(30001));
        assert_eq!(pool.next_free(h("b")), Some(30002));
        assert_eq!(pool.next_free(h("c")), None);
    }
}
