//! ipsets: the kernel's `ip_set` state of one host, loaded from `ipset save`
//! text, printed back, and asked for membership the way `xt_set` asks.
//!
//! Where the sets live: in [`super::MatchState`] (so in each host's
//! `HostState`), next to `recent` lists. ipsets are netfilter state of the
//! host's network namespace, restored with `ipset restore` beside
//! `iptables-restore`, not routing facts; and a later `-j SET` target (and
//! element counters) would change them during evaluation, which needs the
//! `&mut` the evaluator already holds for `recent` — `HostFacts` is a
//! read-only view of routes and addresses.
//!
//! Accepted text: `create NAME TYPE [options]` and `add NAME ELEMENT
//! [options]` lines (what `ipset save` prints), blank lines and `#`
//! comments. Types (IPv4, `family inet` only):
//!
//! | type              | element                  | dimensions |
//! |-------------------|--------------------------|------------|
//! | `hash:ip`         | `IP` (`netmask` option)  | 1          |
//! | `hash:net`        | `IP[/CIDR]` (`nomatch`)  | 1          |
//! | `hash:ip,port`    | `IP,[PROTO:]PORT`        | 2          |
//! | `hash:ip,port,ip` | `IP,[PROTO:]PORT,IP`     | 3          |
//! | `hash:ip,port,net`| `IP,[PROTO:]PORT,IP/CIDR`| 3          |
//! | `bitmap:port`     | `[PROTO:]PORT` (`range`) | 1          |
//! | `list:set`        | `SETNAME`                | 1          |
//!
//! `ipset restore` input may give ranges (`10.0.0.0/30`, `1.1.1.1-1.1.1.3`,
//! `tcp:80-82`); they are expanded into single elements as the kernel
//! stores them, so printing shows what `ipset save` would.
//!
//! Membership follows the kernel (`net/netfilter/ipset/`):
//! * `ip_set_test`: a match with fewer `src`/`dst` flags than the set has
//!   dimensions never matches; extra flags are ignored (the first ones are
//!   used, one per dimension);
//! * ports come from `ip_set_get_ip4_port`: the TCP/UDP/UDPLITE/SCTP port on
//!   the side the flag names, `type << 8 | code` for ICMP, 0 with the
//!   packet's protocol for anything else; `bitmap:port` only matches TCP
//!   and UDP (`ip_set_get_ip_port`);
//! * `hash:net` and the net part of `hash:ip,port,net` try the CIDRs present
//!   in the set from the longest to the shortest; the first element found
//!   decides, a `nomatch` element as "no" (`-ENOTEMPTY`), which
//!   `--return-nomatch` inverts (and which then also turns a plain hit into
//!   "no");
//! * `list:set` matches when any member set matches, in member order.
//!
//! A rule naming a set that does not exist is refused at load time by
//! [`super::Ruleset::validate_sets`], as `iptables-restore` refuses it.
//! `scripts/kernel-check-ipset.py` replays sets, rules and packets on a real
//! kernel; the test `kernel_check_ipset` expects its output.
//!
//! Everything is kept in ordered containers: output never depends on hash
//! order. Element timeouts are kept as data but never expire (a dump is a
//! snapshot); counters are printed as loaded and never updated.

use super::rule::SetFlag;
use crate::wire::{Headers, PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::Ipv4Addr;
use thiserror::Error;

/// IP protocol number of UDP-Lite (ipset knows its ports like UDP's).
pub const PROTO_UDPLITE: u8 = 136;

/// The kernel's limit on `src`/`dst` flags of one set match
/// (`IPSET_DIM_MAX`).
pub const IPSET_DIM_MAX: usize = 6;

/// The longest set name (`IPSET_MAXNAMELEN` is 32 with the NUL).
pub const MAX_NAME_LEN: usize = 31;

/// A problem in `ipset save` text, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {kind}")]
pub struct IpSetError {
    pub line: usize,
    pub kind: IpSetErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IpSetErrorKind {
    #[error("unknown command \"{0}\" (ipset save output has create and add lines)")]
    UnknownCommand(String),
    #[error("{command} needs {what}")]
    Missing {
        command: &'static str,
        what: &'static str,
    },
    #[error("unknown set type \"{0}\"")]
    UnknownType(String),
    #[error("family \"{0}\" is not supported (IPv4 sets only)")]
    UnsupportedFamily(String),
    #[error("set name \"{0}\" is longer than 31 characters")]
    NameTooLong(String),
    #[error("option \"{option}\" is not valid for {set_type}")]
    UnknownOption { set_type: String, option: String },
    #[error("option \"{0}\" needs a value")]
    MissingValue(String),
    #[error("bad value \"{value}\" for {option}")]
    BadValue { option: String, value: String },
    #[error("set \"{0}\" is created twice")]
    DuplicateSet(String),
    #[error("set \"{0}\" is not created (before this line)")]
    UnknownSet(String),
    #[error("element \"{element}\" does not fit {set_type}: {why}")]
    BadElement {
        set_type: String,
        element: String,
        why: String,
    },
    #[error("element \"{element}\" is already in set \"{set}\"")]
    DuplicateElement { set: String, element: String },
    #[error("element option \"{option}\" needs the set to be created with \"{needs}\"")]
    ElementOption { option: String, needs: String },
    #[error("set \"{set}\" is full ({max} elements)")]
    SetFull { set: String, max: usize },
    #[error("list:set \"{0}\" cannot be a member of a list:set")]
    ListInList(String),
    #[error("unterminated quoted string")]
    UnterminatedQuote,
}

/// The set types the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    HashIp,
    HashNet,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    BitmapPort,
    ListSet,
}

impl SetType {
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashNet => "hash:net",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
            SetType::ListSet => "list:set",
        }
    }

    fn parse(s: &str) -> Option<SetType> {
        Some(match s {
            "hash:ip" => SetType::HashIp,
            "hash:net" => SetType::HashNet,
            "hash:ip,port" => SetType::HashIpPort,
            "hash:ip,port,ip" => SetType::HashIpPortIp,
            "hash:ip,port,net" => SetType::HashIpPortNet,
            "bitmap:port" => SetType::BitmapPort,
            "list:set" => SetType::ListSet,
            _ => return None,
        })
    }

    /// `set->type->dimension`: how many `src`/`dst` flags a match needs.
    pub fn dimension(self) -> usize {
        match self {
            SetType::HashIp | SetType::HashNet | SetType::BitmapPort | SetType::ListSet => 1,
            SetType::HashIpPort => 2,
            SetType::HashIpPortIp | SetType::HashIpPortNet => 3,
        }
    }

    /// `IPSET_TYPE_NOMATCH`: elements may carry `nomatch`.
    pub fn has_nomatch(self) -> bool {
        matches!(self, SetType::HashNet | SetType::HashIpPortNet)
    }

    fn is_hash(self) -> bool {
        !matches!(self, SetType::BitmapPort | SetType::ListSet)
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol and port as hash:ip,port stores it; for ICMP the "port" is
/// `type << 8 | code`, for protocols without ports it is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtoPort {
    pub proto: u8,
    pub port: u16,
}

