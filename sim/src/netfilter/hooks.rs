//! The kernel's IPv4 netfilter hooks, in order, with conntrack and NAT.
//!
//! Every rule language plugs in the same way ([`BaseChains`]): it
//! registers base chains on hooks, each at a priority, and runs one when
//! asked. An iptables table is one such base chain per hook it serves (raw
//! at -300, mangle -150, nat -100 or 100, filter 0, security 50); an
//! nftables base chain is another, at the priority it declares. At each
//! hook this module runs them all in priority order, with the kernel's own
//! entries between them: conntrack at -200 (`NF_IP_PRI_CONNTRACK`), the NAT
//! core at -100 on PREROUTING/OUTPUT and 100 on INPUT/POSTROUTING, confirm
//! at `INT_MAX`. For equal priorities the kernel's own entries (registered
//! when the modules load) come first, then the rule languages in the order
//! given (iptables first), each in its own order.
//!
//! A packet arriving on an interface ([`Stack::receive`]):
//!
//! ```text
//! PREROUTING: raw(-300) → conntrack lookup(-200) → mangle(-150) → NAT DNAT(-100)
//! routing decision (caller's [`Router`])
//!   local:   INPUT:   mangle(-150) → filter(0) → security(50) → NAT SNAT(100) → confirm
//!   forward: FORWARD: mangle → filter → security
//!            POSTROUTING: mangle(-150) → NAT SNAT(100) → confirm
//! ```
//!
//! A locally generated packet ([`Stack::output`]):
//!
//! ```text
//! routing → OUTPUT: raw → conntrack → mangle
//!         → NAT DNAT (re-route if the destination or mark changed) → filter → security
//!         → POSTROUTING: mangle → NAT SNAT → confirm
//! ```
//!
//! NAT follows `nf_nat_inet_fn`: every NAT-type base chain of the hook,
//! whatever its language and declared priority, runs inside the NAT core's
//! one hook entry (`nf_nat_register_fn` keeps them in a list ordered by
//! their own priorities), and only for a connection's first packet (an
//! unconfirmed entry whose binding for this manipulation is not yet set
//! up). They run in order until one sets up a binding or drops. If none
//! does, a null binding is recorded, so later packets never consult the
//! NAT chains. Every packet of a tracked connection is then rewritten
//! toward the inverse of the other direction's tuple: DNAT at
//! PREROUTING/OUTPUT, SNAT at INPUT/POSTROUTING; for replies this undoes
//! the original's NAT.
//!
//! An ICMP error RELATED to a connection never sees the NAT chains; at each
//! NAT hook it is translated as `nf_nat_icmp_reply_translation` does: the
//! quoted datagram and the outer header are both rewritten, so an error
//! about a DNATed packet reaches the client from, and about, the address
//! the client used ([`icmp_reply_translation`]).

use super::eval::*;
use super::rule::*;
use crate::conntrack::{pick_port, Conn, ConntrackTable, Direction, Lookup, State, Tuple};
use crate::prob::{Chooser, Probability};
use crate::wire::Headers;
use std::fmt;
use std::net::Ipv4Addr;

/// The five IPv4 hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn chain(self) -> &'static str {
        match self {
            Hook::Prerouting => "PREROUTING",
            Hook::Input => "INPUT",
            Hook::Forward => "FORWARD",
            Hook::Output => "OUTPUT",
            Hook::Postrouting => "POSTROUTING",
        }
    }

    /// Whether conntrack looks the packet up at this hook
    /// (`nf_conntrack_in`, at priority -200).
    fn tracks(self) -> bool {
        matches!(self, Hook::Prerouting | Hook::Output)
    }

    /// The NAT core's entry on this hook (`nf_nat_ipv4_ops`): destination
    /// NAT at -100, source NAT at 100; FORWARD has none.
    pub(super) fn nat_priority(self) -> Option<i32> {
        match self {
            Hook::Prerouting | Hook::Output => Some(PRI_NAT_DST),
            Hook::Input | Hook::Postrouting => Some(PRI_NAT_SRC),
            Hook::Forward => None,
        }
    }

    /// Whether the hook manipulates destinations (DNAT) or sources (SNAT).
    fn is_dnat_hook(self) -> bool {
        matches!(self, Hook::Prerouting | Hook::Output)
    }
}

/// `NF_IP_PRI_CONNTRACK`.
pub const PRI_CONNTRACK: i32 = -200;
/// `NF_IP_PRI_NAT_DST`.
pub const PRI_NAT_DST: i32 = -100;
/// `NF_IP_PRI_NAT_SRC`.
pub const PRI_NAT_SRC: i32 = 100;

