//! One host's IP configuration: interfaces, addresses, routes, and the
//! kernel's choices that depend on them (route lookup, source address
//! selection, the address MASQUERADE uses, `addrtype`).
//!
//! Semantics follow Linux's FIB for the cases the simulator builds:
//! * the local table first: a destination equal to one of the host's
//!   addresses (or in 127.0.0.0/8) is delivered locally, whatever interface
//!   holds it (Linux's weak host model);
//! * then the main table by longest prefix; among equal prefixes the first
//!   added wins;
//! * a route's source hint (`src`) is used for locally generated packets,
//!   otherwise the egress interface's primary address in the next hop's
//!   subnet, else its first primary address (`inet_select_addr`).
//!
//! Reverse-path filtering is not modelled (`rp_filter` is treated as off, or
//! loose mode, under which every packet the simulator builds passes). The
//! checks the kernel makes whatever `rp_filter` says are (see [`Martian`]):
//! a received packet whose source is one of this host's addresses or in
//! 127.0.0.0/8 is a martian and dropped; so is one received for
//! 127.0.0.0/8 on a device other than `lo`, unless `route_localnet` is on;
//! and a packet this host sends from 127.0.0.0/8 may leave only by `lo`,
//! unless `route_localnet` is on (kube-proxy turns it on for localhost node
//! ports).

use crate::netfilter::{AddrType, HostFacts, Martian, Route, Router};
use crate::wire::Headers;
use ipnet::Ipv4Net;
use std::fmt;
use std::net::Ipv4Addr;

/// What sort of device an interface is; the network model decides what is
/// on the other side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfaceKind {
    Loopback,
    /// A NIC or veth end on a link.
    Ethernet,
    /// A Linux bridge (pods' veths are its ports).
    Bridge,
    /// A VXLAN device (flannel's `flannel.1`).
    Vxlan {
        vni: u32,
        port: u16,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub kind: IfaceKind,
    /// Addresses with their prefix; the first is the primary.
    pub addrs: Vec<Ipv4Net>,
}

/// One route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteEntry {
    pub dst: Ipv4Net,
    /// Gateway; `None` for an on-link route (the destination is the next hop).
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    /// `onlink`: the gateway is reachable on `dev` even if no address of
    /// `dev` covers it (flannel's VXLAN routes).
    pub onlink: bool,
    /// Preferred source for locally generated packets.
    pub src: Option<Ipv4Addr>,
}

impl fmt::Display for RouteEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(v) = self.via {
            write!(f, " via {v}")?;
        }
        write!(f, " dev {}", self.dev)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if let Some(s) = self.src {
            write!(f, " src {s}")?;
        }
        Ok(())
    }
}

/// A host's interfaces and routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNet {
    pub interfaces: Vec<Interface>,
    /// Kept sorted by prefix length, longest first (stable for equal ones).
    routes: Vec<RouteEntry>,
    /// `net.ipv4.ip_forward`.
    pub forwarding: bool,
    /// `net.ipv4.conf.all.route_localnet`: 127.0.0.0/8 addresses may be
    /// routed off the loopback device.
    pub route_localnet: bool,
}

/// The decision for one packet, with the route that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Local,
    Via(RouteEntry, Ipv4Addr),
    Unreachable,
}

impl HostNet {
    /// A host with only a loopback interface.
    pub fn new(forwarding: bool) -> HostNet {
        HostNet {
            interfaces: vec![Interface {
                name: "lo".into(),
                kind: IfaceKind::Loopback,
                addrs: vec!["127.0.0.1/8".parse().expect("literal")],
            }],
            routes: Vec::new(),
            forwarding,
            route_localnet: false,
        }
    }

    pub fn add_interface(&mut self, name: &str, kind: IfaceKind, addrs: Vec<Ipv4Net>) {
        self.interfaces.push(Interface {
            name: name.into(),
            kind,
            addrs,
        });
    }

    /// Add a route; more specific routes are consulted first.
    pub fn add_route(&mut self, r: RouteEntry) {
        let pos = self
            .routes
            .iter()
            .position(|e| e.dst.prefix_len() < r.dst.prefix_len())
            .unwrap_or(self.routes.len());
        self.routes.insert(pos, r);
    }

