//! Chain names, hashed exactly as kube-proxy hashes them.
//!
//! kube-proxy names a service port's chains `PREFIX-` + the first 16
//! characters of the standard (padded, upper-case) base32 encoding of
//! `sha256(servicePortName + protocol)`, where `servicePortName` is
//! `namespace/name:portName` (`namespace/name` for an unnamed port) and
//! `protocol` is lower case (`tcp`). Endpoint chains hash
//! `servicePortName + protocol + "ip:port"`. Iptables chain names are
//! limited to 28 characters; `KUBE-SVC-` plus 16 is 25.

use sha2::{Digest, Sha256};

fn hash16(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    let encoded = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
    encoded[..16].to_string()
}

/// `namespace/name:port` (no `:` for an unnamed port), as
/// `ServicePortName.String()` prints it.
pub fn service_port_name(namespace: &str, name: &str, port_name: &str) -> String {
    if port_name.is_empty() {
        format!("{namespace}/{name}")
    } else {
        format!("{namespace}/{name}:{port_name}")
    }
}

fn port_proto_hash(spn: &str, protocol: &str) -> String {
    hash16(&format!("{spn}{protocol}"))
}

/// `KUBE-SVC-…`: the Cluster traffic policy chain.
pub fn svc_chain(spn: &str, protocol: &str) -> String {
    format!("KUBE-SVC-{}", port_proto_hash(spn, protocol))
}

/// `KUBE-SVL-…`: the Local traffic policy chain.
pub fn svl_chain(spn: &str, protocol: &str) -> String {
    format!("KUBE-SVL-{}", port_proto_hash(spn, protocol))
}

/// `KUBE-EXT-…`: the external destinations chain.
pub fn ext_chain(spn: &str, protocol: &str) -> String {
    format!("KUBE-EXT-{}", port_proto_hash(spn, protocol))
}

/// `KUBE-FW-…`: the load balancer source ranges chain.
pub fn fw_chain(spn: &str, protocol: &str) -> String {
    format!("KUBE-FW-{}", port_proto_hash(spn, protocol))
}

/// `KUBE-SEP-…`: one endpoint's chain; `endpoint` is `ip:port`.
pub fn sep_chain(spn: &str, protocol: &str, endpoint: &str) -> String {
    format!("KUBE-SEP-{}", hash16(&format!("{spn}{protocol}{endpoint}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names that appear in kube-proxy's own unit tests (proxier_test.go,
    /// TestOverallIPTablesRules and friends) for the same inputs.
    #[test]
    fn hashes_match_upstream_test_expectations() {
        let spn = service_port_name("ns1", "svc1", "p80");
        assert_eq!(spn, "ns1/svc1:p80");
        assert_eq!(svc_chain(&spn, "tcp"), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(ext_chain(&spn, "tcp"), "KUBE-EXT-XPGD46QRK7WJZT7O");
        assert_eq!(
            sep_chain(&spn, "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
        let spn2 = service_port_name("ns2", "svc2", "p80");
        assert_eq!(svc_chain(&spn2, "tcp"), "KUBE-SVC-GNZBNJ2PO5MGZ6GT");
    }

    #[test]
    fn unnamed_port_has_no_colon() {
        assert_eq!(service_port_name("default", "web", ""), "default/web");
    }
}

/// nftables mode's chain and set names: `PREFIX` + the first 8
/// characters of base32(sha256(base)) + `-` + base, where the base is
/// `namespace/name/protocol/portName` (`hashAndTruncate` in
/// `pkg/proxy/nftables/proxier.go`; truncated with `...` past 240
/// characters, which IPv4 names never reach).
pub mod nft {
    use sha2::{Digest, Sha256};

    fn hash_and_truncate(name: &str) -> String {
        let digest = Sha256::digest(name.as_bytes());
        let encoded = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest);
        let mut out = format!("{}-{name}", &encoded[..8]);
        const MAX: usize = 256 - 16;
        if out.len() > MAX {
            out.truncate(MAX - 3);
            out.push_str("...");
        }
        out
    }

    /// `HASH-namespace/name/protocol/portName`.
    pub fn service_base(namespace: &str, name: &str, protocol: &str, port_name: &str) -> String {
        hash_and_truncate(&format!("{namespace}/{name}/{protocol}/{port_name}"))
    }

    /// `HASH-namespace/name/protocol/portName__ip/port`.
    pub fn endpoint_base(
        namespace: &str,
        name: &str,
        protocol: &str,
        port_name: &str,
        ip: std::net::Ipv4Addr,
        port: u16,
    ) -> String {
        hash_and_truncate(&format!(
            "{namespace}/{name}/{protocol}/{port_name}__{ip}/{port}"
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Names upstream's TestOverallNFTablesRules expects.
        #[test]
        fn hashes_match_upstream_test_expectations() {
            assert_eq!(
                format!("service-{}", service_base("ns1", "svc1", "tcp", "p80")),
                "service-ULMVA6XW-ns1/svc1/tcp/p80"
            );
            assert_eq!(
                format!(
                    "endpoint-{}",
                    endpoint_base(
                        "ns1",
                        "svc1",
                        "tcp",
                        "p80",
                        "10.180.0.1".parse().unwrap(),
                        80
                    )
                ),
                "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
            );
            assert_eq!(
                format!("service-{}", service_base("ns2", "svc2", "tcp", "p80")),
                "service-42NFTM6N-ns2/svc2/tcp/p80"
            );
            assert_eq!(
                format!(
                    "affinity-{}",
                    endpoint_base(
                        "ns5",
                        "svc5",
                        "tcp",
                        "p80",
                        "10.180.0.3".parse().unwrap(),
                        80
                    )
                ),
                "affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"
            );
            assert_eq!(
                format!("firewall-{}", service_base("ns5", "svc5", "tcp", "p80")),
                "firewall-HVFWP5L3-ns5/svc5/tcp/p80"
            );
        }
    }
}
