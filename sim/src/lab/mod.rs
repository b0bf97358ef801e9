//! The kernel lab: a scenario rebuilt out of real network namespaces, with
//! each node's generated rules loaded by `iptables-restore`, real
//! connections for every check and matrix cell, and the kernel's outcome
//! compared with kpsim's prediction.
//!
//! Layout: [`topology`] turns the network model into commands (pure),
//! [`netns`] runs them, [`agent`] holds the sockets (listeners standing in
//! for pods, raw observers, the probing client), [`compare`] judges samples
//! against predicted distributions.
//!
//! Invariants: every namespace carries the prefix `kpsim-lab-<pid>-` and is
//! deleted when the [`Lab`] is dropped (also on an error or Ctrl-C, which
//! stops probing); stale ones of dead runs are removed at start. Nothing is
//! created in the root namespace. Every probe is bounded by a timeout.
//! Between tries, conntrack and `recent` lists are flushed on every node,
//! so each try is a first packet, as each kpsim trace is.
//!
//! What the lab takes from the model rather than testing: the load
//! balancer. A namespace at the load balancer's address takes traffic for
//! LoadBalancer and external IPs (the sender, or a pod's node, routes those
//! addresses to it) and hands it to each eligible node in turn: routed
//! unchanged (`delivery: direct`) or NATed to the node's NodePort
//! (`delivery: nodePort`).

pub mod agent;
pub mod compare;
pub mod netns;
pub mod topology;

use crate::compile::Compiled;
use crate::network::{Delivery, HostKind};
use crate::trace::{self, Flow, FlowResult, Verdict};
use agent::{Agents, Listen, ListenSpec};
use compare::{Agreement, Ending, Outcome, Outcomes};
use netns::{Netns, NetnsError};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Per-probe timeout: far above a namespace round trip, short enough that
/// dropped flows stay cheap.
const PROBE_TIMEOUT: Duration = Duration::from_millis(400);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error(transparent)]
    Compile(#[from] crate::compile::CompileError),
    #[error("interrupted")]
    Interrupted,
}

/// One flow compared.
#[derive(Clone, Debug)]
pub struct FlowReport {
    /// `check: NAME` or `matrix: SENDER -> ENTRY`.
    pub label: String,
    pub predicted: BTreeMap<Outcomes, f64>,
    /// `None` when the flow could not be probed (the reason is in `skipped`).
    pub agreement: Option<Agreement>,
    pub skipped: Option<String>,
}

impl FlowReport {
    pub fn agrees(&self) -> bool {
        self.agreement
            .as_ref()
            .is_some_and(|a| a.problems.is_empty())
    }
}

#[derive(Clone, Debug)]
pub struct ScenarioReport {
    pub scenario: String,
    /// The prefix of the namespaces this run made (all gone by now).
    pub namespaces: String,
    pub flows: Vec<FlowReport>,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static RUNS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Stop probing on Ctrl-C so that namespaces are removed on the way out.
pub fn catch_interrupt() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
}

/// Why this machine cannot run the lab, if it cannot.
pub fn unavailable() -> Option<String> {
    netns::unavailable()
}

/// kpsim's probability for each outcome (sequence) of a probe.
type Distribution = BTreeMap<Outcomes, f64>;

/// What to compare: one flow, or a sequence of flows from one client
/// (all to the same place) with no reset in between.
#[derive(Clone, Debug)]
struct Probe {
    label: String,
    flows: Vec<Flow>,
}

