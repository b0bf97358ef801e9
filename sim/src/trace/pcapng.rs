//! The packets of a trace as a pcapng file, written with the `pcap-file`
//! crate: one interface per host interface the packets touched, named
//! `HOST/IFACE` (`node-a/eth0`, `node-b/flannel.1`), and one frame each
//! time a packet is seen on one: as a host receives it and as it leaves.
//! Each frame carries a comment naming the hop and what happened there
//! ("after DNAT to 10.244.2.5:8080"), so Wireshark shows the story beside
//! the bytes. VXLAN frames carry the real outer IPv4/UDP/VXLAN header
//! around the inner frame.
//!
//! Timestamps are synthetic (one millisecond per frame, one second per
//! outcome) and the byte order is fixed (little-endian), so the file is
//! byte-for-byte reproducible.

use super::minimal::hop_changes;
use super::text::ReplyKind;
use super::{Cluster, FlowResult, Hop, Leg, LegStep, LinkEvent, Verdict};
use crate::netfilter::Outcome;
use crate::prob::Probability;
use crate::wire::{ethernet_frame, mac_for, vxlan_encapsulate, Headers};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, Endianness};
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::time::Duration;

/// One sighting of a packet.
struct Frame {
    /// `HOST/IFACE`.
    interface: String,
    bytes: Vec<u8>,
    comment: String,
}

/// A pcapng file holding every outcome's request, reply and refusal
/// packets.
pub fn write(cluster: &Cluster, results: &[(Probability, Vec<FlowResult>)]) -> Vec<u8> {
    let mut interfaces: Vec<String> = Vec::new();
    let mut packets: Vec<(Duration, Frame)> = Vec::new();
    for (i, (p, flows)) in results.iter().enumerate() {
        let mut frames = Vec::new();
        for (j, r) in flows.iter().enumerate() {
            let mut context = String::new();
            if results.len() > 1 {
                context.push_str(&format!(
                    "outcome {} of {} ({}), ",
                    i + 1,
                    results.len(),
                    p.readable()
                ));
            }
            if flows.len() > 1 {
                context.push_str(&format!("flow {}, ", j + 1));
            }
            let legs = std::iter::once((&r.forward, ReplyKind::Request)).chain(
                r.reply.as_ref().map(|l| {
                    let kind = if r.reply_ok.is_some() {
                        ReplyKind::Reply
                    } else {
                        ReplyKind::Refusal
                    };
                    (l, kind)
                }),
            );
            for (leg, kind) in legs {
                leg_frames(
                    cluster,
                    leg,
                    &format!("{context}{}", kind.heading()),
                    &mut frames,
                );
            }
        }
        for (j, f) in frames.into_iter().enumerate() {
            if !interfaces.contains(&f.interface) {
                interfaces.push(f.interface.clone());
            }
            let at = Duration::from_secs(i as u64) + Duration::from_millis(j as u64);
            packets.push((at, f));
        }
    }
    encode(&interfaces, &packets)
}

fn leg_frames(cluster: &Cluster, leg: &Leg, context: &str, frames: &mut Vec<Frame>) {
    let last_hop = leg.steps.iter().rposition(|s| matches!(s, LegStep::Hop(_)));
    for (k, step) in leg.steps.iter().enumerate() {
        let LegStep::Hop(hop) = step else { continue };
        let name = cluster.host_name(hop.host);
        let carrying = hop.carrying.as_ref();
        if let Some(iface) = &hop.in_iface {
            let mut comment = format!("{context}: {name} receives it on {iface}");
            if carrying.is_some() {
                comment.push_str(" (VXLAN, VNI 1)");
            }
            if k > 0
                && matches!(
                    leg.steps[k - 1],
                    LegStep::Link(LinkEvent::Decapsulated { .. })
                )
            {
                comment.push_str(", decapsulated from VXLAN");
            }
            if Some(k) == last_hop && leg.verdict != Verdict::Delivered {
                comment.push_str(&format!("; {}: {}", leg.verdict.as_str(), leg.reason));
            }
            frames.push(Frame {
                interface: format!("{name}/{iface}"),
                bytes: frame(&hop.packet, carrying, hop.packet.src, hop.packet.dst),
                comment,
            });
        }
        if let Outcome::Transmit {
            headers,
            out_iface,
            nexthop,
        } = &hop.outcome
        {
            frames.push(Frame {
                interface: format!("{name}/{out_iface}"),
                bytes: frame(headers, carrying, headers.src, *nexthop),
                comment: sent_comment(cluster, hop, context, out_iface, *nexthop),
            });
        }
    }
}