/// A base chain some rule language registered on a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaseChain {
    /// The priority it was registered with.
    pub priority: i32,
    /// A NAT-type chain: it runs inside the NAT core's entry, for a
    /// connection's first packet only.
    pub nat: bool,
    /// The language's own handle for the chain.
    pub id: usize,
}

/// What one base chain decided, and the event that tells how.
#[derive(Clone, Debug)]
pub struct ChainOutcome {
    pub verdict: TableVerdict,
    /// The verdict is the chain's policy (no rule decided).
    pub by_policy: bool,
    /// Where the verdict came from, for drop outcomes.
    pub site: ChainSite,
    /// The walk, for the trace ([`Event::Table`] or [`Event::Chain`]).
    pub event: Event,
}

/// A rule language as the hooks see it: base chains at priorities.
pub trait BaseChains {
    /// Append the base chains registered at `hook`, in this language's own
    /// order (the stack orders everything by priority, stably).
    fn base_chains(&self, hook: Hook, out: &mut Vec<BaseChain>);

    /// Run one of them for the packet.
    #[allow(clippy::too_many_arguments)]
    fn run_chain(
        &self,
        hook: Hook,
        chain: BaseChain,
        pkt: &mut PacketCtx,
        host: &dyn HostFacts,
        state: &mut MatchState,
        chooser: &mut dyn Chooser,
        opts: EvalOptions,
    ) -> Result<ChainOutcome, EvalError>;
}

/// Which base chain ended a packet: an iptables table, or a chain of
/// another language's table (`ip kube-proxy` `filter-input`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainSite {
    Iptables(TableName),
    Chain { table: String, chain: String },
}

impl ChainSite {
    /// `filter`, or `ip kube-proxy filter-input`.
    pub fn name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ChainSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainSite::Iptables(t) => f.write_str(t.as_str()),
            ChainSite::Chain { table, chain } => write!(f, "{table} {chain}"),
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.chain())
    }
}

/// Where the routing decision sends a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this host (an address of one of its interfaces).
    Local,
    /// Out of `out_iface` toward `nexthop` (the gateway, or the destination
    /// itself when on-link).
    Forward {
        out_iface: String,
        nexthop: Ipv4Addr,
    },
    /// No route: the kernel answers ICMP net unreachable.
    Unreachable,
    /// The route lookup refuses the packet's addresses (see [`Martian`]).
    Martian(Martian),
}

/// Addresses the kernel's route lookup refuses, whatever the routes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Martian {
    /// A received packet whose source is one of this host's own
    /// addresses (`fib_validate_source` without `accept_local`), whatever
    /// `rp_filter` says.
    OwnSource,
    /// A received packet with a 127.0.0.0/8 source: refused as a martian
    /// source without `route_localnet`, and by `fib_validate_source` (a
    /// loopback address is local) with it. A packet this host sends with a
    /// 127.0.0.0/8 source out of a device other than `lo` is refused too
    /// (`__mkroute_output`: EINVAL) unless `route_localnet` is 1.
    LoopbackSource,
    /// A received packet for 127.0.0.0/8 on a device other than `lo`,
    /// without `route_localnet` (`ip_route_input_slow`: martian
    /// destination).
    LoopbackDestination,
}

impl Martian {
    /// Which address is at fault: `source` or `destination`.
    pub fn side(self) -> &'static str {
        match self {
            Martian::OwnSource | Martian::LoopbackSource => "source",
            Martian::LoopbackDestination => "destination",
        }
    }

    /// Why the kernel refuses it, in plain words.
    pub fn why(self) -> &'static str {
        match self {
            Martian::OwnSource => "the source is one of this host's own addresses",
            Martian::LoopbackSource => "a loopback source off the loopback device",
            Martian::LoopbackDestination => {
                "a loopback destination off the loopback device, route_localnet off"
            }
        }
    }
}

/// The host facts the hooks need: routes and addresses (the tracer owns
/// them).
pub trait Router: HostFacts {
    /// The routing decision for a packet (`fib_lookup`).
    fn route(&self, h: &Headers, in_iface: Option<&str>, mark: u32) -> Route;
    /// The source address MASQUERADE uses: `inet_select_addr(out, nexthop,
    /// RT_SCOPE_UNIVERSE)`, the interface's primary address in the next
    /// hop's subnet, or its first primary address.
    fn masquerade_source(&self, out_iface: &str, nexthop: Ipv4Addr) -> Option<Ipv4Addr>;
    /// Whether IP forwarding is on (`net.ipv4.ip_forward`).
    fn forwarding(&self) -> bool {
        true
    }
}