/// The flows of a scenario: its checks, then its matrix (and, with
/// `corners`, the entry points where kube-proxy's modes part ways).
fn probes(c: &Compiled, corners: bool) -> Result<Vec<Probe>, LabError> {
    let mut out = Vec::new();
    for check in &c.scenario.checks {
        out.push(Probe {
            label: format!("check: {}", check.name),
            flows: vec![c.flow(&check.from, &check.to, None, 0)?],
        });
    }
    let entries = crate::matrix::entries(c);
    for s in crate::matrix::senders(c) {
        for e in &entries {
            out.push(Probe {
                label: format!("matrix: {} -> {}", c.cluster.host_name(s), e.label),
                flows: vec![e.flow(s)],
            });
        }
    }
    if corners {
        // Not SCTP: the lab's kernel has no SCTP stack, so a host's closed
        // SCTP port stays silent there instead of answering ABORT.
        let corner = crate::matrix::corner_entries(c);
        for (s, e) in corner
            .into_iter()
            .filter(|(_, e)| e.proto != crate::wire::PROTO_SCTP)
        {
            out.push(Probe {
                label: format!("corner: {} -> {}", c.cluster.host_name(s), e.label),
                flows: vec![e.flow(s)],
            });
        }
    }
    Ok(out)
}

/// kpsim's distribution, in the kernel's terms.
fn predict(c: &Compiled, flows: &[Flow]) -> Result<(Distribution, Vec<FlowResult>), LabError> {
    let mut dist = Distribution::new();
    let mut results = Vec::new();
    for (p, rs) in trace::trace(&c.cluster, flows)? {
        let key = Outcomes(rs.iter().map(outcome_of).collect());
        *dist.entry(key).or_default() += p.to_f64();
        results.extend(rs);
    }
    Ok((dist, results))
}

/// A second connection from the same client a second later, when kpsim
/// says it follows the first (session affinity): the kernel must agree
/// that it sticks. `None` when the second is as random as the first.
fn sticky_sequence(
    c: &Compiled,
    probe: &Probe,
    single: &Distribution,
) -> Result<Option<(Probe, Distribution)>, LabError> {
    if single.len() < 2 {
        return Ok(None);
    }
    let first = probe.flows[0].clone();
    let again = Flow {
        at: 1,
        ..first.clone()
    };
    let seq = Probe {
        label: format!("{}, then again from the same client", probe.label),
        flows: vec![first, again],
    };
    let (dist, _) = predict(c, &seq.flows)?;
    Ok((dist.len() == single.len()).then_some((seq, dist)))
}

fn outcome_of(r: &FlowResult) -> Outcome {
    let reached = match (r.delivered_to(), r.seen()) {
        (Some(pod), Some(seen)) => Some((pod.to_string(), seen.src)),
        _ => None,
    };
    let ending = match r.forward.verdict {
        Verdict::Delivered if r.reply_ok == Some(true) => Ending::Answered,
        Verdict::Rejected | Verdict::ClosedPort => Ending::Refused,
        _ => Ending::Silent,
    };
    Outcome { reached, ending }
}

/// A scenario's cluster, built in namespaces.
struct Lab<'c> {
    c: &'c Compiled,
    /// The sockets; stopped first (see `Drop`), before the namespaces
    /// they live in are deleted.
    agents: Option<Agents>,
    /// Host index → its namespace.
    hosts: Vec<Netns>,
    /// The load balancer's namespace (`delivery: nodePort` only).
    lb: Option<Netns>,
    /// The physical network; kept alive for the lab's lifetime.
    _lan: Netns,
    next_port: u16,
    /// Prefix of this lab's namespaces.
    run: String,
    /// Per node host: `nft` commands flushing its dynamic sets.
    dynamic_sets: BTreeMap<usize, String>,
}

