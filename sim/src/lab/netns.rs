//! Network namespaces as the kernel lab uses them: created under a run
//! prefix, configured with `ip`/`sysctl`/`iptables-restore` run inside them,
//! entered by threads (`setns`) to open sockets, removed afterwards.
//!
//! Invariant: every namespace this module creates is named
//! `kpsim-lab-<pid>-<n>`; nothing is created in, or attached to, the root
//! namespace (veth pairs are created directly between two lab namespaces).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// Prefix of every lab namespace.
pub const PREFIX: &str = "kpsim-lab-";

/// A command that failed inside the lab.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("entering namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
}

/// Run a program to completion, feeding `input` on stdin; stderr becomes
/// the error message.
pub fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String, NetnsError> {
    let shown = format!("{program} {}", args.join(" "));
    let fail = |message: String| NetnsError::Command {
        command: shown.clone(),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// One namespace of the lab; deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: String) -> Result<Netns, NetnsError> {
        run("ip", &["netns", "add", &name], None)?;
        let ns = Netns { name };
        ns.ip_batch(&["link set lo up".to_string()])?;
        Ok(ns)
    }

    /// `ip -n NAME -batch -`: many `ip` commands in one process.
    pub fn ip_batch(&self, commands: &[String]) -> Result<(), NetnsError> {
        if commands.is_empty() {
            return Ok(());
        }
        let mut text = commands.join("\n");
        text.push('\n');
        run("ip", &["-n", &self.name, "-batch", "-"], Some(&text)).map(|_| ())
    }

    /// Run a program inside the namespace.
    pub fn exec(&self, args: &[&str], input: Option<&str>) -> Result<String, NetnsError> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", &all, input)
    }
}

/// Move the calling thread into namespace `name`. Sockets it opens
/// afterwards live there; call only on a thread made for the purpose.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let err = |source| NetnsError::Enter {
        name: name.to_string(),
        source,
    };
    let f = File::open(Path::new("/run/netns").join(name)).map_err(err)?;
    // SAFETY: setns on a valid namespace fd only changes the calling
    // thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name], None);
    }
}

/// Remove namespaces left by lab runs whose process is gone (a crash or a
/// kill), so they never accumulate.
pub fn remove_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
        if !alive {
            let _ = run("ip", &["netns", "del", &name], None);
        }
    }
}

/// Why the lab cannot run on this machine, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need CAP_NET_ADMIN)".into());
    }
    for tool in ["ip", "iptables-restore", "conntrack", "nft"] {
        if run("sh", &["-c", &format!("command -v {tool}")], None).is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    static PROBES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let probe = format!(
        "{PREFIX}{}-probe{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    match Netns::create(probe) {
        Ok(ns) => {
            let ok = ns.exec(&["iptables-save"], None);
            drop(ns);
            ok.err()
                .map(|e| format!("iptables does not work in a namespace: {e}"))
        }
        Err(e) => Some(format!("cannot create a network namespace: {e}")),
    }
}
