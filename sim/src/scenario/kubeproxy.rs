//! The KubeProxyConfiguration kube-proxy runs with: what the scenario
//! gives, with kube-proxy v1.34's defaults filled in
//! (`pkg/proxy/apis/config/v1alpha1/defaults.go`, then
//! `platformApplyDefaults` choosing iptables mode), in the v1alpha1 shape
//! a configuration file has. The fields kpsim models are written from what
//! it models (so the view shows what the rules were generated from); the
//! others as given, or their defaults.

use super::{DetectLocalMode, KubeProxy, Limits, Scenario};
use serde_json::{json, Map, Value};

/// kube-proxy's defaults for the fields kpsim does not model.
fn defaults() -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "bindAddress": "0.0.0.0",
        "bindAddressHardFail": false,
        "clientConnection": {
            "acceptContentTypes": "",
            "burst": 10,
            "contentType": "application/vnd.kubernetes.protobuf",
            "kubeconfig": "",
            "qps": 5,
        },
        "configSyncPeriod": "15m0s",
        "enableProfiling": false,
        "featureGates": {},
        "healthzBindAddress": "0.0.0.0:10256",
        "hostnameOverride": "",
        "iptables": {"minSyncPeriod": "1s", "syncPeriod": "30s"},
        "ipvs": {
            "excludeCIDRs": null,
            "minSyncPeriod": "0s",
            "scheduler": "",
            "strictARP": false,
            "syncPeriod": "30s",
            "tcpFinTimeout": "0s",
            "tcpTimeout": "0s",
            "udpTimeout": "0s",
        },
        "logging": {
            "flushFrequency": "5s",
            "format": "text",
            "options": {"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}},
            "verbosity": 0,
        },
        "metricsBindAddress": "127.0.0.1:10249",
        "nftables": {
            "masqueradeAll": false,
            "masqueradeBit": 14,
            "minSyncPeriod": "1s",
            "syncPeriod": "30s",
        },
        "oomScoreAdj": -999,
        "portRange": "",
        "showHiddenMetricsForVersion": "",
        "winkernel": {
            "enableDSR": false,
            "forwardHealthCheckVip": false,
            "networkName": "",
            "rootHnsEndpointName": "",
            "sourceVip": "",
        },
    })
}

/// `over` merged into `base`, objects key by key.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The configuration as given, in the v1alpha1 shape: kpsim's own
/// `include` key dropped, a `linux:` section (the internal type's layout,
/// which kpsim also reads) moved to where v1alpha1 keeps its fields.
fn as_v1alpha1(given: &Value) -> Value {
    let Value::Object(m) = given else {
        return json!({});
    };
    let kept: Map<String, Value> = m
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "include" | "linux" | "masqueradeAll"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut v = Value::Object(kept);
    if let Some(linux) = m.get("linux") {
        if let Some(c) = linux.get("conntrack") {
            merge(&mut v, &json!({ "conntrack": c }));
        }
        if let Some(o) = linux.get("oomScoreAdj") {
            merge(&mut v, &json!({ "oomScoreAdj": o }));
        }
    }
    v
}

/// A duration as Go prints it (`time.Duration.String`): `24h0m0s`,
/// `15m0s`, `30s`, `0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// The scenario's kube-proxy configuration as written (its `kubeProxy:`
/// section, or the file it includes), read again from the scenario's file
/// only when asked: loading keeps the typed settings, not the text.
pub fn as_written(s: &Scenario) -> Result<Value, String> {
    let read = |path: &std::path::Path| -> Result<Value, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_saphyr::from_str_with_options(&text, Limits::default().options())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let section = read(&s.path)?.get("kubeProxy").cloned().unwrap_or_default();
    match section.get("include").and_then(Value::as_str) {
        Some(inc) => {
            let base = s.path.parent().unwrap_or(std::path::Path::new("."));
            read(&base.join(inc))
        }
        None => Ok(section),
    }
}