impl<'c> Lab<'c> {
    fn build(
        c: &'c Compiled,
        listen: &BTreeMap<usize, Vec<Listen>>,
        opts: &Options,
    ) -> Result<Lab<'c>, LabError> {
        let run = format!(
            "{}{}-{}-",
            netns::PREFIX,
            std::process::id(),
            RUNS.fetch_add(1, Ordering::SeqCst)
        );
        let net = &c.cluster.network;
        let lan = Netns::create(format!("{run}lan"))?;
        let hosts = (0..net.hosts.len())
            .map(|i| Netns::create(format!("{run}h{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        apply(&topology::plan(net), &lan, &hosts)?;
        for (n, node) in c.scenario.nodes.iter().enumerate() {
            let h = net.host_index(&node.name).expect("node host");
            match opts.kernel_rules.get(&node.name) {
                Some(t) => load_rules(&hosts[h], t)?,
                None => {
                    hosts[h].exec(&["iptables-restore"], Some(&c.rules(n).to_iptables_save()))?;
                    if let Some(rs) = c.nft_rules(n) {
                        hosts[h].exec(&["nft", "-f", "-"], Some(&rs.to_nft()))?;
                    }
                }
            }
            if let Some(settings) = opts.kernel_sysctls.get(&node.name) {
                let mut args = vec!["sysctl".to_string(), "-q".into(), "-w".into()];
                args.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                hosts[h].exec(&args, None)?;
            }
        }
        let lb = if net.load_balancer.frontends.is_empty() {
            None
        } else {
            let address = match net.load_balancer.delivery {
                Delivery::NodePort { address } => address,
                Delivery::Direct => c.scenario.cluster.load_balancer.address,
            };
            Some(load_balancer(&run, &lan, address)?)
        };
        let specs: Vec<ListenSpec> = listen
            .iter()
            .map(|(h, listens)| ListenSpec {
                netns: hosts[*h].name.clone(),
                listens: listens.clone(),
                addresses: net.hosts[*h].net.addresses(),
            })
            .collect();
        let agents = Agents::start(&specs)?;
        let mut dynamic_sets = BTreeMap::new();
        for (n, node) in c.scenario.nodes.iter().enumerate() {
            let h = net.host_index(&node.name).expect("node host");
            let rs = match opts.kernel_rules.get(&node.name) {
                Some(t) if crate::compile::is_nft_text(t) => {
                    crate::nftables::Ruleset::parse(t).ok()
                }
                Some(_) => None,
                None => c.nft_rules(n).cloned(),
            };
            let flush = rs.map(|rs| flush_dynamic_sets(&rs)).unwrap_or_default();
            if !flush.is_empty() {
                dynamic_sets.insert(h, flush);
            }
        }
        Ok(Lab {
            c,
            agents: Some(agents),
            hosts,
            lb,
            _lan: lan,
            next_port: 20000,
            run,
            dynamic_sets,
        })
    }

    /// Flush conntrack, `recent` lists and nftables dynamic sets (session
    /// affinity) on every node: the next try is a first packet from a
    /// client nobody remembers.
    fn reset(&self) -> Result<(), LabError> {
        for (i, h) in self.c.cluster.network.hosts.iter().enumerate() {
            if h.kind == HostKind::Node {
                let ns = &self.hosts[i];
                ns.exec(
                    &[
                        "sh",
                        "-c",
                        "conntrack -F 2>/dev/null; for f in /proc/net/xt_recent/*; do [ -e \"$f\" ] && echo / > \"$f\"; done; true",
                    ],
                    None,
                )?;
                if let Some(flush) = self.dynamic_sets.get(&i) {
                    ns.exec(&["nft", "-f", "-"], Some(flush))?;
                }
            }
        }
        if let Some(lb) = &self.lb {
            lb.exec(&["sh", "-c", "conntrack -F 2>/dev/null; true"], None)?;
        }
        Ok(())
    }

    /// The nodes a frontend's traffic may go to, when `flow` is for a
    /// frontend the sender reaches through the load balancer (from any
    /// sender: a node's or pod's packet reaches it too when no rule on its
    /// node captures it), not along a route of its own (an external that
    /// learnt the address by BGP).
    fn lb_nodes(&self, flow: &Flow) -> Option<Vec<usize>> {
        let net = &self.c.cluster.network;
        let entry = net.node_of(flow.from).unwrap_or(flow.from);
        let via_lb = matches!(
            net.hosts[entry].net.decide(flow.dst),
            crate::routing::Decision::Via(_, nexthop) if nexthop == flow.dst
        );
        self.frontend(flow)
            .filter(|_| via_lb)
            .map(|f| f.nodes.clone())
    }

    fn frontend(&self, flow: &Flow) -> Option<&crate::network::Frontend> {
        self.c
            .cluster
            .network
            .load_balancer
            .frontends
            .iter()
            .find(|f| f.address == flow.dst && f.proto == flow.proto && f.port == flow.dport)
    }

    /// Make the load balancer hand the frontend's traffic to `node`, and
    /// route the frontend address to the load balancer where the sender's
    /// packet enters the physical network (a pod's node, or the sender).
    fn steer(&self, flow: &Flow, node: usize) -> Result<(), LabError> {
        let net = &self.c.cluster.network;
        let (Some(lb), Some(fe)) = (&self.lb, self.frontend(flow)) else {
            return Ok(());
        };
        let node_addr = net.node_address(node);
        let lb_addr = match net.load_balancer.delivery {
            Delivery::NodePort { address } => {
                let proto = proto_name(flow.proto);
                let rules = match fe.node_port {
                    Some(np) => format!(
                        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n-A PREROUTING -d {}/32 -p {proto} -m {proto} --dport {} -j DNAT --to-destination {node_addr}:{np}\n-A POSTROUTING -d {node_addr}/32 -j SNAT --to-source {address}\nCOMMIT\n",
                        flow.dst, flow.dport
                    ),
                    None => "*nat\nCOMMIT\n".into(),
                };
                lb.exec(&["iptables-restore"], Some(&rules))?;
                address
            }
            // Handed on unchanged: the load balancer routes the frontend
            // address to the node.
            Delivery::Direct => {
                lb.ip_batch(&[format!(
                    "route replace {}/32 via {node_addr} dev eth0 onlink",
                    flow.dst
                )])?;
                self.c.scenario.cluster.load_balancer.address
            }
        };
        let entry = net.node_of(flow.from).unwrap_or(flow.from);
        self.hosts[entry].ip_batch(&[format!(
            "route replace {}/32 via {lb_addr} dev eth0 onlink",
            flow.dst
        )])?;
        Ok(())
    }

    fn port(&mut self) -> u16 {
        self.next_port = if self.next_port >= 60000 {
            20000
        } else {
            self.next_port + 1
        };
        self.next_port
    }

    /// One try: reset, then each connection of the sequence in turn.
    fn try_sequence(&mut self, flows: &[Flow]) -> Result<Outcomes, LabError> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(LabError::Interrupted);
        }
        self.reset()?;
        flows
            .iter()
            .map(|f| self.try_once(f))
            .collect::<Result<_, _>>()
            .map(Outcomes)
    }

