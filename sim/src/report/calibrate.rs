//! Calibrating the time models on the real kernel, in private network
//! namespaces (named like the lab's, `kpsim-lab-<pid>-…`, removed
//! afterwards; nothing touches the root namespace).
//!
//! * Full sync: kube-proxy's full-sync input for generated clusters of
//!   several sizes is loaded once into a namespace, then replaced with
//!   `iptables-restore --noflush --counters` (as kube-proxy runs it) several
//!   times; the median wall time of the process is one sample (x = bytes).
//!   With the nf_tables backend the time grows faster than the input, so
//!   the model is a power law (a line in log–log); sizes stay moderate
//!   because the largest restores take minutes each.
//! * First packet: a node's whole ruleset is loaded into a namespace with
//!   the endpoints' addresses on its loopback device and a listener on them; a
//!   TCP connect from the namespace to a service's cluster IP walks
//!   `OUTPUT` → `KUBE-SERVICES` to that service's rule and is DNATed to the
//!   listener. Its median time over many connects is one sample; x is the
//!   rules kpsim's engine counts for the same flow on the same ruleset
//!   (the host's own path after DNAT differs slightly between the lab and
//!   the model; that difference is the same for every service and lands
//!   in the intercept).
//!
//! Each line is fitted on some samples and tested on others it never saw;
//! the file records both, with the kernel, iptables and CPU it was
//! measured on.

use super::first_packet::first_packet_rules;
use super::model::{Calibration, Form, Line, Provenance, Sample};
use super::ruleset::sync_input;
use crate::compile::{compile, proxier_inputs};
use crate::lab::netns::{self, run, Netns, NetnsError, PREFIX};
use crate::proxier::{node_rules, ProxyModel};
use crate::synth;
use crate::trace::{self, Flow};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Services of the clusters whose sync input is timed (fitted).
    pub restore_fit: Vec<usize>,
    /// … and held out.
    pub restore_held_out: Vec<usize>,
    /// Restores per size.
    pub restore_repetitions: usize,
    /// Services of the ruleset connects are timed through (fitted), and
    /// the positions (fractions of KUBE-SERVICES) tried in it.
    pub connect_fit: usize,
    pub connect_fit_positions: Vec<f64>,
    /// A different ruleset and positions, held out.
    pub connect_held_out: usize,
    pub connect_held_out_positions: Vec<f64>,
    /// Connects per position.
    pub connect_repetitions: usize,
}

impl Plan {
    /// A small plan: checks that calibration works on this machine in
    /// seconds; its constants are too noisy to keep.
    pub fn quick() -> Plan {
        Plan {
            restore_fit: vec![200, 400, 800],
            restore_held_out: vec![600],
            restore_repetitions: 2,
            connect_fit: 1000,
            connect_fit_positions: vec![0.0, 0.5, 1.0],
            connect_held_out: 1500,
            connect_held_out_positions: vec![0.5],
            connect_repetitions: 40,
        }
    }
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            restore_fit: vec![500, 1000, 2000, 4000],
            restore_held_out: vec![3000, 6000],
            restore_repetitions: 3,
            connect_fit: 4000,
            connect_fit_positions: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            connect_held_out: 6000,
            connect_held_out_positions: vec![0.3, 0.9],
            connect_repetitions: 400,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("the kernel lab cannot run here: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{0}")]
    Other(String),
}

static NAMES: AtomicUsize = AtomicUsize::new(0);

fn namespace() -> Result<Netns, NetnsError> {
    let n = NAMES.fetch_add(1, Ordering::SeqCst);
    Netns::create(format!("{PREFIX}{}-cal{n}", std::process::id()))
}

/// Run `f` on a thread inside namespace `ns`.
fn inside<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T, CalibrateError> + Send + 'static,
) -> Result<T, CalibrateError> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| CalibrateError::Other("a measuring thread panicked".into()))?
}

fn percentile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn median(v: Vec<f64>) -> f64 {
    percentile(v, 0.5)
}

/// The generated cluster the samples are taken on: `services` Services
/// with one endpoint each, on one node.
fn cluster(services: usize) -> crate::scenario::Scenario {
    synth::cluster(services, 1, 1)
}