/// One stored element, as the kernel keys it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    Ip(Ipv4Addr),
    Net(Ipv4Net),
    IpPort(Ipv4Addr, ProtoPort),
    IpPortIp(Ipv4Addr, ProtoPort, Ipv4Addr),
    IpPortNet(Ipv4Addr, ProtoPort, Ipv4Net),
    Port(u16),
    Set(String),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Ip(a) => write!(f, "{a}"),
            Key::Net(n) => f.write_str(&net_text(n)),
            Key::IpPort(a, p) => write!(f, "{a},{}", proto_port_text(*p)),
            Key::IpPortIp(a, p, b) => write!(f, "{a},{},{b}", proto_port_text(*p)),
            Key::IpPortNet(a, p, n) => write!(f, "{a},{},{}", proto_port_text(*p), net_text(n)),
            Key::Port(p) => write!(f, "{p}"),
            Key::Set(s) => f.write_str(s),
        }
    }
}

/// An element with its extensions, in the order it was added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: Key,
    pub nomatch: bool,
    /// `timeout N` (sets created with `timeout`).
    pub timeout: Option<u32>,
    /// `packets N bytes N` (sets created with `counters`).
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// `comment "..."` (sets created with `comment`).
    pub comment: Option<String>,
    /// `skbmark`, `skbprio`, `skbqueue` as written (sets with `skbinfo`).
    pub skbmark: Option<String>,
    pub skbprio: Option<String>,
    pub skbqueue: Option<String>,
    /// 1-based line of the `add`.
    pub line: usize,
}

/// One set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub set_type: SetType,
    /// Create options as written (`family inet`, `hashsize 1024`,
    /// `counters`, ...), for printing.
    pub options: Vec<(String, Option<String>)>,
    /// `netmask` of hash:ip (32 when not given).
    pub netmask: u8,
    /// `range` of bitmap:port.
    pub port_range: (u16, u16),
    /// `maxelem` (65536 by default; `size` of list:set).
    pub maxelem: usize,
    pub timeout: Option<u32>,
    pub counters: bool,
    pub comment: bool,
    pub skbinfo: bool,
    /// Elements in the order they were added.
    pub elements: Vec<Element>,
    /// Key → position in `elements`.
    index: BTreeMap<Key, usize>,
    /// For net types: the prefix lengths present, for the longest-first
    /// walk of `mtype_test_cidrs`.
    cidrs: BTreeSet<u8>,
    /// 1-based line of the `create`.
    pub line: usize,
}

/// All sets of a host, in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSets {
    sets: Vec<IpSet>,
    by_name: BTreeMap<String, usize>,
}

/// What a type's `kadt` test returned, before `ip_set_test` maps it.
enum Kadt {
    Hit,
    /// A `nomatch` element was found (`-ENOTEMPTY`).
    NoMatch,
    Miss,
}