/// The effective configuration of `kp`, `given` being the configuration
/// as written ([`as_written`]) for the fields kpsim does not model.
pub fn effective(kp: &KubeProxy, given: &Value) -> Value {
    let mut v = defaults();
    merge(&mut v, &as_v1alpha1(given));
    let ct = &kp.conntrack;
    let npa: Vec<String> = if kp.node_port_primary {
        vec!["primary".into()]
    } else {
        kp.node_port_addresses
            .iter()
            .map(|n| n.to_string())
            .collect()
    };
    let modelled = json!({
        "mode": kp.mode.as_str(),
        "clusterCIDR": kp.cluster_cidr.map(|c| c.to_string()).unwrap_or_default(),
        "detectLocalMode": match kp.detect_local_mode {
            DetectLocalMode::ClusterCidr => "ClusterCIDR",
            DetectLocalMode::NodeCidr => "NodeCIDR",
            DetectLocalMode::BridgeInterface => "BridgeInterface",
            DetectLocalMode::InterfaceNamePrefix => "InterfaceNamePrefix",
        },
        "detectLocal": {
            "bridgeInterface": detect_local_setting(
                kp, given, "bridgeInterface", DetectLocalMode::BridgeInterface,
                &kp.bridge_interface,
            ),
            "interfaceNamePrefix": detect_local_setting(
                kp, given, "interfaceNamePrefix", DetectLocalMode::InterfaceNamePrefix,
                &kp.interface_name_prefix,
            ),
        },
        "iptables": {
            "masqueradeAll": kp.masquerade_all,
            "masqueradeBit": kp.masquerade_bit,
            "localhostNodePorts": kp.localhost_node_ports,
        },
        "nftables": {
            "masqueradeAll": kp.nftables_masquerade_all,
            "masqueradeBit": kp.nftables_masquerade_bit,
        },
        "nodePortAddresses": if npa.is_empty() { Value::Null } else { json!(npa) },
        "conntrack": {
            "maxPerCore": ct.max_per_core,
            "min": ct.min,
            "tcpBeLiberal": ct.tcp_be_liberal,
            "tcpCloseWaitTimeout": go_duration(ct.tcp_close_wait_timeout),
            "tcpEstablishedTimeout": go_duration(ct.tcp_established_timeout),
            "udpStreamTimeout": go_duration(ct.udp_stream_timeout),
            "udpTimeout": go_duration(ct.udp_timeout),
        },
    });
    merge(&mut v, &modelled);
    v
}

/// A `detectLocal` field as kube-proxy holds it: only what was given;
/// kpsim's own default (`cni0`, `veth`) stands in for an unset one only in
/// the mode that uses it.
fn detect_local_setting(
    kp: &KubeProxy,
    given: &Value,
    field: &str,
    mode: DetectLocalMode,
    ours: &str,
) -> String {
    let given = given.pointer(&format!("/detectLocal/{field}"));
    match given.and_then(Value::as_str) {
        Some(v) => v.to_string(),
        None if kp.detect_local_mode == mode => ours.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_print_as_go_does() {
        assert_eq!(go_duration(86400), "24h0m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(900), "15m0s");
        assert_eq!(go_duration(30), "30s");
        assert_eq!(go_duration(0), "0s");
    }

    #[test]
    fn defaults_filled_in_given_fields_kept() {
        let kp = KubeProxy::defaults("10.244.0.0/16".parse().unwrap());
        let given = json!({"metricsBindAddress": "0.0.0.0:10249", "include": "x.yaml",
            "linux": {"oomScoreAdj": -500}});
        let v = effective(&kp, &given);
        assert_eq!(v["metricsBindAddress"], "0.0.0.0:10249");
        assert_eq!(v["oomScoreAdj"], -500);
        assert_eq!(v["healthzBindAddress"], "0.0.0.0:10256");
        assert_eq!(v["conntrack"]["tcpEstablishedTimeout"], "24h0m0s");
        assert_eq!(v["iptables"]["syncPeriod"], "30s");
        assert_eq!(v["iptables"]["localhostNodePorts"], true);
        assert_eq!(v["clusterCIDR"], "10.244.0.0/16");
        assert_eq!(v["mode"], "iptables");
        assert!(v.get("include").is_none() && v.get("linux").is_none());
    }
}