/// node-0's whole restore text and kube-proxy's full-sync input.
fn node_texts(s: &crate::scenario::Scenario) -> Result<(String, String), CalibrateError> {
    let c = compile(s, &Default::default()).map_err(|e| CalibrateError::Other(e.to_string()))?;
    let model = ProxyModel::build(&s.services, &s.slices);
    let (cfg, info) = &proxier_inputs(s, &c.cluster.network)[0];
    let text = node_rules(cfg, info, &model).restore_text;
    let input = sync_input(&text);
    Ok((text, input))
}

/// Seconds of one `iptables-restore --noflush --counters` of `input`,
/// run from a thread inside the namespace (the child inherits it).
fn time_restore(ns: &str, input: String, repetitions: usize) -> Result<Vec<f64>, CalibrateError> {
    inside(ns, move || {
        let mut out = Vec::new();
        // The first load creates the chains; the timed ones replace them,
        // as a periodic full sync does.
        run(
            "iptables-restore",
            &["--noflush", "--counters"],
            Some(&input),
        )?;
        for _ in 0..repetitions {
            let t = Instant::now();
            run(
                "iptables-restore",
                &["--noflush", "--counters"],
                Some(&input),
            )?;
            out.push(t.elapsed().as_secs_f64());
        }
        Ok(out)
    })
}

fn restore_sample(services: usize, repetitions: usize) -> Result<Sample, CalibrateError> {
    let (_, input) = node_texts(&cluster(services))?;
    let ns = namespace()?;
    let bytes = input.len() as f64;
    let times = time_restore(&ns.name, input, repetitions)?;
    Ok(Sample {
        label: format!("services={services}"),
        x: bytes,
        seconds: median(times),
        repetitions,
    })
}

/// Samples of connect time through a ruleset of `services` Services at
/// the given positions.
fn connect_samples(
    services: usize,
    positions: &[f64],
    repetitions: usize,
) -> Result<Vec<Sample>, CalibrateError> {
    let s = cluster(services);
    let c = compile(&s, &Default::default()).map_err(|e| CalibrateError::Other(e.to_string()))?;
    let (text, _) = node_texts(&s)?;
    let ns = namespace()?;
    ns.exec(&["iptables-restore"], Some(&text))?;
    // Endpoints live at 10.244.0.2-251 (see `synth::cluster`).
    // They go on the loopback device (no dummy module needed), with a
    // route for the service range so a connect to a cluster IP reaches
    // OUTPUT, where KUBE-SERVICES DNATs it to one of them.
    let mut cmds = vec!["route add 10.96.0.0/12 dev lo".to_string()];
    for h in 2..=251u8 {
        cmds.push(format!("addr add 10.244.0.{h}/32 dev lo"));
    }
    ns.ip_batch(&cmds)?;
    // The services in KUBE-SERVICES order (sorted by service port name).
    let mut order: Vec<usize> = (0..services).collect();
    order.sort_by_key(|i| format!("default/svc-{i}:http"));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = {
        let stop = stop.clone();
        let name = ns.name.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || -> Result<(), CalibrateError> {
            netns::enter(&name)?;
            let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 8080))
                .map_err(|e| CalibrateError::Other(format!("listen: {e}")))?;
            l.set_nonblocking(true)
                .map_err(|e| CalibrateError::Other(e.to_string()))?;
            let _ = tx.send(());
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((sock, _)) => drop(sock),
                    Err(_) => std::thread::sleep(Duration::from_micros(50)),
                }
            }
            Ok(())
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| CalibrateError::Other("the listener did not start".into()))?;
        h
    };
    let node = c
        .resolve_from("node-0")
        .map_err(|e| CalibrateError::Other(e.to_string()))?;
    // Each position's destination and the rules kpsim counts for it.
    let mut targets = Vec::new();
    for &pos in positions {
        let k = order[((order.len() - 1) as f64 * pos).round() as usize];
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + k as u32);
        let flow = Flow {
            from: node,
            dst,
            proto: crate::wire::PROTO_TCP,
            dport: 80,
            sport: None,
            at: 0,
        };
        let r = trace::trace(&c.cluster, std::slice::from_ref(&flow))
            .map_err(|e| CalibrateError::Other(e.to_string()))?;
        targets.push((pos, dst, first_packet_rules(&c, &r[0].1[0])));
    }
    // Positions take turns, so a burst of load elsewhere on the machine
    // falls on all of them alike; the 10th percentile of each keeps the
    // kernel's own cost and drops most of the waiting for a CPU.
    let dsts: Vec<Ipv4Addr> = targets.iter().map(|t| t.1).collect();
    let name = ns.name.clone();
    let times = inside(&name, move || {
        let mut v = vec![Vec::with_capacity(repetitions); dsts.len()];
        for _ in 0..repetitions {
            for (i, d) in dsts.iter().enumerate() {
                v[i].push(connect_once(SocketAddrV4::new(*d, 80))?);
            }
        }
        Ok(v)
    })?;
    let mut out = Vec::new();
    for ((pos, _, rules), t) in targets.into_iter().zip(times) {
        out.push(Sample {
            label: format!(
                "services={services}, KUBE-SERVICES position {:.0}%",
                pos * 100.0
            ),
            x: rules as f64,
            seconds: percentile(t, 0.1),
            repetitions,
        });
    }
    stop.store(true, Ordering::SeqCst);
    listener
        .join()
        .map_err(|_| CalibrateError::Other("the listener panicked".into()))??;
    Ok(out)
}