impl IpSets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse `ipset save` output (or `ipset restore` input using only
    /// `create` and `add`).
    pub fn parse(text: &str) -> Result<IpSets, IpSetError> {
        let mut sets = IpSets::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            sets.line(raw, line)
                .map_err(|kind| IpSetError { line, kind })?;
        }
        Ok(sets)
    }

    pub fn get(&self, name: &str) -> Option<&IpSet> {
        self.by_name.get(name).map(|&i| &self.sets[i])
    }

    /// Sets in creation order.
    pub fn sets(&self) -> &[IpSet] {
        &self.sets
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The `ipset save` text of every set, in creation order.
    pub fn to_ipset_save(&self) -> String {
        let mut out = String::new();
        for s in &self.sets {
            s.write_save(&mut out);
        }
        out
    }

    /// `ip_set_test` for a packet: whether `-m set --match-set name flags`
    /// holds (before the match's own `!`). `None` when the set does not
    /// exist.
    pub fn test(
        &self,
        name: &str,
        h: &Headers,
        flags: &[SetFlag],
        return_nomatch: bool,
    ) -> Option<bool> {
        let set = self.get(name)?;
        Some(self.test_set(set, h, flags, return_nomatch))
    }

    fn test_set(&self, set: &IpSet, h: &Headers, flags: &[SetFlag], return_nomatch: bool) -> bool {
        if flags.len() < set.set_type.dimension() {
            return false;
        }
        let r = match set.set_type {
            SetType::ListSet => {
                // list_set_ktest: the first member that matches decides.
                return set.elements.iter().any(|e| match &e.key {
                    Key::Set(m) => self
                        .get(m)
                        .is_some_and(|ms| self.test_set(ms, h, flags, return_nomatch)),
                    _ => false,
                });
            }
            _ => set.kadt(h, flags),
        };
        match r {
            Kadt::Hit => !(return_nomatch && set.set_type.has_nomatch()),
            Kadt::NoMatch => return_nomatch,
            Kadt::Miss => false,
        }
    }

    fn line(&mut self, raw: &str, line: usize) -> Result<(), IpSetErrorKind> {
        let text = raw.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(());
        }
        let toks = tokenize(text)?;
        let (cmd, rest) = toks.split_first().expect("non-empty line has a token");
        match cmd.as_str() {
            "create" => self.create(rest, line),
            "add" => self.add(rest, line),
            other => Err(IpSetErrorKind::UnknownCommand(other.to_string())),
        }
    }

    fn create(&mut self, args: &[String], line: usize) -> Result<(), IpSetErrorKind> {
        let name = args.first().ok_or(IpSetErrorKind::Missing {
            command: "create",
            what: "a set name",
        })?;
        let type_name = args.get(1).ok_or(IpSetErrorKind::Missing {
            command: "create",
            what: "a set type",
        })?;
        if name.len() > MAX_NAME_LEN {
            return Err(IpSetErrorKind::NameTooLong(name.clone()));
        }
        if self.by_name.contains_key(name) {
            return Err(IpSetErrorKind::DuplicateSet(name.clone()));
        }
        let set_type = SetType::parse(type_name)
            .ok_or_else(|| IpSetErrorKind::UnknownType(type_name.clone()))?;
        let mut set = IpSet {
            name: name.clone(),
            set_type,
            options: Vec::new(),
            netmask: 32,
            port_range: (0, 0),
            maxelem: if set_type == SetType::ListSet {
                8
            } else {
                65536
            },
            timeout: None,
            counters: false,
            comment: false,
            skbinfo: false,
            elements: Vec::new(),
            index: BTreeMap::new(),
            cidrs: BTreeSet::new(),
            line,
        };
        let mut has_range = false;
        let mut it = args[2..].iter();
        while let Some(opt) = it.next() {
            let unknown = || IpSetErrorKind::UnknownOption {
                set_type: set_type.to_string(),
                option: opt.clone(),
            };
            let flag = matches!(
                opt.as_str(),
                "counters" | "comment" | "skbinfo" | "forceadd"
            );
            let value = if flag {
                None
            } else {
                Some(
                    it.next()
                        .ok_or_else(|| IpSetErrorKind::MissingValue(opt.clone()))?
                        .clone(),
                )
            };
            let v = value.as_deref().unwrap_or("");
            let bad = || IpSetErrorKind::BadValue {
                option: opt.clone(),
                value: v.to_string(),
            };
            match opt.as_str() {
                "family" if set_type.is_hash() => {
                    if v != "inet" {
                        return Err(IpSetErrorKind::UnsupportedFamily(v.to_string()));
                    }
                }
                "hashsize" | "bucketsize" if set_type.is_hash() => {
                    v.parse::<u32>().map_err(|_| bad())?;
                }
                "initval" if set_type.is_hash() => {
                    let hex = v.strip_prefix("0x").ok_or_else(bad)?;
                    u32::from_str_radix(hex, 16).map_err(|_| bad())?;
                }
                "maxelem" if set_type.is_hash() => {
                    set.maxelem = v.parse().map_err(|_| bad())?;
                }
                "size" if set_type == SetType::ListSet => {
                    set.maxelem = v.parse().map_err(|_| bad())?;
                }
                "netmask" if set_type == SetType::HashIp => {
                    set.netmask = v
                        .parse()
                        .ok()
                        .filter(|m| (1..=32).contains(m))
                        .ok_or_else(bad)?;
                }
                "range" if set_type == SetType::BitmapPort => {
                    let (a, b) = port_range(v).ok_or_else(bad)?;
                    set.port_range = (a, b);
                    has_range = true;
                }
                "timeout" => set.timeout = Some(v.parse().map_err(|_| bad())?),
                "counters" => set.counters = true,
                "comment" => set.comment = true,
                "skbinfo" => set.skbinfo = true,
                "forceadd" if set_type.is_hash() => {}
                _ => return Err(unknown()),
            }
            set.options.push((opt.clone(), value));
        }
        if set_type == SetType::BitmapPort && !has_range {
            return Err(IpSetErrorKind::Missing {
                command: "create ... bitmap:port",
                what: "a range option",
            });
        }
        self.by_name.insert(set.name.clone(), self.sets.len());
        self.sets.push(set);
        Ok(())
    }

    fn add(&mut self, args: &[String], line: usize) -> Result<(), IpSetErrorKind> {
        let name = args.first().ok_or(IpSetErrorKind::Missing {
            command: "add",
            what: "a set name",
        })?;
        let elem = args.get(1).ok_or(IpSetErrorKind::Missing {
            command: "add",
            what: "an element",
        })?;
        let &pos = self
            .by_name
            .get(name)
            .ok_or_else(|| IpSetErrorKind::UnknownSet(name.clone()))?;
        let set_type = self.sets[pos].set_type;
        let keys = match set_type {
            SetType::ListSet => {
                let member = self
                    .get(elem)
                    .ok_or_else(|| IpSetErrorKind::UnknownSet(elem.clone()))?;
                if member.set_type == SetType::ListSet {
                    return Err(IpSetErrorKind::ListInList(elem.clone()));
                }
                vec![Key::Set(elem.clone())]
            }
            _ => self.sets[pos].parse_element(elem)?,
        };
        let set = &mut self.sets[pos];
        let template = set.element_options(&args[2..], line)?;
        for key in keys {
            if set.index.contains_key(&key) {
                return Err(IpSetErrorKind::DuplicateElement {
                    set: set.name.clone(),
                    element: key.to_string(),
                });
            }
            if set.elements.len() >= set.maxelem {
                return Err(IpSetErrorKind::SetFull {
                    set: set.name.clone(),
                    max: set.maxelem,
                });
            }
            match &key {
                Key::Net(n) | Key::IpPortNet(_, _, n) => {
                    set.cidrs.insert(n.prefix_len());
                }
                _ => {}
            }
            set.index.insert(key.clone(), set.elements.len());
            set.elements.push(Element {
                key,
                ..template.clone()
            });
        }
        Ok(())
    }
}