/// One event of a packet's passage through a host's netfilter, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The nat/filter/... table ran at a hook.
    Table {
        hook: Hook,
        table: TableName,
        steps: Vec<Step>,
        verdict: TableVerdict,
    },
    /// A base chain of another rule language (nftables) ran at a hook.
    Chain(ChainRun),
    /// The nat table was not consulted because the connection already has
    /// its binding (not its first packet).
    NatSkipped { hook: Hook },
    /// The conntrack lookup (at PREROUTING or OUTPUT).
    Conntrack { hook: Hook, found: CtFound },
    /// A NAT rewrite of the packet.
    Nat {
        hook: Hook,
        kind: NatKind,
        before: Headers,
        after: Headers,
    },
    /// A routing decision (and re-routes after OUTPUT changes).
    Routed { route: Route, reroute: bool },
    /// The connection entered the table.
    Confirmed { conn: Conn },
    /// The first packet's entry clashed with an existing one and was
    /// dropped (`insert_failed`).
    ConfirmFailed { conn: Conn },
}

/// A non-iptables base chain's walk, told in terms that need no ruleset to
/// render: every rule that decided comes with its text.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRun {
    pub hook: Hook,
    pub priority: i32,
    /// The table, with its family: `ip kube-proxy`.
    pub table: String,
    /// The base chain.
    pub chain: String,
    pub steps: Vec<ChainStep>,
    pub verdict: TableVerdict,
}

/// One step of a [`ChainRun`].
#[derive(Clone, Debug, PartialEq)]
pub enum ChainStep {
    /// The walk enters `chain` (the base chain, or by jump/goto).
    Enter {
        chain: String,
    },
    /// A rule whose every match held (so far: a rule ending in a verdict
    /// map is also recorded when its map had no element for the packet).
    Rule {
        chain: String,
        /// Position in the chain (0-based).
        index: usize,
        /// Line in the ruleset's text (0 when built in code).
        line: usize,
        /// The rule as the ruleset prints it.
        text: std::sync::Arc<str>,
    },
    /// A rule that did not match (only with `explain_misses`).
    Missed {
        chain: String,
        index: usize,
        line: usize,
        why: String,
    },
    /// A set or map lookup that decided: `@service-ips` (or an anonymous
    /// set), the key the packet gave, and the element that matched.
    Lookup {
        set: String,
        key: String,
        element: Option<String>,
    },
    /// `numgen random mod N`: the value drawn, with probability 1/N.
    Random {
        chain: String,
        index: usize,
        value: u32,
        modulus: u32,
        probability: Probability,
    },
    /// Back to the calling chain (explicit `return` or end of chain).
    Return {
        from: String,
        to: String,
    },
    /// The base chain's policy decided.
    Policy {
        chain: String,
        policy: Policy,
    },
    MarkSet {
        from: u32,
        to: u32,
    },
    ConnMarkSet {
        from: u32,
        to: u32,
    },
    /// A dynamic set got (or refreshed) an element: `update @set { key }`.
    SetUpdate {
        set: String,
        key: String,
    },
    Log {
        prefix: String,
    },
    Notrack,
}

/// What conntrack found for a packet.
#[derive(Clone, Debug, PartialEq)]
pub enum CtFound {
    New,
    Existing {
        id: u64,
        dir: Direction,
        state: State,
    },
    Invalid,
    Untracked,
}

/// Which rewrite happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    /// The nat table's DNAT on a new connection.
    Dnat,
    /// The nat table's SNAT or MASQUERADE on a new connection.
    Snat,
    /// A later packet's destination rewritten from the stored binding
    /// (an original-direction packet of a DNATed connection, or the reply of
    /// an SNATed one: un-SNAT).
    DnatFromConntrack,
    /// A later packet's source rewritten from the stored binding.
    SnatFromConntrack,
}