/// One TCP connect's duration; the socket is closed with a reset so the
/// next connect does not wait for TIME_WAIT ports.
fn connect_once(to: SocketAddrV4) -> Result<f64, CalibrateError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| CalibrateError::Other(e.to_string()))?;
    let t = Instant::now();
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .map_err(|e| CalibrateError::Other(format!("connect {to}: {e}")))?;
    let took = t.elapsed().as_secs_f64();
    let _ = s.set_linger(Some(Duration::ZERO));
    Ok(took)
}

fn provenance(command: &str) -> Provenance {
    let first_line = |prog: &str, args: &[&str]| {
        run(prog, args, None)
            .map(|o| o.lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_else(|_| "unknown".into())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Provenance {
        kernel: first_line("uname", &["-r"]),
        iptables: first_line("iptables", &["--version"]),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        command: command.to_string(),
    }
}

/// Measure and fit; `say` hears what is being measured. `reuse_restore`:
/// keep the full-sync line of an earlier calibration taken on this same
/// machine (its restores take minutes) and measure connects only.
pub fn calibrate(
    plan: &Plan,
    command: &str,
    reuse_restore: Option<&Calibration>,
    say: &dyn Fn(&str),
) -> Result<Calibration, CalibrateError> {
    if let Some(why) = netns::unavailable() {
        return Err(CalibrateError::Unavailable(why));
    }
    netns::remove_stale();
    let restore = |sizes: &[usize]| -> Result<Vec<Sample>, CalibrateError> {
        sizes
            .iter()
            .map(|&n| {
                say(&format!(
                    "iptables-restore of {n} services' full-sync input"
                ));
                restore_sample(n, plan.restore_repetitions)
            })
            .collect()
    };
    let here = provenance(command);
    let restore = match reuse_restore {
        Some(earlier) => {
            let p = &earlier.provenance;
            if (&p.kernel, &p.iptables, &p.cpu) != (&here.kernel, &here.iptables, &here.cpu) {
                return Err(CalibrateError::Other(format!(
                    "the earlier calibration was taken on Linux {}, {}, {}: not this machine",
                    p.kernel, p.iptables, p.cpu
                )));
            }
            earlier.restore.clone()
        }
        None => {
            let fit = restore(&plan.restore_fit)?;
            let held = restore(&plan.restore_held_out)?;
            // iptables-restore with the nf_tables backend grows faster
            // than its input (measured): a power law, a line in log–log.
            Line::fit("bytes", Form::Power, fit, held)
        }
    };
    say(&format!("connects through {} services", plan.connect_fit));
    let fit = connect_samples(
        plan.connect_fit,
        &plan.connect_fit_positions,
        plan.connect_repetitions,
    )?;
    say(&format!(
        "connects through {} services (held out)",
        plan.connect_held_out
    ));
    let held = connect_samples(
        plan.connect_held_out,
        &plan.connect_held_out_positions,
        plan.connect_repetitions,
    )?;
    // The kernel walks rules one after another: linear in rules tried.
    let connect = Line::fit("rules", Form::Linear, fit, held);
    Ok(Calibration {
        provenance: here,
        restore,
        connect,
    })
}