impl IpSet {
    /// Whether `key` is stored (exact key, no CIDR walk).
    pub fn contains_key(&self, key: &Key) -> bool {
        self.index.contains_key(key)
    }

    fn element(&self, key: &Key) -> Option<&Element> {
        self.index.get(key).map(|&i| &self.elements[i])
    }

    /// The type's `kadt` for `IPSET_TEST`.
    fn kadt(&self, h: &Headers, flags: &[SetFlag]) -> Kadt {
        let addr = |i: usize| match flags[i] {
            SetFlag::Src => h.src,
            SetFlag::Dst => h.dst,
        };
        let hit = |k: &Key| match self.element(k) {
            None => Kadt::Miss,
            Some(e) if e.nomatch => Kadt::NoMatch,
            Some(_) => Kadt::Hit,
        };
        match self.set_type {
            SetType::HashIp => {
                let ip = mask(addr(0), self.netmask);
                if ip.is_unspecified() {
                    return Kadt::Miss;
                }
                hit(&Key::Ip(ip))
            }
            SetType::HashNet => self.walk_cidrs(|c| Key::Net(net(addr(0), c)), hit),
            SetType::HashIpPort => hit(&Key::IpPort(addr(0), packet_port(h, flags[1]))),
            SetType::HashIpPortIp => {
                hit(&Key::IpPortIp(addr(0), packet_port(h, flags[1]), addr(2)))
            }
            SetType::HashIpPortNet => {
                let (a, p) = (addr(0), packet_port(h, flags[1]));
                self.walk_cidrs(|c| Key::IpPortNet(a, p, net(addr(2), c)), hit)
            }
            SetType::BitmapPort => {
                // ip_set_get_ip_port: TCP and UDP only.
                if !matches!(h.proto, PROTO_TCP | PROTO_UDP) {
                    return Kadt::Miss;
                }
                let port = match flags[0] {
                    SetFlag::Src => h.sport,
                    SetFlag::Dst => h.dport,
                };
                hit(&Key::Port(port))
            }
            SetType::ListSet => unreachable!("list:set is tested member by member"),
        }
    }

    /// `mtype_test_cidrs`: the set's prefix lengths, longest first; the
    /// first element found decides.
    fn walk_cidrs(&self, key: impl Fn(u8) -> Key, hit: impl Fn(&Key) -> Kadt) -> Kadt {
        for &c in self.cidrs.iter().rev() {
            match hit(&key(c)) {
                Kadt::Miss => continue,
                r => return r,
            }
        }
        Kadt::Miss
    }

    fn bad_element(&self, element: &str, why: impl Into<String>) -> IpSetErrorKind {
        IpSetErrorKind::BadElement {
            set_type: self.set_type.to_string(),
            element: element.to_string(),
            why: why.into(),
        }
    }