    /// One connection: connect, collect what the pods saw.
    fn try_once(&mut self, flow: &Flow) -> Result<Outcome, LabError> {
        let sport = self.port();
        let agents = self
            .agents
            .as_ref()
            .expect("agents run while the lab lives");
        agents.take();
        let client = agent::probe(
            &self.hosts[flow.from].name,
            flow.proto,
            sport,
            flow.dst,
            flow.dport,
            PROBE_TIMEOUT,
        );
        std::thread::sleep(Duration::from_millis(20));
        let seen = agents.take();
        let reached = seen.first().map(|o| (o.pod.clone(), o.src));
        Ok(compare::kernel_outcome(reached, &client))
    }

    fn compare(&mut self, probe: &Probe, predicted: Distribution) -> Result<FlowReport, LabError> {
        let flow = &probe.flows[0];
        let p_min = predicted
            .values()
            .copied()
            .filter(|p| *p > 0.0)
            .fold(1.0, f64::min);
        let tries = compare::tries_needed(p_min, predicted.len());
        let mut samples = Vec::new();
        match self.lb_nodes(flow) {
            Some(nodes) if !nodes.is_empty() => {
                let per_node = tries.div_ceil(nodes.len()).max(1);
                for node in nodes {
                    self.steer(flow, node)?;
                    for _ in 0..per_node {
                        samples.push(self.try_sequence(&probe.flows)?);
                    }
                }
            }
            _ => {
                for _ in 0..tries {
                    samples.push(self.try_sequence(&probe.flows)?);
                }
            }
        }
        Ok(FlowReport {
            label: probe.label.clone(),
            agreement: Some(compare::judge(&predicted, &samples)),
            predicted,
            skipped: None,
        })
    }
}

