//! The kernel's IPv4 netfilter hooks, in order, with conntrack and NAT.
//!
//! A packet arriving on an interface ([`Stack::receive`]):
//!
//! ```text
//! PREROUTING: raw(-300) → conntrack lookup(-200) → mangle(-150) → nat DNAT(-100)
//! routing decision (caller's [`Router`])
//!   local:   INPUT:   mangle(-150) → filter(0) → security(50) → nat SNAT(100) → confirm
//!   forward: FORWARD: mangle → filter → security
//!            POSTROUTING: mangle(-150) → nat SNAT(100) → confirm
//! ```
//!
//! A locally generated packet ([`Stack::output`]):
//!
//! ```text
//! routing → OUTPUT: raw → conntrack → mangle (re-route if the mark changed)
//!         → nat DNAT (re-route if the destination changed) → filter → security
//!         → POSTROUTING: mangle → nat SNAT → confirm
//! ```
//!
//! NAT follows `nf_nat_inet_fn`: the nat chains run only for a connection's
//! first packet (an unconfirmed entry whose binding for this manipulation
//! is not yet set up). If no NAT rule fires, a null binding is recorded, so
//! later packets never consult the nat table. Every packet of a tracked
//! connection is then rewritten toward the inverse of the other direction's
//! tuple: DNAT at PREROUTING/OUTPUT, SNAT at INPUT/POSTROUTING; for replies
//! this undoes the original's NAT.
//!
//! An ICMP error RELATED to a connection never sees the nat table; at each
//! NAT hook it is translated as `nf_nat_icmp_reply_translation` does: the
//! quoted datagram and the outer header are both rewritten, so an error
//! about a DNATed packet reaches the client from, and about, the address
//! the client used ([`icmp_reply_translation`]).

use super::eval::*;
use super::rule::*;
use crate::conntrack::{pick_port, Conn, ConntrackTable, Direction, Lookup, State, Tuple};
use crate::prob::Chooser;
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

    /// Tables attached to the hook, in priority order (`nat` is handled
    /// separately because it only runs for new connections). Conntrack's
    /// lookup runs right after `raw` (priority -200); its confirmation
    /// closes INPUT and POSTROUTING, where a packet leaves netfilter.
    pub fn tables(self) -> &'static [TableName] {
        use TableName::*;
        match self {
            Hook::Prerouting => &[Raw, Mangle, Nat],
            Hook::Input => &[Mangle, Filter, Security, Nat],
            Hook::Forward => &[Mangle, Filter, Security],
            Hook::Output => &[Raw, Mangle, Nat, Filter, Security],
            Hook::Postrouting => &[Mangle, Nat],
        }
    }

    /// Whether the hook manipulates destinations (DNAT) or sources (SNAT).
    fn is_dnat_hook(self) -> bool {
        matches!(self, Hook::Prerouting | Hook::Output)
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
    /// A received packet whose source is one of this host's own addresses:
    /// the input route lookup refuses it as a martian (`fib_validate_source`
    /// without `accept_local`), whatever `rp_filter` says.
    MartianSource,
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
        table: TableName,
        reason: DropReason,
    },
    /// No route to the destination.
    NoRoute(Headers),
    /// Refused by the input route lookup: the source is one of this host's
    /// own addresses.
    Martian(Headers),
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