    /// The keys an `add` element stands for (ranges expanded).
    fn parse_element(&self, text: &str) -> Result<Vec<Key>, IpSetErrorKind> {
        let parts: Vec<&str> = text.split(',').collect();
        let want = match self.set_type {
            SetType::HashIp | SetType::HashNet | SetType::BitmapPort => 1,
            SetType::HashIpPort => 2,
            SetType::HashIpPortIp | SetType::HashIpPortNet => 3,
            SetType::ListSet => 1,
        };
        if parts.len() != want {
            return Err(self.bad_element(text, format!("expected {want} comma-separated part(s)")));
        }
        let err = |why: &str| self.bad_element(text, why);
        let limit = self.maxelem.saturating_add(1);
        let mut keys = Vec::new();
        match self.set_type {
            SetType::HashIp => {
                for ip in ip_range(parts[0], limit).map_err(|w| err(&w))? {
                    let ip = mask(ip, self.netmask);
                    if ip.is_unspecified() {
                        return Err(err("zero address"));
                    }
                    let k = Key::Ip(ip);
                    // A range under a netmask collapses onto networks.
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            SetType::HashNet => keys.push(Key::Net(net_part(parts[0]).map_err(|w| err(&w))?)),
            SetType::BitmapPort => {
                // bitmap:port accepts and ignores a protocol.
                let port_text = parts[0].rsplit_once(':').map_or(parts[0], |(_, p)| p);
                let (a, b) = port_range(port_text).ok_or_else(|| err("bad port or range"))?;
                if a < self.port_range.0 || b > self.port_range.1 {
                    return Err(err("out of the range of the set"));
                }
                keys.extend((a..=b).map(Key::Port));
            }
            SetType::HashIpPort | SetType::HashIpPortIp | SetType::HashIpPortNet => {
                let ips = ip_range(parts[0], limit).map_err(|w| err(&w))?;
                let pps = proto_ports(parts[1]).map_err(|w| err(&w))?;
                for ip in ips {
                    for &pp in &pps {
                        keys.push(match self.set_type {
                            SetType::HashIpPort => Key::IpPort(ip, pp),
                            SetType::HashIpPortIp => Key::IpPortIp(
                                ip,
                                pp,
                                parts[2].parse().map_err(|_| err("bad address"))?,
                            ),
                            _ => Key::IpPortNet(ip, pp, net_part(parts[2]).map_err(|w| err(&w))?),
                        });
                        if keys.len() > self.maxelem {
                            return Err(IpSetErrorKind::SetFull {
                                set: self.name.clone(),
                                max: self.maxelem,
                            });
                        }
                    }
                }
            }
            SetType::ListSet => unreachable!("list:set members are set names"),
        }
        Ok(keys)
    }

    /// The options after an element, checked against the create options.
    fn element_options(&self, args: &[String], line: usize) -> Result<Element, IpSetErrorKind> {
        let mut e = Element {
            key: Key::Port(0),
            nomatch: false,
            timeout: None,
            packets: None,
            bytes: None,
            comment: None,
            skbmark: None,
            skbprio: None,
            skbqueue: None,
            line,
        };
        let mut it = args.iter();
        while let Some(opt) = it.next() {
            let needs = |needs: &str| IpSetErrorKind::ElementOption {
                option: opt.clone(),
                needs: needs.to_string(),
            };
            if opt == "nomatch" {
                if !self.set_type.has_nomatch() {
                    return Err(IpSetErrorKind::UnknownOption {
                        set_type: self.set_type.to_string(),
                        option: opt.clone(),
                    });
                }
                e.nomatch = true;
                continue;
            }
            let v = it
                .next()
                .ok_or_else(|| IpSetErrorKind::MissingValue(opt.clone()))?;
            let bad = || IpSetErrorKind::BadValue {
                option: opt.clone(),
                value: v.clone(),
            };
            match opt.as_str() {
                "timeout" if self.timeout.is_none() => return Err(needs("timeout")),
                "timeout" => e.timeout = Some(v.parse().map_err(|_| bad())?),
                "packets" | "bytes" if !self.counters => return Err(needs("counters")),
                "packets" => e.packets = Some(v.parse().map_err(|_| bad())?),
                "bytes" => e.bytes = Some(v.parse().map_err(|_| bad())?),
                "comment" if !self.comment => return Err(needs("comment")),
                "comment" => e.comment = Some(v.clone()),
                "skbmark" | "skbprio" | "skbqueue" if !self.skbinfo => {
                    return Err(needs("skbinfo"))
                }
                "skbmark" => e.skbmark = Some(v.clone()),
                "skbprio" => e.skbprio = Some(v.clone()),
                "skbqueue" => e.skbqueue = Some(v.clone()),
                _ => {
                    return Err(IpSetErrorKind::UnknownOption {
                        set_type: self.set_type.to_string(),
                        option: opt.clone(),
                    })
                }
            }
        }
        Ok(e)
    }

    /// This set's `create` and `add` lines as `ipset save` prints them
    /// (extensions in the kernel's order: timeout, nomatch, counters,
    /// comment, skbinfo).
    pub fn write_save(&self, out: &mut String) {
        let _ = write!(out, "create {} {}", self.name, self.set_type);
        for (k, v) in &self.options {
            let _ = write!(out, " {k}");
            if let Some(v) = v {
                let _ = write!(out, " {v}");
            }
        }
        out.push('\n');
        for e in &self.elements {
            let _ = write!(out, "add {} {}", self.name, e.key);
            if let Some(t) = e.timeout.or(self.timeout) {
                let _ = write!(out, " timeout {t}");
            }
            if e.nomatch {
                out.push_str(" nomatch");
            }
            if self.counters {
                let _ = write!(
                    out,
                    " packets {} bytes {}",
                    e.packets.unwrap_or(0),
                    e.bytes.unwrap_or(0)
                );
            }
            if let Some(c) = &e.comment {
                let _ = write!(out, " comment \"{c}\"");
            }
            for (k, v) in [
                ("skbmark", &e.skbmark),
                ("skbprio", &e.skbprio),
                ("skbqueue", &e.skbqueue),
            ] {
                if let Some(v) = v {
                    let _ = write!(out, " {k} {v}");
                }
            }
            out.push('\n');
        }
    }
}

/// Split a line into words; `"..."` groups words (ipset comments).
fn tokenize(text: &str) -> Result<Vec<String>, IpSetErrorKind> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(IpSetErrorKind::UnterminatedQuote),
                    Some('"') => break,
                    Some(c) => word.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// The packet's (protocol, port) for one dimension: `ip_set_get_ip4_port`.
fn packet_port(h: &Headers, flag: SetFlag) -> ProtoPort {
    let port = match h.proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE => match flag {
            SetFlag::Src => h.sport,
            SetFlag::Dst => h.dport,
        },
        PROTO_ICMP => u16::from(h.icmp_type) << 8 | u16::from(h.icmp_code),
        _ => 0,
    };
    ProtoPort {
        proto: h.proto,
        port,
    }
}

fn mask(a: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    net(a, prefix).network()
}

fn net(a: Ipv4Addr, prefix: u8) -> Ipv4Net {
    Ipv4Net::new(a, prefix).expect("prefix <= 32").trunc()
}

fn net_text(n: &Ipv4Net) -> String {
    if n.prefix_len() == 32 {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

/// `IP[/CIDR]` of a net type; the kernel refuses /0 and keeps the network.
fn net_part(s: &str) -> Result<Ipv4Net, String> {
    let n = match s.split_once('/') {
        Some((a, c)) => {
            let a: Ipv4Addr = a.parse().map_err(|_| "bad address".to_string())?;
            let c: u8 = c.parse().map_err(|_| "bad CIDR".to_string())?;
            if !(1..=32).contains(&c) {
                return Err("CIDR must be 1..=32".into());
            }
            net(a, c)
        }
        None => net(s.parse().map_err(|_| "bad address".to_string())?, 32),
    };
    Ok(n)
}

/// `IP`, `IP/CIDR` or `IP-IP`, expanded (at most `limit` addresses).
fn ip_range(s: &str, limit: usize) -> Result<Vec<Ipv4Addr>, String> {
    let (first, last) = if let Some((a, b)) = s.split_once('-') {
        let a: Ipv4Addr = a.parse().map_err(|_| "bad address".to_string())?;
        let b: Ipv4Addr = b.parse().map_err(|_| "bad address".to_string())?;
        if b < a {
            return Err("range ends before it starts".into());
        }
        (u32::from(a), u32::from(b))
    } else if s.contains('/') {
        let n = net_part(s)?;
        (u32::from(n.network()), u32::from(n.broadcast()))
    } else {
        let a: Ipv4Addr = s.parse().map_err(|_| "bad address".to_string())?;
        (u32::from(a), u32::from(a))
    };
    if u64::from(last - first) + 1 > limit as u64 {
        return Err(format!(
            "range of {} addresses is larger than the set",
            u64::from(last - first) + 1
        ));
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then_some((a, b))
        }
        None => {
            let p = s.parse().ok()?;
            Some((p, p))
        }
    }
}

/// Protocol names ipset reads and prints (`/etc/protocols` spellings).
const PROTOCOLS: &[(&str, u8)] = &[
    ("icmp", 1),
    ("igmp", 2),
    ("tcp", 6),
    ("udp", 17),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("sctp", 132),
    ("udplite", 136),
];

/// ICMP type/code names ipset reads and prints (its `icmp.c` table; the
/// first name of a type/code is the one printed).
const ICMP_NAMES: &[(&str, u8, u8)] = &[
    ("echo-reply", 0, 0),
    ("pong", 0, 0),
    ("network-unreachable", 3, 0),
    ("host-unreachable", 3, 1),
    ("protocol-unreachable", 3, 2),
    ("port-unreachable", 3, 3),
    ("fragmentation-needed", 3, 4),
    ("source-route-failed", 3, 5),
    ("network-unknown", 3, 6),
    ("host-unknown", 3, 7),
    ("network-prohibited", 3, 9),
    ("host-prohibited", 3, 10),
    ("TOS-network-unreachable", 3, 11),
    ("TOS-host-unreachable", 3, 12),
    ("communication-prohibited", 3, 13),
    ("host-precedence-violation", 3, 14),
    ("precedence-cutoff", 3, 15),
    ("source-quench", 4, 0),
    ("network-redirect", 5, 0),
    ("host-redirect", 5, 1),
    ("TOS-network-redirect", 5, 2),
    ("TOS-host-redirect", 5, 3),
    ("echo-request", 8, 0),
    ("ping", 8, 0),
    ("router-advertisement", 9, 0),
    ("router-solicitation", 10, 0),
    ("ttl-zero-during-transit", 11, 0),
    ("ttl-zero-during-reassembly", 11, 1),
    ("ip-header-bad", 12, 0),
    ("required-option-missing", 12, 1),
    ("timestamp-request", 13, 0),
    ("timestamp-reply", 14, 0),
    ("address-mask-request", 17, 0),
    ("address-mask-reply", 18, 0),
];

/// `[PROTO:]PORT[-PORT]` (TCP when no protocol is given), expanded.
fn proto_ports(s: &str) -> Result<Vec<ProtoPort>, String> {
    let (proto_text, port_text) = match s.split_once(':') {
        Some((p, rest)) => (p, rest),
        None => ("tcp", s),
    };
    let proto = PROTOCOLS
        .iter()
        .find(|(n, _)| *n == proto_text)
        .map(|&(_, p)| p)
        .or_else(|| proto_text.parse().ok())
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("unknown protocol \"{proto_text}\""))?;
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_SCTP | PROTO_UDPLITE => {
            let (a, b) = port_range(port_text).ok_or_else(|| "bad port or range".to_string())?;
            Ok((a..=b).map(|port| ProtoPort { proto, port }).collect())
        }
        PROTO_ICMP => {
            let (t, c) = ICMP_NAMES
                .iter()
                .find(|(n, _, _)| *n == port_text)
                .map(|&(_, t, c)| (t, c))
                .or_else(|| {
                    let (t, c) = port_text.split_once('/')?;
                    Some((t.parse().ok()?, c.parse().ok()?))
                })
                .ok_or_else(|| format!("bad ICMP type \"{port_text}\" (name or TYPE/CODE)"))?;
            Ok(vec![ProtoPort {
                proto,
                port: u16::from(t) << 8 | u16::from(c),
            }])
        }
        _ if port_text == "0" => Ok(vec![ProtoPort { proto, port: 0 }]),
        _ => Err(format!(
            "protocol {proto_text} can be used with pseudo port value 0 only"
        )),
    }
}