/// How a packet's passage through the host ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Accepted by INPUT: hand it to the local socket layer.
    Local(Headers),
    /// Leaves by `out_iface` toward `nexthop`.
    Transmit {
        headers: Headers,
        out_iface: String,
        nexthop: Ipv4Addr,
    },
    /// Dropped by a rule or policy.
    Dropped {
        hook: Hook,
        table: ChainSite,
        reason: DropReason,
    },
    /// No route to the destination.
    NoRoute(Headers),
    /// Refused by the route lookup for its addresses.
    Martian(Martian, Headers),
    /// Forwarding is needed but disabled.
    NotForwarded,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DropReason {
    Policy,
    Rule,
    /// `-j REJECT`: `packet` is the packet as REJECT saw it, the one its
    /// ICMP error quotes or its reset answers.
    Reject {
        with: RejectWith,
        packet: Headers,
    },
    /// MASQUERADE found no address on the egress interface.
    NoMasqueradeAddress,
    /// SNAT/MASQUERADE found no free port.
    NoFreePort,
    /// The conntrack entry clashed at confirmation.
    ConfirmClash,
    /// An ICMP redirect about a NATed connection: NAT refuses to translate
    /// it (`nf_nat_icmp_reply_translation` returns 0, the hook drops).
    NattedRedirect,
}

/// One host's netfilter state.
#[derive(Clone, Debug, Default)]
pub struct HostState {
    pub conntrack: ConntrackTable,
    pub matches: MatchState,
    /// Seed of the deterministic SNAT port choice.
    pub port_seed: u64,
}

/// A host's netfilter: its rule languages and state, with the hook
/// traversal.
pub struct Stack<'a> {
    /// Every rule language loaded on the host, iptables first.
    pub rulesets: Vec<&'a dyn BaseChains>,
    pub state: &'a mut HostState,
    pub opts: EvalOptions,
}

/// One entry of a hook, in the order the kernel runs them.
#[derive(Clone, Copy)]
enum Entry {
    /// A filter-type base chain of `rulesets[usize]`.
    Chain(usize, BaseChain),
    Conntrack,
    /// The NAT core, running the hook's NAT chains.
    Nat,
}

/// The packet in flight and its conntrack attachment.
struct InFlight {
    ctx: PacketCtx,
    conn: Attach,
}

enum Attach {
    /// Unconfirmed: the first packet of a connection.
    New(Conn),
    Existing(u64, Direction),
    /// An ICMP error related to a confirmed connection.
    Related(u64, Direction),
    None,
}

