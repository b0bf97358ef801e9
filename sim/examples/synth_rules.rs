//! Print the rules kube-proxy writes on one node of a synthetic cluster,
//! as the node lists them: `iptables-save` text in iptables mode, `nft
//! list ruleset` text in nftables mode. The input of the dump-load
//! benchmark (`kpsim trace --rules node-0=FILE`) and of the kernel's own
//! parsers in `scripts/bench-vs-kernel` (`iptables-restore --test`, `nft
//! -c -f`).
//!
//! `cargo run --release --example synth_rules -- SERVICES ENDPOINTS NODES [NODE] [nftables]`
//! (NODE is the node's position, 0 unless given).

use kpsim::proxier::{self, ProxyModel};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let nft = args.last().is_some_and(|a| a == "nftables");
    if nft {
        args.pop();
    }
    let nums: Vec<usize> = args
        .iter()
        .map(|a| {
            a.parse()
                .expect("SERVICES ENDPOINTS NODES [NODE] as numbers")
        })
        .collect();
    let (services, endpoints, nodes, node) = match nums[..] {
        [s, e, n] => (s, e, n, 0),
        [s, e, n, i] => (s, e, n, i),
        _ => {
            eprintln!("usage: synth_rules SERVICES ENDPOINTS NODES [NODE] [nftables]");
            std::process::exit(2);
        }
    };
    let s = kpsim::synth::cluster(services, endpoints, nodes);
    let n = &s.nodes[node.min(s.nodes.len() - 1)];
    let model = ProxyModel::build(&s.services, &s.slices);
    let cfg = kpsim::compile::node_proxy_config(&s, n.address);
    // The synthetic nodes have one address each besides their bridge's.
    let addresses = vec![n.address, n.pod_cidr.hosts().next().expect("a host")];
    let info = kpsim::compile::node_info(n, addresses);
    let text = if nft {
        let nft_cfg = proxier::nft::NftConfig {
            service_cidrs: vec![s.cluster.service_cidr],
        };
        let table = proxier::nft::node_table(&cfg, &nft_cfg, &info, &model);
        kpsim::nftables::Ruleset::parse(&table)
            .expect("generated rules parse")
            .to_nft()
    } else {
        let mut rs =
            kpsim::netfilter::Ruleset::load(&proxier::node_rules(&cfg, &info, &model).restore_text)
                .expect("generated rules load");
        rs.sort_as_saved();
        rs.to_iptables_save()
    };
    print!("{text}");
}