fn proto_port_text(p: ProtoPort) -> String {
    let name = PROTOCOLS
        .iter()
        .find(|(_, n)| *n == p.proto)
        .map_or_else(|| p.proto.to_string(), |(s, _)| s.to_string());
    if p.proto == PROTO_ICMP {
        let (t, c) = ((p.port >> 8) as u8, (p.port & 0xff) as u8);
        return match ICMP_NAMES.iter().find(|&&(_, nt, nc)| (nt, nc) == (t, c)) {
            Some((n, _, _)) => format!("icmp:{n}"),
            None => format!("icmp:{t}/{c}"),
        };
    }
    format!("{name}:{}", p.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Headers, TCP_SYN};

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    const S: SetFlag = SetFlag::Src;
    const D: SetFlag = SetFlag::Dst;

    fn sets(text: &str) -> IpSets {
        IpSets::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `ipset save` output of a 6.18 kernel with ipset 7.17 (see the
    /// module's kernel check), covering every supported type.
    const SAVED: &str = "\
create T1 hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xae5d228b
add T1 10.0.0.1
add T1 10.0.0.0
create N hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x046b2a3b
add N 10.1.0.1
add N 10.0.0.7 nomatch
add N 10.0.0.0/24
create P hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xd93b6974
add P 10.96.0.10,sctp:9000
add P 10.96.0.10,tcp:80
add P 10.96.0.10,gre:0
add P 10.96.0.10,udp:53
add P 10.96.0.10,icmp:port-unreachable
add P 10.96.0.10,icmp:echo-request
create B bitmap:port range 0-65535
add B 30000
add B 30080
create NM hash:ip family inet hashsize 1024 maxelem 65536 netmask 24 bucketsize 12 initval 0x35fd0c32
add NM 10.5.5.0
create PI hash:ip,port,ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x03e05ff6
add PI 10.244.1.5,tcp:80,10.244.1.5 comment \"hello world\"
create PN hash:ip,port,net family inet hashsize 1024 maxelem 65536 timeout 300 counters bucketsize 12 initval 0x45fa52fe
add PN 1.2.3.4,tcp:443,10.1.0.0/16 timeout 299 nomatch packets 0 bytes 0
add PN 1.2.3.4,tcp:443,10.0.0.0/8 timeout 0 packets 0 bytes 0
create S bitmap:port range 100-200 counters
add S 150 packets 0 bytes 0
create X hash:ip,port,net family inet hashsize 1024 maxelem 65536 timeout 300 counters comment skbinfo bucketsize 12 initval 0xbbb40eaf
add X 1.2.3.4,udp:53,10.0.0.0/8 timeout 0 nomatch packets 5 bytes 7 comment \"hi there\" skbmark 0x1/0xff skbprio 1:2 skbqueue 3
create L list:set size 8
add L T1
add L N
";

    #[test]
    fn save_output_round_trips_byte_for_byte() {
        let s = sets(SAVED);
        assert_eq!(s.to_ipset_save(), SAVED);
        assert_eq!(s.sets().len(), 10);
        assert_eq!(s.get("P").unwrap().elements.len(), 6);
        assert_eq!(s.get("L").unwrap().set_type.dimension(), 1);
    }

    #[test]
    fn restore_ranges_expand_like_the_kernel_stores_them() {
        let s = sets(
            "create T hash:ip\nadd T 10.0.0.0/30\nadd T 10.0.1.1-10.0.1.2\n\
             create NM hash:ip netmask 24\nadd NM 10.5.5.5\n\
             create P hash:ip,port\nadd P 1.1.1.1,80-81\nadd P 1.1.1.1,icmp:8/0\nadd P 1.1.1.1,icmp:3/8\n\
             create B bitmap:port range 0-65535\nadd B udp:160-161\n",
        );
        assert_eq!(
            s.to_ipset_save(),
            "create T hash:ip\nadd T 10.0.0.0\nadd T 10.0.0.1\nadd T 10.0.0.2\nadd T 10.0.0.3\nadd T 10.0.1.1\nadd T 10.0.1.2\n\
             create NM hash:ip netmask 24\nadd NM 10.5.5.0\n\
             create P hash:ip,port\nadd P 1.1.1.1,tcp:80\nadd P 1.1.1.1,tcp:81\nadd P 1.1.1.1,icmp:echo-request\nadd P 1.1.1.1,icmp:3/8\n\
             create B bitmap:port range 0-65535\nadd B 160\nadd B 161\n"
        );
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("flush\n", 1, "unknown command \"flush\""),
            ("create A hash:mac\n", 1, "unknown set type \"hash:mac\""),
            ("create A hash:ip family inet6\n", 1, "family \"inet6\""),
            (
                "create A hash:ip range 1-2\n",
                1,
                "option \"range\" is not valid for hash:ip",
            ),
            ("create A bitmap:port\n", 1, "range option"),
            ("create A hash:ip maxelem\n", 1, "needs a value"),
            ("create A hash:ip\ncreate A hash:net\n", 2, "created twice"),
            ("add A 1.2.3.4\n", 1, "set \"A\" is not created"),
            (
                "create A hash:ip\n\nadd A 1.2.3\n",
                3,
                "does not fit hash:ip: bad address",
            ),
            (
                "create A hash:ip,port\nadd A 1.2.3.4\n",
                2,
                "expected 2 comma-separated",
            ),
            (
                "create A hash:ip,port\nadd A 1.2.3.4,gre:5\n",
                2,
                "pseudo port value 0 only",
            ),
            (
                "create A hash:ip,port\nadd A 1.2.3.4,icmp:bogus\n",
                2,
                "bad ICMP type",
            ),
            (
                "create A hash:net\nadd A 0.0.0.0/0\n",
                2,
                "CIDR must be 1..=32",
            ),
            ("create A hash:ip\nadd A 0.0.0.0\n", 2, "zero address"),
            (
                "create A bitmap:port range 100-200\nadd A 250\n",
                2,
                "out of the range",
            ),
            (
                "create A hash:ip\nadd A 1.1.1.1\nadd A 1.1.1.1\n",
                3,
                "already in set",
            ),
            (
                "create A hash:ip\nadd A 1.1.1.1 timeout 5\n",
                2,
                "created with \"timeout\"",
            ),
            (
                "create A hash:ip\nadd A 1.1.1.1 nomatch\n",
                2,
                "\"nomatch\" is not valid",
            ),
            (
                "create A hash:ip comment\nadd A 1.1.1.1 comment \"x\n",
                2,
                "unterminated",
            ),
            (
                "create A hash:ip maxelem 2\nadd A 1.1.1.0/30\n",
                2,
                "larger than the set",
            ),
            (
                "create A hash:ip maxelem 1\nadd A 1.1.1.1\nadd A 1.1.1.2\n",
                3,
                "is full",
            ),
            (
                "create L list:set\ncreate M list:set\nadd M L\n",
                3,
                "cannot be a member",
            ),
            (
                "create L list:set\nadd L NOPE\n",
                2,
                "\"NOPE\" is not created",
            ),
        ];
        for (text, line, msg) in cases {
            let e = IpSets::parse(text).unwrap_err();
            assert_eq!(e.line, *line, "{text}: {e}");
            assert!(e.to_string().contains(msg), "{e} should mention {msg}");
        }
    }

    fn tcp(src: &str, sport: u16, dst: &str, dport: u16) -> Headers {
        Headers::tcp(a(src), sport, a(dst), dport, TCP_SYN)
    }

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Headers {
        Headers::udp(a(src), sport, a(dst), dport)
    }

    fn t(s: &IpSets, name: &str, h: Headers, flags: &[SetFlag]) -> bool {
        s.test(name, &h, flags, false).expect("set exists")
    }

    #[test]
    fn hash_ip_picks_source_or_destination_and_applies_netmask() {
        let s = sets(SAVED);
        let h = tcp("10.0.0.1", 1000, "8.8.8.8", 80);
        assert!(t(&s, "T1", h, &[S]));
        assert!(!t(&s, "T1", h, &[D]));
        // Extra flags are ignored: the set has one dimension.
        assert!(t(&s, "T1", h, &[S, D, D]));
        assert!(t(&s, "NM", tcp("1.1.1.1", 1, "10.5.5.77", 2), &[D]));
        assert!(!t(&s, "NM", tcp("1.1.1.1", 1, "10.5.6.77", 2), &[D]));
        assert_eq!(s.test("NOPE", &h, &[S], false), None);
    }

    #[test]
    fn hash_net_longest_prefix_decides_and_nomatch_excludes() {
        // The kernel's own nethash.t sequence.
        let s = sets(
            "create test hash:net\nadd test 1.1.1.1 nomatch\nadd test 1.1.1.0/30\n\
             add test 1.1.1.0/28 nomatch\nadd test 1.1.1.0/26\n",
        );
        let at = |ip: &str, rn: bool| s.test("test", &udp(ip, 1, "9.9.9.9", 2), &[S], rn).unwrap();
        assert!(!at("1.1.1.1", false));
        assert!(at("1.1.1.3", false));
        assert!(!at("1.1.1.4", false));
        assert!(at("1.1.1.16", false));
        assert!(!at("1.1.2.1", false));
        // --return-nomatch turns both around; a miss stays a miss.
        assert!(at("1.1.1.1", true));
        assert!(!at("1.1.1.3", true));
        assert!(at("1.1.1.4", true));
        assert!(!at("1.1.2.1", true));
    }

    #[test]
    fn hash_ip_port_keys_protocol_and_port_by_flag() {
        let s = sets(SAVED);
        let to_svc = tcp("10.244.1.5", 40000, "10.96.0.10", 80);
        assert!(t(&s, "P", to_svc, &[D, D]));
        // src for the port dimension reads the source port.
        assert!(!t(&s, "P", to_svc, &[D, S]));
        assert!(t(&s, "P", tcp("10.244.1.5", 80, "10.96.0.10", 1), &[D, S]));
        // One flag for a two-dimensional set never matches.
        assert!(!t(&s, "P", to_svc, &[D]));
        // The protocol is part of the key.
        assert!(!t(
            &s,
            "P",
            udp("10.244.1.5", 40000, "10.96.0.10", 80),
            &[D, D]
        ));
        assert!(t(
            &s,
            "P",
            udp("10.244.1.5", 40000, "10.96.0.10", 53),
            &[D, D]
        ));
        let sctp = Headers::sctp(a("1.1.1.1"), 5, a("10.96.0.10"), 9000);
        assert!(t(&s, "P", sctp, &[D, D]));
        // ICMP: type << 8 | code whatever the flag.
        let ping = Headers::icmp_echo(a("1.1.1.1"), a("10.96.0.10"), 7);
        assert!(t(&s, "P", ping, &[D, S]));
        let mut gre = ping;
        gre.proto = 47;
        assert!(t(&s, "P", gre, &[D, D]));
    }

    #[test]
    fn hash_ip_port_ip_and_net_three_dimensions() {
        let s = sets(SAVED);
        // KUBE-LOOP-BACK: dst,dst,src — a pod hairpinning to itself.
        let hairpin = tcp("10.244.1.5", 40000, "10.244.1.5", 80);
        assert!(t(&s, "PI", hairpin, &[D, D, S]));
        assert!(!t(
            &s,
            "PI",
            tcp("10.244.1.6", 40000, "10.244.1.5", 80),
            &[D, D, S]
        ));
        assert!(!t(&s, "PI", hairpin, &[D, D]));
        // KUBE-LOAD-BALANCER-SOURCE-CIDR: dst,dst,src with nets.
        let from = |src: &str| tcp(src, 5000, "1.2.3.4", 443);
        assert!(t(&s, "PN", from("10.2.0.1"), &[D, D, S]));
        assert!(!t(&s, "PN", from("10.1.0.1"), &[D, D, S]));
        assert!(s.test("PN", &from("10.1.0.1"), &[D, D, S], true).unwrap());
        assert!(!t(&s, "PN", from("11.0.0.1"), &[D, D, S]));
    }

    #[test]
    fn bitmap_port_matches_tcp_and_udp_only() {
        let s = sets(SAVED);
        assert!(t(&s, "B", tcp("1.1.1.1", 1, "2.2.2.2", 30080), &[D]));
        assert!(t(&s, "B", udp("1.1.1.1", 30000, "2.2.2.2", 9), &[S]));
        assert!(!t(&s, "B", udp("1.1.1.1", 30000, "2.2.2.2", 9), &[D]));
        let sctp = Headers::sctp(a("1.1.1.1"), 1, a("2.2.2.2"), 30080);
        assert!(!t(&s, "B", sctp, &[D]));
        assert!(!t(&s, "S", tcp("1.1.1.1", 1, "2.2.2.2", 250), &[D]));
    }

    #[test]
    fn list_set_matches_when_any_member_does() {
        let s = sets(SAVED);
        assert!(t(&s, "L", tcp("10.0.0.1", 1, "9.9.9.9", 2), &[S]));
        assert!(t(&s, "L", tcp("10.0.0.9", 1, "9.9.9.9", 2), &[S]));
        assert!(!t(&s, "L", tcp("10.0.0.7", 1, "9.9.9.9", 2), &[S]));
        assert!(!t(&s, "L", tcp("9.9.9.9", 1, "10.0.0.1", 2), &[S]));
    }
}