/// A host's netfilter: its rules and state, with the hook traversal.
pub struct Stack<'a> {
    pub engine: &'a Engine,
    pub state: &'a mut HostState,
    pub opts: EvalOptions,
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
            Route::MartianSource => Ok(Outcome::Martian(f.ctx.headers)),
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
            // Output routes are never martian (the check is on input).
            Route::Unreachable | Route::MartianSource => Ok(Outcome::NoRoute(f.ctx.headers)),
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

    /// Run every table of `hook` (and conntrack where it sits); `Some` when
    /// the packet's passage ends here.
    fn run_hook_to(
        &mut self,
        hook: Hook,
        f: &mut InFlight,
        egress: Option<(&str, Ipv4Addr)>,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Option<Outcome>, EvalError> {
        for &table in hook.tables() {
            if table == TableName::Nat {
                if let Some(out) = self.nat(hook, f, egress, router, chooser, events)? {
                    return Ok(Some(out));
                }
                continue;
            }
            if let Some(out) = self.table(hook, table, f, router, chooser, events)? {
                return Ok(Some(out));
            }
            // Conntrack runs right after raw (priority -200).
            if table == TableName::Raw {
                self.track(hook, f, events);
            }
        }
        Ok(None)
    }

    fn table(
        &mut self,
        hook: Hook,
        table: TableName,
        f: &mut InFlight,
        router: &dyn Router,
        chooser: &mut dyn Chooser,
        events: &mut Vec<Event>,
    ) -> Result<Option<Outcome>, EvalError> {
        if !self.engine.has_chain(table, hook.chain()) {
            return Ok(None);
        }
        let mut steps = Vec::new();
        let verdict = self.engine.run(
            table,
            hook.chain(),
            &mut f.ctx,
            router,
            &mut self.state.matches,
            chooser,
            self.opts,
            &mut steps,
        )?;
        events.push(Event::Table {
            hook,
            table,
            steps,
            verdict: verdict.clone(),
        });
        Ok(drop_outcome(hook, table, verdict, &f.ctx.headers, events))
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
        let found = match self.state.conntrack.lookup(&f.ctx.headers) {
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

    /// The nat table at `hook`, or the stored binding's rewrite.
    fn nat(
        &mut self,
        hook: Hook,
        f: &mut InFlight,
        egress: Option<(&str, Ipv4Addr)>,
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
                if self.engine.has_chain(TableName::Nat, hook.chain()) {
                    events.push(Event::NatSkipped { hook });
                }
                apply_binding(hook, &conn, dir, &mut f.ctx.headers, events, true);
                Ok(None)
            }
            Attach::Related(id, dir) => {
                let (id, dir) = (*id, *dir);
                let conn = self.state.conntrack.get(id).expect("confirmed").clone();
                if self.engine.has_chain(TableName::Nat, hook.chain()) {
                    events.push(Event::NatSkipped { hook });
                }
                if !icmp_reply_translation(hook, &conn, dir, &mut f.ctx.headers, events) {
                    return Ok(Some(Outcome::Dropped {
                        hook,
                        table: TableName::Nat,
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
                let verdict = if self.engine.has_chain(TableName::Nat, hook.chain()) {
                    let mut steps = Vec::new();
                    let v = self.engine.run(
                        TableName::Nat,
                        hook.chain(),
                        &mut f.ctx,
                        router,
                        &mut self.state.matches,
                        chooser,
                        self.opts,
                        &mut steps,
                    )?;
                    events.push(Event::Table {
                        hook,
                        table: TableName::Nat,
                        steps,
                        verdict: v.clone(),
                    });
                    v
                } else {
                    TableVerdict::Accept
                };
                let Attach::New(conn) = &mut f.conn else {
                    unreachable!("attachment does not change during the nat table")
                };
                if let Some(out) = drop_outcome(
                    hook,
                    TableName::Nat,
                    verdict.clone(),
                    &f.ctx.headers,
                    events,
                ) {
                    return Ok(Some(out));
                }
                if let TableVerdict::Nat(action) = verdict {
                    {
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
                                table: TableName::Nat,
                                reason,
                            }));
                        }
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
                        table: TableName::Filter,
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
        Route::Unreachable | Route::MartianSource => None,
    }
}

/// How a table's verdict ends the packet's passage, if it does.
fn drop_outcome(
    hook: Hook,
    table: TableName,
    verdict: TableVerdict,
    packet: &Headers,
    events: &[Event],
) -> Option<Outcome> {
    let reason = match verdict {
        TableVerdict::Accept | TableVerdict::Nat(_) => return None,
        TableVerdict::Drop if ended_by_policy(events) => DropReason::Policy,
        TableVerdict::Drop => DropReason::Rule,
        TableVerdict::Reject(with) => DropReason::Reject {
            with,
            packet: *packet,
        },
    };
    Some(Outcome::Dropped {
        hook,
        table,
        reason,
    })
}

fn ended_by_policy(events: &[Event]) -> bool {
    matches!(
        events.last(),
        Some(Event::Table { steps, .. }) if matches!(steps.last(), Some(Step::Policy { .. }))
    )
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