impl Drop for Lab<'_> {
    fn drop(&mut self) {
        // Sockets first, then namespaces (each `Netns` deletes itself).
        self.agents.take();
    }
}

/// Load a node dump into its namespace: `nft -f` for nft text,
/// `iptables-restore` for `iptables-save` text.
fn load_rules(ns: &Netns, text: &str) -> Result<(), LabError> {
    if crate::compile::is_nft_text(text) {
        ns.exec(&["nft", "-f", "-"], Some(text))?;
    } else {
        ns.exec(&["iptables-restore"], Some(text))?;
    }
    Ok(())
}

/// `nft` commands that empty every dynamic set of a ruleset.
fn flush_dynamic_sets(rs: &crate::nftables::Ruleset) -> String {
    let mut out = String::new();
    for t in &rs.tables {
        for s in t
            .sets
            .iter()
            .filter(|s| s.flags.iter().any(|f| f == "dynamic"))
        {
            out.push_str(&format!("flush set {} {}\n", t.title(), s.name));
        }
    }
    out
}

fn proto_name(p: u8) -> &'static str {
    match p {
        crate::wire::PROTO_UDP => "udp",
        crate::wire::PROTO_SCTP => "sctp",
        _ => "tcp",
    }
}

/// Carry out a topology plan, phase by phase: veth pairs, bridges, then
/// each namespace's addresses, routes and neighbours, VXLAN forwarding
/// entries and sysctls.
fn apply(plan: &topology::Plan, lan: &Netns, hosts: &[Netns]) -> Result<(), LabError> {
    lan.ip_batch(&plan.lan.devices)?;
    // Veths before a node's bridges, so that each namespace lists its
    // devices in the model's order (eth0, then cni0): the kernel picks the
    // first device's address where an interface has none of its own
    // (MASQUERADE out of lo), as on a real node whose NIC predates cni0.
    for (ns, p) in hosts.iter().zip(&plan.hosts) {
        let links: Vec<String> = p
            .links
            .iter()
            .map(|v| match v.peer {
                topology::Peer::Lan => v.command(&lan.name),
                topology::Peer::Host(h) => v.command(&hosts[h].name),
            })
            .collect();
        ns.ip_batch(&links)?;
    }
    for (ns, p) in hosts.iter().zip(&plan.hosts) {
        ns.ip_batch(&p.devices)?;
    }
    lan.ip_batch(&plan.lan.config)?;
    for (ns, p) in hosts.iter().zip(&plan.hosts) {
        ns.ip_batch(&p.config)?;
        for f in &p.fdb {
            let mut args = vec!["-n", ns.name.as_str()];
            args.extend(f.split(' '));
            netns::run("bridge", &args, None)?;
        }
        if !p.sysctls.is_empty() {
            let settings: Vec<String> = p.sysctls.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let mut args = vec!["sysctl", "-q", "-w"];
            args.extend(settings.iter().map(String::as_str));
            ns.exec(&args, None)?;
        }
    }
    Ok(())
}

