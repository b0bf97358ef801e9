//! The packets of a trace as a pcap file (Ethernet link type), one frame
//! per place a packet was seen: as each host received it and as it left.
//! VXLAN hops carry the real outer IPv4/UDP/VXLAN header around the inner
//! frame, so Wireshark shows both. Timestamps are synthetic (one
//! millisecond per frame, one second per outcome), so the file is
//! byte-for-byte reproducible.

use super::{FlowResult, Hop, LegStep};
use crate::netfilter::Outcome;
use crate::wire::{ethernet_frame, mac_for, vxlan_encapsulate, Headers};
use std::net::Ipv4Addr;

/// Classic pcap: magic, version 2.4, no zone, snaplen 65535, Ethernet.
fn global_header() -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&65535u32.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

fn record(out: &mut Vec<u8>, seconds: u32, micros: u32, frame: &[u8]) {
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&micros.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
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

fn hop_frames(hop: &Hop, frames: &mut Vec<Vec<u8>>) {
    let carrying = hop.carrying.as_ref();
    if hop.in_iface.is_some() {
        frames.push(frame(&hop.packet, carrying, hop.packet.src, hop.packet.dst));
    }
    if let Outcome::Transmit {
        headers, nexthop, ..
    } = &hop.outcome
    {
        frames.push(frame(headers, carrying, headers.src, *nexthop));
    }
}

/// A pcap file holding every outcome's request and reply packets.
pub fn write(results: &[(crate::prob::Probability, Vec<FlowResult>)]) -> Vec<u8> {
    let mut out = global_header();
    for (i, (_, flows)) in results.iter().enumerate() {
        let mut frames = Vec::new();
        for flow in flows {
            for leg in std::iter::once(&flow.forward).chain(flow.reply.as_ref()) {
                for step in &leg.steps {
                    if let LegStep::Hop(hop) = step {
                        hop_frames(hop, &mut frames);
                    }
                }
            }
        }
        for (j, f) in frames.iter().enumerate() {
            record(&mut out, i as u32, (j as u32) * 1000, f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let h = Headers::udp(
            "10.0.0.1".parse().unwrap(),
            1,
            "10.0.0.2".parse().unwrap(),
            2,
        );
        let mut out = global_header();
        let f = frame(&h, None, h.src, h.dst);
        record(&mut out, 0, 0, &f);
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(out.len(), 24 + 16 + 14 + 28);
        assert_eq!(&out[24 + 16 + 12..24 + 16 + 14], &[0x08, 0x00]);
    }
}