/// `request: node-a sends it out flannel.1 to 10.244.2.0, after DNAT to
/// 10.244.2.5:8080 (default/web:http), MASQUERADE to 10.244.1.0:11204`.
fn sent_comment(
    cluster: &Cluster,
    hop: &Hop,
    context: &str,
    out_iface: &str,
    nexthop: Ipv4Addr,
) -> String {
    let name = cluster.host_name(hop.host);
    let mut s = format!("{context}: {name} sends it out {out_iface} to {nexthop}");
    let changes = hop_changes(cluster, hop);
    if !changes.is_empty() {
        s.push_str(", after ");
        s.push_str(&changes.join(", "));
    }
    if hop.carrying.is_some() {
        s.push_str(" (VXLAN, VNI 1)");
    }
    s
}

/// The IPv4 bytes of a hop's packet, wrapped in its VXLAN outer header when
/// the hop carried an inner packet.
fn ip_bytes(h: &Headers, carrying: Option<&Headers>) -> Vec<u8> {
    match carrying {
        Some(inner) => vxlan_encapsulate(&inner.to_bytes(), inner, h.src, h.dst, 1),
        None => h.to_bytes(),
    }
}

fn frame(h: &Headers, carrying: Option<&Headers>, from: Ipv4Addr, to: Ipv4Addr) -> Vec<u8> {
    ethernet_frame(mac_for(from), mac_for(to), &ip_bytes(h, carrying))
}

/// The section, one interface description per interface (Ethernet,
/// nanosecond timestamps), then the packets.
fn encode(interfaces: &[String], packets: &[(Duration, Frame)]) -> Vec<u8> {
    let section = SectionHeaderBlock {
        endianness: Endianness::Little,
        ..Default::default()
    };
    let mut w = PcapNgWriter::with_section_header(Vec::new(), section)
        .expect("writing to memory cannot fail");
    for name in interfaces {
        let idb = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0xFFFF,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Borrowed(name)),
                // pcap-file writes nanoseconds; say so (the default is µs).
                InterfaceDescriptionOption::IfTsResol(9),
            ],
        };
        w.write_pcapng_block(idb).expect("in memory");
    }
    for (at, f) in packets {
        let id = interfaces
            .iter()
            .position(|n| *n == f.interface)
            .expect("every frame's interface is declared");
        let epb = EnhancedPacketBlock {
            interface_id: id as u32,
            timestamp: *at,
            original_len: f.bytes.len() as u32,
            data: Cow::Borrowed(&f.bytes),
            options: vec![EnhancedPacketOption::Comment(Cow::Borrowed(&f.comment))],
        };
        w.write_pcapng_block(epb).expect("in memory");
    }
    w.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn interfaces_are_named_and_packets_placed_and_commented() {
        let h = Headers::udp(
            "10.0.0.1".parse().unwrap(),
            1,
            "10.0.0.2".parse().unwrap(),
            2,
        );
        let names = vec!["a/eth0".to_string(), "b/eth0".to_string()];
        let packets = vec![(
            Duration::from_millis(1),
            Frame {
                interface: "b/eth0".into(),
                bytes: frame(&h, None, h.src, h.dst),
                comment: "request: b receives it on eth0".into(),
            },
        )];
        let bytes = encode(&names, &packets);
        // Little-endian section header block.
        assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
        assert_eq!(&bytes[8..12], &[0x4d, 0x3c, 0x2b, 0x1a]);
        let mut r = PcapNgReader::new(bytes.as_slice()).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                Block::InterfaceDescription(i) => seen.push(format!("{:?}", i.options[0])),
                Block::EnhancedPacket(p) => {
                    assert_eq!(p.interface_id, 1);
                    assert_eq!(p.data.len(), 14 + 28);
                    assert_eq!(p.timestamp, Duration::from_millis(1));
                    seen.push(format!("{:?}", p.options[0]));
                }
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(
            seen,
            [
                "IfName(\"a/eth0\")",
                "IfName(\"b/eth0\")",
                "Comment(\"request: b receives it on eth0\")"
            ]
        );
    }
}