impl Stack<'_> {
    /// A packet arriving on `in_iface`.
    pub fn receive(
        &mut self,
        headers: Headers,
        in_iface: &str,
        mark: u32,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, EvalError> {
        let mut f = InFlight {
            ctx: PacketCtx {
                headers,
                in_iface: Some(in_iface.to_string()),
                out_iface: None,
                mark,
                ctmark: 0,
                ct: CtInfo::untracked(),
                notrack: false,
            },
            conn: Attach::None,
        };
        if let Some(out) = self.run_hook(Hook::Prerouting, &mut f, router, chooser, events)? {
            return Ok(out);
        }
        let route = router.route(&f.ctx.headers, Some(in_iface), f.ctx.mark);
        events.push(Event::Routed {
            route: route.clone(),
            reroute: false,
        });
        match route {
            Route::Unreachable => Ok(Outcome::NoRoute(f.ctx.headers)),
            Route::Martian(m) => Ok(Outcome::Martian(m, f.ctx.headers)),
            Route::Local => {
                if let Some(out) = self.run_hook(Hook::Input, &mut f, router, chooser, events)? {
                    return Ok(out);
                }
                if let Some(out) = self.confirm(&mut f, Hook::Input, events) {
                    return Ok(out);
                }
                Ok(Outcome::Local(f.ctx.headers))
            }
            Route::Forward { out_iface, nexthop } => {
                if !router.forwarding() {
                    return Ok(Outcome::NotForwarded);
                }
                f.ctx.out_iface = Some(out_iface.clone());
                if let Some(out) = self.run_hook(Hook::Forward, &mut f, router, chooser, events)? {
                    return Ok(out);
                }
                self.postrouting(f, out_iface, nexthop, router, chooser, events)
            }
        }
    }

    /// A packet the host itself sends (its source already chosen).
    pub fn output(
        &mut self,
        headers: Headers,
        mark: u32,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, EvalError> {
        let mut route = router.route(&headers, None, mark);
        events.push(Event::Routed {
            route: route.clone(),
            reroute: false,
        });
        let mut f = InFlight {
            ctx: PacketCtx {
                headers,
                in_iface: None,
                out_iface: route_iface(&route),
                mark,
                ctmark: 0,
                ct: CtInfo::untracked(),
                notrack: false,
            },
            conn: Attach::None,
        };
        let before = (f.ctx.headers.dst, f.ctx.mark);
        if let Some(out) = self.run_hook(Hook::Output, &mut f, router, chooser, events)? {
            return Ok(out);
        }
        // ip_route_me_harder: the destination or mark changed in OUTPUT.
        if (f.ctx.headers.dst, f.ctx.mark) != before {
            route = router.route(&f.ctx.headers, None, f.ctx.mark);
            events.push(Event::Routed {
                route: route.clone(),
                reroute: true,
            });
        }
        match route {
            Route::Unreachable => Ok(Outcome::NoRoute(f.ctx.headers)),
            // A loopback source routed out of another device (after a
            // DNAT in OUTPUT): `ip_route_me_harder` fails, the packet is
            // dropped.
            Route::Martian(m) => Ok(Outcome::Martian(m, f.ctx.headers)),
            // Local delivery goes out of `lo` and comes back in through it.
            Route::Local => self.postrouting(
                f,
                "lo".to_string(),
                Ipv4Addr::LOCALHOST,
                router,
                chooser,
                events,
            ),
            Route::Forward { out_iface, nexthop } => {
                f.ctx.out_iface = Some(out_iface.clone());
                self.postrouting(f, out_iface, nexthop, router, chooser, events)
            }
        }
    }

    fn postrouting(
        &mut self,
        mut f: InFlight,
        out_iface: String,
        nexthop: Ipv4Addr,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Outcome, EvalError> {
        f.ctx.out_iface = Some(out_iface.clone());
        f.ctx.in_iface = None;
        if let Some(out) = self.run_hook_to(
            Hook::Postrouting,
            &mut f,
            Some((&out_iface, nexthop)),
            router,
            chooser,
            events,
        )? {
            return Ok(out);
        }
        if let Some(out) = self.confirm(&mut f, Hook::Postrouting, events) {
            return Ok(out);
        }
        Ok(Outcome::Transmit {
            headers: f.ctx.headers,
            out_iface,
            nexthop,
        })
    }

    fn run_hook(
        &mut self,
        hook: Hook,
        f: &mut InFlight,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Option<Outcome>, EvalError> {
        self.run_hook_to(hook, f, None, router, chooser, events)
    }

    /// The hook's entries in kernel order, and its NAT chains (language,
    /// chain) in their own priority order.
    fn entries(&self, hook: Hook) -> (Vec<Entry>, Vec<(usize, BaseChain)>) {
        let mut all: Vec<(i32, Entry)> = Vec::new();
        if hook.tracks() {
            all.push((PRI_CONNTRACK, Entry::Conntrack));
        }
        if let Some(p) = hook.nat_priority() {
            all.push((p, Entry::Nat));
        }
        let mut nat = Vec::new();
        let mut chains = Vec::new();
        for (i, rs) in self.rulesets.iter().enumerate() {
            chains.clear();
            rs.base_chains(hook, &mut chains);
            for c in &chains {
                if c.nat {
                    if hook.nat_priority().is_some() {
                        nat.push((i, *c));
                    }
                } else {
                    all.push((c.priority, Entry::Chain(i, *c)));
                }
            }
        }
        all.sort_by_key(|(p, _)| *p);
        nat.sort_by_key(|(_, c)| c.priority);
        (all.into_iter().map(|(_, e)| e).collect(), nat)
    }

    /// Run every entry of `hook` in priority order; `Some` when the
    /// packet's passage ends here.
    fn run_hook_to(
        &mut self,
        hook: Hook,
        f: &mut InFlight,
        egress: Option<(&str, Ipv4Addr)>,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Option<Outcome>, EvalError> {
        let (entries, nat_chains) = self.entries(hook);
        for entry in entries {
            let out = match entry {
                Entry::Conntrack => {
                    self.track(hook, f, events);
                    None
                }
                Entry::Nat => self.nat(hook, f, egress, &nat_chains, router, chooser, events)?,
                Entry::Chain(i, c) => {
                    let run = self.run_chain(i, hook, c, f, router, chooser)?;
                    let out = drop_outcome(hook, &run, &f.ctx.headers);
                    events.push(run.event);
                    out
                }
            };
            if out.is_some() {
                return Ok(out);
            }
        }
        Ok(None)
    }

    fn run_chain(
        &mut self,
        lang: usize,
        hook: Hook,
        chain: BaseChain,
        f: &mut InFlight,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
    ) -> Result<ChainOutcome, EvalError> {
        self.rulesets[lang].run_chain(
            hook,
            chain,
            &mut f.ctx,
            router,
            &mut self.state.matches,
            chooser,
            self.opts,
        )
    }

    /// Conntrack lookup (`nf_conntrack_in`).
    fn track(&mut self, hook: Hook, f: &mut InFlight, events: &mut Vec<Event>) {
        if f.ctx.notrack {
            f.ctx.ct = CtInfo::untracked();
            events.push(Event::Conntrack {
                hook,
                found: CtFound::Untracked,
            });
            return;
        }
        let looped = f.ctx.in_iface.as_deref() == Some("lo");
        let lookup = if looped {
            self.state.conntrack.lookup_looped(&f.ctx.headers)
        } else {
            self.state.conntrack.lookup(&f.ctx.headers)
        };
        let found = match lookup {
            Lookup::Existing { id, dir } => {
                let conn = self.state.conntrack.get_mut(id).expect("indexed");
                if dir == Direction::Reply {
                    conn.seen_reply = true;
                }
                let state = if conn.seen_reply {
                    State::Established
                } else {
                    State::New
                };
                f.ctx.ct = ct_info(conn, dir, state);
                f.ctx.ctmark = conn.mark;
                f.conn = Attach::Existing(id, dir);
                CtFound::Existing { id, dir, state }
            }
            Lookup::Related { id, dir } => {
                let conn = self.state.conntrack.get(id).expect("indexed");
                f.ctx.ct = ct_info(conn, dir, State::Related);
                f.ctx.ctmark = conn.mark;
                f.conn = Attach::Related(id, dir);
                CtFound::Existing {
                    id,
                    dir,
                    state: State::Related,
                }
            }
            Lookup::New(conn) => {
                f.ctx.ct = ct_info(&conn, Direction::Original, State::New);
                f.conn = Attach::New(conn);
                CtFound::New
            }
            Lookup::Invalid => {
                f.ctx.ct = CtInfo {
                    state: State::Invalid,
                    ..CtInfo::untracked()
                };
                CtFound::Invalid
            }
        };
        events.push(Event::Conntrack { hook, found });
    }

    /// The NAT core at `hook`: the NAT chains for a first packet, or the
    /// stored binding's rewrite.
    #[allow(clippy::too_many_arguments)]
    fn nat(
        &mut self,
        hook: Hook,
        f: &mut InFlight,
        egress: Option<(&str, Ipv4Addr)>,
        nat_chains: &[(usize, BaseChain)],
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Option<Outcome>, EvalError> {
        let dnat = hook.is_dnat_hook();
        match &mut f.conn {
            Attach::None => Ok(None),
            Attach::Existing(id, dir) => {
                let (id, dir) = (*id, *dir);
                let conn = self.state.conntrack.get(id).expect("confirmed").clone();
                if !nat_chains.is_empty() {
                    events.push(Event::NatSkipped { hook });
                }
                apply_binding(hook, &conn, dir, &mut f.ctx.headers, events, true);
                Ok(None)
            }
            Attach::Related(id, dir) => {
                let (id, dir) = (*id, *dir);
                let conn = self.state.conntrack.get(id).expect("confirmed").clone();
                if !nat_chains.is_empty() {
                    events.push(Event::NatSkipped { hook });
                }
                if !icmp_reply_translation(hook, &conn, dir, &mut f.ctx.headers, events) {
                    return Ok(Some(Outcome::Dropped {
                        hook,
                        table: ChainSite::Iptables(TableName::Nat),
                        reason: DropReason::NattedRedirect,
                    }));
                }
                Ok(None)
            }
            Attach::New(conn) => {
                let initialized = if dnat {
                    conn.dnat_initialized
                } else {
                    conn.snat_initialized
                };
                if initialized {
                    let c = conn.clone();
                    apply_binding(
                        hook,
                        &c,
                        Direction::Original,
                        &mut f.ctx.headers,
                        events,
                        true,
                    );
                    return Ok(None);
                }
                // nf_nat_inet_fn: each NAT chain in turn until one binds.
                let mut action = None;
                for &(lang, chain) in nat_chains {
                    let run = self.run_chain(lang, hook, chain, f, router, chooser)?;
                    let out = drop_outcome(hook, &run, &f.ctx.headers);
                    events.push(run.event);
                    if out.is_some() {
                        return Ok(out);
                    }
                    if let TableVerdict::Nat(a) = run.verdict {
                        action = Some((a, run.site));
                        break;
                    }
                }
                let Attach::New(conn) = &mut f.conn else {
                    unreachable!("attachment does not change during the nat chains")
                };
                if let Some((action, site)) = action {
                    if let Err(reason) = bind(
                        conn,
                        &action,
                        egress,
                        router,
                        &self.state.conntrack,
                        self.state.port_seed,
                    ) {
                        return Ok(Some(Outcome::Dropped {
                            hook,
                            table: site,
                            reason,
                        }));
                    }
                }
                if dnat {
                    conn.dnat_initialized = true;
                } else {
                    conn.snat_initialized = true;
                }
                let c = conn.clone();
                apply_binding(
                    hook,
                    &c,
                    Direction::Original,
                    &mut f.ctx.headers,
                    events,
                    false,
                );
                f.ctx.ct.reply = Some(c.reply);
                f.ctx.ct.is_dnat = c.is_dnat();
                f.ctx.ct.is_snat = c.is_snat();
                Ok(None)
            }
        }
    }

    /// `__nf_conntrack_confirm`: a new connection enters the table; the
    /// packet's ctmark is stored either way.
    fn confirm(
        &mut self,
        f: &mut InFlight,
        hook: Hook,
        events: &mut Vec<Event>,
    ) -> Option<Outcome> {
        match std::mem::replace(&mut f.conn, Attach::None) {
            Attach::New(mut conn) => {
                conn.mark = f.ctx.ctmark;
                conn.dnat_initialized = true;
                conn.snat_initialized = true;
                if self.state.conntrack.confirm(conn.clone()) {
                    events.push(Event::Confirmed { conn });
                    None
                } else {
                    events.push(Event::ConfirmFailed { conn });
                    Some(Outcome::Dropped {
                        hook,
                        table: ChainSite::Iptables(TableName::Filter),
                        reason: DropReason::ConfirmClash,
                    })
                }
            }
            // A related packet carries its master connection: CONNMARK
            // on it writes the connection's mark.
            attach @ (Attach::Existing(id, _) | Attach::Related(id, _)) => {
                if let Some(c) = self.state.conntrack.get_mut(id) {
                    c.mark = f.ctx.ctmark;
                }
                f.conn = attach;
                None
            }
            Attach::None => None,
        }
    }
}

fn route_iface(route: &Route) -> Option<String> {
    match route {
        Route::Forward { out_iface, .. } => Some(out_iface.clone()),
        Route::Local => Some("lo".into()),
        Route::Unreachable | Route::Martian(_) => None,
    }
}

/// How a base chain's verdict ends the packet's passage, if it does.
fn drop_outcome(hook: Hook, run: &ChainOutcome, packet: &Headers) -> Option<Outcome> {
    let reason = match &run.verdict {
        TableVerdict::Accept | TableVerdict::Nat(_) => return None,
        TableVerdict::Drop if run.by_policy => DropReason::Policy,
        TableVerdict::Drop => DropReason::Rule,
        TableVerdict::Reject(with) => DropReason::Reject {
            with: with.clone(),
            packet: *packet,
        },
    };
    Some(Outcome::Dropped {
        hook,
        table: run.site.clone(),
        reason,
    })
}

fn ct_info(conn: &Conn, dir: Direction, state: State) -> CtInfo {
    CtInfo {
        state,
        dir,
        original: Some(conn.original),
        reply: Some(conn.reply),
        is_dnat: conn.is_dnat(),
        is_snat: conn.is_snat(),
    }
}

/// Rewrite the packet as the connection's binding says for this hook.
fn apply_binding(
    hook: Hook,
    conn: &Conn,
    dir: Direction,
    h: &mut Headers,
    events: &mut Vec<Event>,
    from_conntrack: bool,
) {
    let before = *h;
    if hook.is_dnat_hook() {
        let (addr, port) = conn.dnat_target(dir);
        h.dst = addr;
        if h.has_ports() {
            h.dport = port;
        }
    } else {
        let (addr, port) = conn.snat_target(dir);
        h.src = addr;
        if h.has_ports() {
            h.sport = port;
        }
    }
    if *h != before {
        let kind = match (hook.is_dnat_hook(), from_conntrack) {
            (true, false) => NatKind::Dnat,
            (false, false) => NatKind::Snat,
            (true, true) => NatKind::DnatFromConntrack,
            (false, true) => NatKind::SnatFromConntrack,
        };
        events.push(Event::Nat {
            hook,
            kind,
            before,
            after: *h,
        });
    }
}

/// `nf_nat_icmp_reply_translation` (net/netfilter/nf_nat_proto.c) for an
/// ICMP error related to `conn` in direction `dir`, at a NAT hook.
///
/// The hook's manipulation (destination at PREROUTING/OUTPUT, source at
/// INPUT/POSTROUTING) applies only if the connection has that kind of NAT,
/// with the roles swapped for reply-direction errors. Then the quoted
/// datagram gets the *opposite* manipulation toward the other direction's
/// tuple, and the outer header this hook's manipulation toward the inverse
/// of that tuple. So an error about a DNATed packet, travelling back,
/// leaves with the service address as its source and inside its quote.
///
/// Returns false when the packet must be dropped: an ICMP redirect about a
/// connection with any NAT (the kernel will not rewrite a redirect's
/// gateway, so it refuses the whole message).
pub fn icmp_reply_translation(
    hook: Hook,
    conn: &Conn,
    dir: Direction,
    h: &mut Headers,
    events: &mut Vec<Event>,
) -> bool {
    if h.icmp_type == crate::wire::ICMP_REDIRECT && (conn.is_snat() || conn.is_dnat()) {
        return false;
    }
    let manip_src = !hook.is_dnat_hook();
    // IPS_SRC_NAT for a source manipulation, IPS_DST_NAT for a destination
    // one, swapped in the reply direction.
    let want_snat = manip_src != (dir == Direction::Reply);
    let applies = if want_snat {
        conn.is_snat()
    } else {
        conn.is_dnat()
    };
    if !applies || h.inner.is_none() {
        return true;
    }
    let before = *h;
    // ct->tuplehash[!dir].tuple
    let other = match dir {
        Direction::Original => conn.reply,
        Direction::Reply => conn.original,
    };
    let q = h.inner.as_mut().expect("checked above");
    if manip_src {
        q.dst = other.dst;
        if q.has_ports() {
            q.dport = other.dport;
        }
    } else {
        q.src = other.src;
        if q.has_ports() {
            q.sport = other.sport;
        }
    }
    let target = other.invert();
    if manip_src {
        h.src = target.src;
    } else {
        h.dst = target.dst;
    }
    if *h != before {
        events.push(Event::Nat {
            hook,
            kind: if manip_src {
                NatKind::SnatFromConntrack
            } else {
                NatKind::DnatFromConntrack
            },
            before,
            after: *h,
        });
    }
    true
}

/// Set up the binding a NAT target asks for on a new connection
/// (`nf_nat_setup_info`), choosing ports like `get_unique_tuple`.
fn bind(
    conn: &mut Conn,
    action: &NatAction,
    egress: Option<(&str, Ipv4Addr)>,
    router: &dyn Router,
    table: &ConntrackTable,
    seed: u64,
) -> Result<(), DropReason> {
    let has_ports = conn.original.proto != crate::wire::PROTO_ICMP
        && matches!(conn.original.proto, 6 | 17 | 132);
    match action {
        NatAction::Dnat(spec) => {
            // The lowest address of the first range (the kernel hashes over
            // a multi-address range; kube-proxy always writes one address).
            if let Some(r) = spec.ranges.first() {
                conn.reply.src = r.first_addr;
                if has_ports {
                    if let Some(p) = r.ports {
                        conn.reply.sport = p.first;
                    }
                }
            }
            Ok(())
        }
        NatAction::Snat(spec) => {
            let Some(r) = spec.ranges.first() else {
                return Ok(());
            };
            snat_to(
                conn,
                r.first_addr,
                r.ports,
                spec.random || spec.random_fully,
                table,
                seed,
                has_ports,
            )
        }
        NatAction::Masquerade {
            to_ports,
            random,
            random_fully,
        } => {
            let (out, nexthop) = egress.ok_or(DropReason::NoMasqueradeAddress)?;
            let addr = router
                .masquerade_source(out, nexthop)
                .ok_or(DropReason::NoMasqueradeAddress)?;
            snat_to(
                conn,
                addr,
                *to_ports,
                *random || *random_fully,
                table,
                seed,
                has_ports,
            )
        }
    }
}

fn snat_to(
    conn: &mut Conn,
    addr: Ipv4Addr,
    ports: Option<PortRange>,
    random: bool,
    table: &ConntrackTable,
    seed: u64,
    has_ports: bool,
) -> Result<(), DropReason> {
    conn.reply.dst = addr;
    if !has_ports {
        return Ok(());
    }
    let orig = conn.original.sport;
    let range = match ports {
        Some(p) => (p.first, p.last),
        None if orig < 512 => (1, 511),
        None if orig < 1024 => (600, 1023),
        None => (1024, 65535),
    };
    let base = conn.reply;
    let tuple = conn.original;
    let port = pick_port(&tuple, orig, range, !random, seed, |p| {
        let candidate = Tuple { dport: p, ..base };
        !table.reply_taken(&candidate)
    })
    .ok_or(DropReason::NoFreePort)?;
    conn.reply.dport = port;
    Ok(())
}