    pub fn routes(&self) -> &[RouteEntry] {
        &self.routes
    }

    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Whether `addr` is one of this host's addresses.
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        addr.is_loopback()
            || self
                .interfaces
                .iter()
                .any(|i| i.addrs.iter().any(|a| a.addr() == addr))
    }

    /// Every address of the host except loopback, in interface order.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.interfaces
            .iter()
            .filter(|i| i.kind != IfaceKind::Loopback)
            .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
            .collect()
    }

    /// The route lookup (local table, then main table).
    pub fn decide(&self, dst: Ipv4Addr) -> Decision {
        if self.is_local(dst) {
            return Decision::Local;
        }
        match self.routes.iter().find(|r| r.dst.contains(&dst)) {
            Some(r) => Decision::Via(r.clone(), r.via.unwrap_or(dst)),
            None => Decision::Unreachable,
        }
    }

    /// The source address a locally generated packet to `dst` gets.
    pub fn select_source(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        match self.decide(dst) {
            Decision::Local => Some(dst),
            Decision::Via(r, nexthop) => r.src.or_else(|| self.iface_source(&r.dev, nexthop)),
            Decision::Unreachable => None,
        }
    }

    /// `inet_select_addr(dev, nexthop, RT_SCOPE_UNIVERSE)`: the
    /// interface's address whose subnet holds `nexthop`, else its first
    /// one; loopback addresses (host scope) never qualify, so for `lo` (or
    /// a device without an address) the first address of the host's
    /// interfaces in order is taken, as the kernel walks its devices.
    pub fn iface_source(&self, dev: &str, nexthop: Ipv4Addr) -> Option<Ipv4Addr> {
        let universe = |a: &&Ipv4Net| !a.addr().is_loopback();
        let iface = self.interface(dev)?;
        let mut own = iface.addrs.iter().filter(universe);
        own.clone()
            .find(|a| a.contains(&nexthop))
            .or_else(|| own.next())
            .or_else(|| {
                self.interfaces
                    .iter()
                    .flat_map(|i| i.addrs.iter().filter(universe).take(1))
                    .next()
            })
            .map(|a| a.addr())
    }
}

impl HostFacts for HostNet {
    fn addr_type(&self, addr: Ipv4Addr, dev: Option<&str>) -> AddrType {
        if addr.is_broadcast() {
            return AddrType::Broadcast;
        }
        if addr.is_multicast() {
            return AddrType::Multicast;
        }
        let local = match dev {
            None => self.is_local(addr),
            Some(d) => self
                .interface(d)
                .is_some_and(|i| i.addrs.iter().any(|a| a.addr() == addr)),
        };
        if local {
            return AddrType::Local;
        }
        // Subnet broadcast addresses of our interfaces.
        let bcast = self.interfaces.iter().any(|i| {
            i.addrs
                .iter()
                .any(|a| a.prefix_len() < 31 && a.broadcast() == addr)
        });
        if bcast {
            AddrType::Broadcast
        } else {
            AddrType::Unicast
        }
    }
}

impl HostNet {
    /// The input route lookup's refusals (`ip_route_input_slow`), in the
    /// kernel's order, for a packet received on a device other than `lo`
    /// (looped-back packets keep the route they were sent with).
    fn input_martian(&self, h: &Headers) -> Option<Martian> {
        if h.dst.is_loopback() && !self.route_localnet {
            return Some(Martian::LoopbackDestination);
        }
        if h.src.is_loopback() {
            return Some(Martian::LoopbackSource);
        }
        // `fib_validate_source`: for local delivery and forwarding alike.
        self.is_local(h.src).then_some(Martian::OwnSource)
    }
}

impl Router for HostNet {
    fn route(&self, h: &Headers, in_iface: Option<&str>, _mark: u32) -> Route {
        let received = in_iface.is_some_and(|i| i != "lo");
        if received {
            if let Some(m) = self.input_martian(h) {
                return Route::Martian(m);
            }
        }
        match self.decide(h.dst) {
            Decision::Local => Route::Local,
            // `__mkroute_output`: a loopback source may not leave by
            // another device.
            Decision::Via(..)
                if in_iface.is_none() && h.src.is_loopback() && !self.route_localnet =>
            {
                Route::Martian(Martian::LoopbackSource)
            }
            Decision::Via(r, nexthop) => Route::Forward {
                out_iface: r.dev,
                nexthop,
            },
            Decision::Unreachable => Route::Unreachable,
        }
    }

    fn masquerade_source(&self, out_iface: &str, nexthop: Ipv4Addr) -> Option<Ipv4Addr> {
        self.iface_source(out_iface, nexthop)
    }

