//! Chain names, hashed exactly as kube-proxy hashes them.
//!
//! kube-proxy names a service port's chains `PREFIX-` + the first 16
//! characters of the standard (padded, upper-case) base32 encoding of
//! `sha256(servicePortName + protocol)`, where `servicePortName` is
//! `namespace/name:portName` (`namespace/name` for an unnamed port) and
//! `protocol` is lower case (`tcp`). Endpoint chains hash
//! `servicePortName + protocol + "ip:port"`. Iptables chain names are
//! limited to 28 characters; `KUBE-SVC-` plus 16 is 25.
//!
//! A cluster has tens of thousands of these names, so they are made
//! without the strings upstream builds on the way: the pieces are fed to
//! SHA-256 one after the other (the digest of a concatenation), and only
//! the digest bytes the kept characters come from are encoded (5 bytes
//! make 8 base32 characters, and padding only ever ends the encoding).

use sha2::{Digest, Sha256};

/// RFC 4648's base32 alphabet.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// The first `N` characters (a multiple of 8) of the base32 encoding of
/// `bytes`, which must hold the `N / 8 * 5` bytes they encode.
fn base32_head<const N: usize>(bytes: &[u8]) -> [u8; N] {
    const { assert!(N.is_multiple_of(8), "whole 5-byte groups") };
    let mut out = [0u8; N];
    for (chars, group) in out.chunks_exact_mut(8).zip(bytes.chunks_exact(5)) {
        let bits = group.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        for (i, c) in chars.iter_mut().enumerate() {
            *c = BASE32[(bits >> (35 - 5 * i)) as usize & 31];
        }
    }
    out
}

/// The first `N` base32 characters of the SHA-256 of the concatenated
/// `pieces`.
fn hash_head<const N: usize>(pieces: &[&str]) -> [u8; N] {
    let mut sha = Sha256::new();
    for piece in pieces {
        sha.update(piece.as_bytes());
    }
    base32_head(&sha.finalize())
}

/// `prefix` followed by the hash characters.
fn named(prefix: &str, hash: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len() + hash.len());
    out.push_str(prefix);
    out.push_str(std::str::from_utf8(hash).expect("base32 is ASCII"));
    out
}

/// `namespace/name:port` (no `:` for an unnamed port), as
/// `ServicePortName.String()` prints it.
pub fn service_port_name(namespace: &str, name: &str, port_name: &str) -> String {
    let mut out = String::with_capacity(namespace.len() + name.len() + port_name.len() + 2);
    out.push_str(namespace);
    out.push('/');
    out.push_str(name);
    if !port_name.is_empty() {
        out.push(':');
        out.push_str(port_name);
    }
    out
}

/// The hash a service port's chains are named by (`servicePortName` +
/// protocol), worked out once for its four chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortHash([u8; 16]);

impl PortHash {
    pub fn new(spn: &str, protocol: &str) -> PortHash {
        PortHash(hash_head(&[spn, protocol]))
    }

    /// `KUBE-SVC-…`: the Cluster traffic policy chain.
    pub fn svc(&self) -> String {
        named("KUBE-SVC-", &self.0)
    }

    /// `KUBE-SVL-…`: the Local traffic policy chain.
    pub fn svl(&self) -> String {
        named("KUBE-SVL-", &self.0)
    }

    /// `KUBE-EXT-…`: the external destinations chain.
    pub fn ext(&self) -> String {
        named("KUBE-EXT-", &self.0)
    }

    /// `KUBE-FW-…`: the load balancer source ranges chain.
    pub fn fw(&self) -> String {
        named("KUBE-FW-", &self.0)
    }
}

/// `KUBE-SVC-…`: the Cluster traffic policy chain.
pub fn svc_chain(spn: &str, protocol: &str) -> String {
    PortHash::new(spn, protocol).svc()
}

/// `KUBE-SVL-…`: the Local traffic policy chain.
pub fn svl_chain(spn: &str, protocol: &str) -> String {
    PortHash::new(spn, protocol).svl()
}

/// `KUBE-EXT-…`: the external destinations chain.
pub fn ext_chain(spn: &str, protocol: &str) -> String {
    PortHash::new(spn, protocol).ext()
}

/// `KUBE-FW-…`: the load balancer source ranges chain.
pub fn fw_chain(spn: &str, protocol: &str) -> String {
    PortHash::new(spn, protocol).fw()
}

/// `KUBE-SEP-…`: one endpoint's chain; `endpoint` is `ip:port`.
pub fn sep_chain(spn: &str, protocol: &str, endpoint: &str) -> String {
    named("KUBE-SEP-", &hash_head::<16>(&[spn, protocol, endpoint]))
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
        assert_eq!(
            service_port_name("default", "web", "http"),
            "default/web:http"
        );
    }

    /// What the names were made with before: the whole padded encoding
    /// by the `base32` crate, of the digest of the joined pieces.
    fn crate_head(pieces: &[&str], n: usize) -> String {
        let digest = Sha256::digest(pieces.concat().as_bytes());
        base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &digest)[..n].to_string()
    }

    fn text(chars: &[u8]) -> String {
        String::from_utf8(chars.to_vec()).expect("ASCII")
    }

    proptest::proptest! {
        /// The short encoder agrees with the `base32` crate on any bytes
        /// (every bit of each 5-byte group lands in some character).
        #[test]
        fn base32_head_matches_the_crate(bytes in proptest::collection::vec(proptest::num::u8::ANY, 10..40)) {
            let full = base32::encode(base32::Alphabet::Rfc4648 { padding: true }, &bytes);
            proptest::prop_assert_eq!(text(&base32_head::<16>(&bytes)), &full[..16]);
            proptest::prop_assert_eq!(text(&base32_head::<8>(&bytes)), &full[..8]);
        }

        /// Hashing the pieces one after the other is hashing them joined.
        #[test]
        fn hash_of_pieces_matches_the_joined_text(a in ".{0,40}", b in "[a-z]{0,6}", c in "[0-9.:]{0,21}") {
            proptest::prop_assert_eq!(text(&hash_head::<16>(&[&a, &b, &c])), crate_head(&[&a, &b, &c], 16));
            let hash = PortHash::new(&a, &b);
            proptest::prop_assert_eq!(hash.svc(), format!("KUBE-SVC-{}", crate_head(&[&a, &b], 16)));
            proptest::prop_assert_eq!(hash.fw(), format!("KUBE-FW-{}", crate_head(&[&a, &b], 16)));
        }
    }
}

/// nftables mode's chain and set names: `PREFIX` + the first 8
/// characters of base32(sha256(base)) + `-` + base, where the base is
/// `namespace/name/protocol/portName` (`hashAndTruncate` in
/// `pkg/proxy/nftables/proxier.go`; truncated with `...` past 240
/// characters, which IPv4 names never reach).
pub mod nft {
    fn hash_and_truncate(name: &str) -> String {
        let hash = super::hash_head::<8>(&[name]);
        let mut out = String::with_capacity(hash.len() + 1 + name.len());
        out.push_str(std::str::from_utf8(&hash).expect("base32 is ASCII"));
        out.push('-');
        out.push_str(name);
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