/// The load balancer: a namespace on the physical network at `address`
/// that routes frontend traffic to the chosen node unchanged (`delivery:
/// direct`) or NATs it to the node's node port (`delivery: nodePort`).
fn load_balancer(run: &str, lan: &Netns, address: Ipv4Addr) -> Result<Netns, LabError> {
    let lb = Netns::create(format!("{run}lb"))?;
    lb.ip_batch(&[format!(
        "link add eth0 type veth peer name lb netns {}",
        lan.name
    )])?;
    lan.ip_batch(&[format!("link set lb master {} up", topology::LAN_BRIDGE)])?;
    lb.ip_batch(&[
        format!("addr add {address}/32 dev eth0"),
        "link set eth0 up".into(),
        "route replace default dev eth0".into(),
    ])?;
    // It forwards out of the interface it received on: no ICMP redirects,
    // which would teach senders to bypass it.
    let mut settings = vec![
        "net.ipv4.ip_forward=1".to_string(),
        "net.ipv4.conf.all.send_redirects=0".to_string(),
        "net.ipv4.conf.eth0.send_redirects=0".to_string(),
    ];
    settings.extend(
        topology::neutralised(&HostKind::External)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    let mut args = vec!["sysctl", "-q", "-w"];
    args.extend(settings.iter().map(String::as_str));
    lb.exec(&args, None)?;
    Ok(lb)
}

/// Which ports each namespace listens on: a socket's declared ports, or,
/// for a pod that answers on every port, every port any flow may reach it
/// on; one listener per (protocol, port), the first socket's.
fn listeners(
    c: &Compiled,
    results: &[FlowResult],
    probes: &[Probe],
) -> BTreeMap<usize, Vec<Listen>> {
    let net = &c.cluster.network;
    let mut any_port: BTreeSet<(u8, u16)> = probes
        .iter()
        .flat_map(|p| p.flows.iter().map(|f| (f.proto, f.dport)))
        .collect();
    for r in results {
        if let Some((_, seen)) = r.forward.end {
            any_port.insert((seen.proto, seen.dport));
        }
    }
    let mut out: BTreeMap<usize, Vec<Listen>> = BTreeMap::new();
    for (i, h) in net.hosts.iter().enumerate() {
        for sock in &h.sockets {
            let list: Vec<(u8, u16)> = if sock.ports.is_empty() {
                any_port.iter().copied().collect()
            } else {
                sock.ports.clone()
            };
            let entry = out.entry(i).or_default();
            for (proto, port) in list {
                if !entry.iter().any(|l| l.proto == proto && l.port == port) {
                    entry.push(Listen {
                        owner: sock.owner.clone(),
                        proto,
                        port,
                        addresses: sock.addresses.clone(),
                    });
                }
            }
        }
    }
    out
}

/// How to run the lab.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Load this `iptables-save` or nft text into a node's kernel instead
    /// of the rules kpsim traces (by node name). kpsim still predicts with its own
    /// rules, so a difference must show: the harness's own test uses it.
    pub kernel_rules: BTreeMap<String, String>,
    /// Kernel settings written into a node's namespace after the model's
    /// (by node name), for the same purpose.
    pub kernel_sysctls: BTreeMap<String, Vec<(String, String)>>,
    /// Also probe [`crate::matrix::corner_entries`]: node ports on other
    /// node addresses and 127.0.0.1, unused cluster-IP ports, an
    /// unallocated service address.
    pub corners: bool,
}

/// Build the scenario's lab, compare every check and matrix cell, tear the
/// lab down.
pub fn run(c: &Compiled, opts: &Options) -> Result<ScenarioReport, LabError> {
    netns::remove_stale();
    let mut probes = probes(c, opts.corners)?;
    let mut predictions = Vec::new();
    let mut all_results = Vec::new();
    let mut sequences = Vec::new();
    for p in &probes {
        let (dist, results) = predict(c, &p.flows)?;
        if let Some(seq) = sticky_sequence(c, p, &dist)? {
            sequences.push(seq);
        }
        predictions.push(dist);
        all_results.extend(results);
    }
    for (p, dist) in sequences {
        probes.push(p);
        predictions.push(dist);
    }
    let listen = listeners(c, &all_results, &probes);
    let mut lab = Lab::build(c, &listen, opts)?;
    let mut flows = Vec::new();
    for (p, dist) in probes.iter().zip(predictions) {
        flows.push(lab.compare(p, dist)?);
    }
    let namespaces = lab.run.clone();
    drop(lab);
    Ok(ScenarioReport {
        scenario: c.scenario.name.clone(),
        namespaces,
        flows,
    })
}