    fn forwarding(&self) -> bool {
        self.forwarding
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> HostNet {
        let mut n = HostNet::new(true);
        n.add_interface(
            "eth0",
            IfaceKind::Ethernet,
            vec!["192.168.10.11/24".parse().unwrap()],
        );
        n.add_interface(
            "cni0",
            IfaceKind::Bridge,
            vec!["10.244.1.1/24".parse().unwrap()],
        );
        n.add_interface(
            "flannel.1",
            IfaceKind::Vxlan { vni: 1, port: 8472 },
            vec!["10.244.1.0/32".parse().unwrap()],
        );
        n.add_route(RouteEntry {
            dst: "0.0.0.0/0".parse().unwrap(),
            via: None,
            dev: "eth0".into(),
            onlink: true,
            src: None,
        });
        n.add_route(RouteEntry {
            dst: "10.244.1.0/24".parse().unwrap(),
            via: None,
            dev: "cni0".into(),
            onlink: false,
            src: Some("10.244.1.1".parse().unwrap()),
        });
        n.add_route(RouteEntry {
            dst: "10.244.2.0/24".parse().unwrap(),
            via: Some("10.244.2.0".parse().unwrap()),
            dev: "flannel.1".into(),
            onlink: true,
            src: None,
        });
        n
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_received_packet_from_one_of_our_addresses_is_martian() {
        let n = node();
        let from_us = Headers::udp(a("10.244.1.1"), 1, a("10.244.1.5"), 53);
        assert_eq!(
            n.route(&from_us, Some("eth0"), 0),
            Route::Martian(Martian::OwnSource)
        );
        // Sent by this host, or looped back: not a martian.
        assert!(matches!(n.route(&from_us, None, 0), Route::Forward { .. }));
        assert!(matches!(
            n.route(&from_us, Some("lo"), 0),
            Route::Forward { .. }
        ));
        let from_peer = Headers::udp(a("192.168.10.12"), 1, a("10.244.1.5"), 53);
        assert!(matches!(
            n.route(&from_peer, Some("eth0"), 0),
            Route::Forward { .. }
        ));
    }

    #[test]
    fn loopback_addresses_stay_on_lo_unless_route_localnet() {
        let mut n = node();
        let to_lo = Headers::tcp(a("192.168.10.12"), 1, a("127.0.0.1"), 30080, 2);
        assert_eq!(
            n.route(&to_lo, Some("eth0"), 0),
            Route::Martian(Martian::LoopbackDestination)
        );
        let from_lo = Headers::tcp(a("127.0.0.1"), 1, a("10.244.2.7"), 80, 2);
        assert_eq!(
            n.route(&from_lo, None, 0),
            Route::Martian(Martian::LoopbackSource)
        );
        // Looped back or sent to a local address: no refusal.
        assert_eq!(n.route(&to_lo, Some("lo"), 0), Route::Local);
        let local = Headers::tcp(a("127.0.0.1"), 1, a("127.0.0.1"), 80, 2);
        assert_eq!(n.route(&local, None, 0), Route::Local);
        n.route_localnet = true;
        assert_eq!(n.route(&to_lo, Some("eth0"), 0), Route::Local);
        assert!(matches!(n.route(&from_lo, None, 0), Route::Forward { .. }));
        // A 127/8 source arriving from another host stays a martian: the
        // loopback network is one of this host's own.
        let spoofed = Headers::tcp(a("127.0.0.1"), 1, a("10.244.1.5"), 80, 2);
        assert_eq!(
            n.route(&spoofed, Some("eth0"), 0),
            Route::Martian(Martian::LoopbackSource)
        );
    }

    #[test]
    fn longest_prefix_wins_and_local_first() {
        let n = node();
        assert_eq!(n.decide(a("10.244.1.1")), Decision::Local);
        match n.decide(a("10.244.2.7")) {
            Decision::Via(r, nh) => {
                assert_eq!((r.dev.as_str(), nh), ("flannel.1", a("10.244.2.0")))
            }
            d => panic!("{d:?}"),
        }
        match n.decide(a("10.244.1.9")) {
            Decision::Via(r, nh) => assert_eq!((r.dev.as_str(), nh), ("cni0", a("10.244.1.9"))),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn masquerade_picks_interface_address() {
        let n = node();
        // flannel.1's /32 does not hold the next hop: its first address.
        assert_eq!(
            n.masquerade_source("flannel.1", a("10.244.2.0")),
            Some(a("10.244.1.0"))
        );
        assert_eq!(
            n.masquerade_source("cni0", a("10.244.1.5")),
            Some(a("10.244.1.1"))
        );
        assert_eq!(
            n.masquerade_source("eth0", a("203.0.113.7")),
            Some(a("192.168.10.11"))
        );
        // Out of lo (a DNAT to one of our own addresses): 127.0.0.1 has
        // host scope, so the first device's address is taken.
        assert_eq!(
            n.masquerade_source("lo", a("192.168.10.11")),
            Some(a("192.168.10.11"))
        );
    }

    #[test]
    fn addrtype_local_broadcast_unicast() {
        let n = node();
        assert_eq!(n.addr_type(a("192.168.10.11"), None), AddrType::Local);
        assert_eq!(
            n.addr_type(a("10.244.1.1"), Some("eth0")),
            AddrType::Unicast
        );
        assert_eq!(n.addr_type(a("192.168.10.255"), None), AddrType::Broadcast);
        assert_eq!(n.addr_type(a("8.8.8.8"), None), AddrType::Unicast);
    }

    #[test]
    fn source_selection_uses_route_hint() {
        let n = node();
        assert_eq!(n.select_source(a("10.244.1.5")), Some(a("10.244.1.1")));
        assert_eq!(n.select_source(a("203.0.113.7")), Some(a("192.168.10.11")));
    }
}
