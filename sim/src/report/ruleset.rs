//! What a node's ruleset weighs, counted two ways:
//!
//! * as `iptables-save` on the node shows it (what `kpsim rules` prints):
//!   rules and chains per table, built-in chains and kubelet's pieces
//!   included ([`TableCounts`]);
//! * as kube-proxy itself sees it ([`SyncPayload`]): the `iptables-restore`
//!   input of a full sync, which holds only kube-proxy's own chains (the
//!   jumps from built-in chains are ensured one by one with `iptables -C/-I`
//!   and the canary chains with `iptables -N`, outside the restore), and
//!   the rule lines its `kubeproxy_sync_proxy_rules_iptables_total` gauge
//!   counts (`pkg/proxy/iptables/proxier.go`: `filterRules.Lines()` and
//!   `natRules.Lines()` after a full sync from a clean node).

use crate::netfilter::Ruleset;
use serde::Serialize;
use std::collections::BTreeMap;

/// Rules and chains of one table as `iptables-save` lists them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub rules: usize,
    /// Every chain listed, built-in ones included.
    pub chains: usize,
}

/// Per table name (`filter`, `mangle`, `nat`, …).
pub type TableCounts = BTreeMap<String, TableCount>;

/// Count a ruleset the way its `iptables-save` text lists it.
pub fn table_counts(rs: &Ruleset) -> TableCounts {
    rs.tables
        .iter()
        .map(|t| {
            (
                t.name.as_str().to_string(),
                TableCount {
                    rules: t.chains.iter().map(|c| c.rules.len()).sum(),
                    chains: t.chains.len(),
                },
            )
        })
        .collect()
}

/// kube-proxy's full-sync `iptables-restore` input, measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncPayload {
    /// Bytes sent to `iptables-restore`.
    pub bytes: usize,
    pub filter_rules: usize,
    pub nat_rules: usize,
    pub filter_chains: usize,
    pub nat_chains: usize,
}

const BUILTIN: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Chains created outside the restore (`iptables -N` by kubelet and
/// kube-proxy's monitor).
const CANARIES: [&str; 2] = ["KUBE-KUBELET-CANARY", "KUBE-PROXY-CANARY"];

/// kubelet's firewall chain: kube-proxy declares it in its own restore
/// only when it writes the localhost-NodePort rule into it.
const KUBELET_FIREWALL: &str = "KUBE-FIREWALL";

/// kube-proxy's full-sync input, cut out of a node's generated restore
/// text (which the proxier writes in kube-proxy's own option order):
/// `*filter`, its chain lines and rules, `COMMIT`, then the same for
/// `*nat` — without the built-in chains, their jump rules, the canaries,
/// and `KUBE-FIREWALL` unless kube-proxy writes a rule into it.
pub fn sync_input(restore_text: &str) -> String {
    #[derive(Default)]
    struct Table<'a> {
        chains: Vec<&'a str>,
        rules: Vec<&'a str>,
    }
    let mut tables: BTreeMap<&str, Table> = BTreeMap::new();
    let mut current = "";
    for line in restore_text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            current = name;
        } else if let Some(rest) = line.strip_prefix(':') {
            let name = rest.split(' ').next().unwrap_or("");
            if !BUILTIN.contains(&name) && !CANARIES.contains(&name) {
                tables.entry(current).or_default().chains.push(line);
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split(' ').next().unwrap_or("");
            if !BUILTIN.contains(&chain) {
                tables.entry(current).or_default().rules.push(line);
            }
        }
    }
    let mut out = String::new();
    for name in ["filter", "nat"] {
        let Some(t) = tables.get(name) else { continue };
        let has_rules = |chain: &str| {
            t.rules
                .iter()
                .any(|r| r[3..].split(' ').next() == Some(chain))
        };
        out.push('*');
        out.push_str(name);
        out.push('\n');
        for l in &t.chains {
            let chain = l[1..].split(' ').next().unwrap_or("");
            if chain != KUBELET_FIREWALL || has_rules(chain) {
                out.push_str(l);
                out.push('\n');
            }
        }
        for l in &t.rules {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Measure a full-sync input ([`sync_input`]).
pub fn sync_payload(input: &str) -> SyncPayload {
    let mut p = SyncPayload {
        bytes: input.len(),
        ..Default::default()
    };
    let mut table = "";
    for line in input.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name;
            continue;
        }
        let (rules, chains) = match table {
            "filter" => (&mut p.filter_rules, &mut p.filter_chains),
            _ => (&mut p.nat_rules, &mut p.nat_chains),
        };
        if line.starts_with(':') {
            *chains += 1;
        } else if line.starts_with("-A ") {
            *rules += 1;
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_keeps_kube_proxys_chains_and_rules_only() {
        let text = "*mangle\n:PREROUTING ACCEPT [0:0]\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n\
*filter\n:INPUT ACCEPT [0:0]\n:KUBE-KUBELET-CANARY - [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-FIREWALL - [0:0]\n\
-A INPUT -j KUBE-FIREWALL\n-A KUBE-SERVICES -j REJECT\nCOMMIT\n\
*nat\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n";
        let input = sync_input(text);
        let p = sync_payload(&input);
        assert_eq!((p.filter_rules, p.nat_rules), (1, 1));
        // KUBE-FIREWALL has no rule of kube-proxy's: not declared.
        assert_eq!((p.filter_chains, p.nat_chains), (1, 1));
        let expected = "*filter\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j REJECT\nCOMMIT\n\
*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -j RETURN\nCOMMIT\n";
        assert_eq!(input, expected);
        assert_eq!(p.bytes, expected.len());
    }
}
