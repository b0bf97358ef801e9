//! `kpsim diff`: which flows change outcome between two worlds.

use super::{compiled, Fail, RulesOverride, EXIT_FAILED, EXIT_OK};
use kpsim::matrix::compute;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The old scenario.
    old: PathBuf,
    /// The new scenario (default: the old one, to compare rule dumps).
    new: Option<PathBuf>,
    /// Rules for the old side: `--old-rules NODE=FILE` (repeatable).
    #[arg(long = "old-rules", value_name = "NODE=FILE")]
    old_rules: Vec<String>,
    /// Rules for the new side: `--new-rules NODE=FILE` (repeatable).
    #[arg(long = "new-rules", value_name = "NODE=FILE")]
    new_rules: Vec<String>,
    /// kube-proxy's mode on the old side (iptables or nftables), instead
    /// of the scenario's.
    #[arg(long = "old-mode", value_name = "MODE")]
    old_mode: Option<String>,
    /// kube-proxy's mode on the new side.
    #[arg(long = "new-mode", value_name = "MODE")]
    new_mode: Option<String>,
}

pub fn run(a: DiffArgs) -> Result<i32, Fail> {
    let new_path = a.new.clone().unwrap_or_else(|| a.old.clone());
    let old = compiled(
        &a.old,
        &RulesOverride {
            rules: a.old_rules.clone(),
            mode: a.old_mode.clone(),
        },
    )?;
    let new = compiled(
        &new_path,
        &RulesOverride {
            rules: a.new_rules.clone(),
            mode: a.new_mode.clone(),
        },
    )?;
    let old_cells = compute(&old).map_err(|e| Fail::input(e.to_string()))?;
    let new_cells = compute(&new).map_err(|e| Fail::input(e.to_string()))?;
    let key = |c: &kpsim::matrix::Cell| (c.sender.clone(), c.entry.label.clone());
    let seen = |c: &kpsim::matrix::Cell| [c.receivers(), c.source(), c.reply().to_string()];
    let old_map: BTreeMap<_, _> = old_cells.iter().map(|c| (key(c), c)).collect();
    let new_map: BTreeMap<_, _> = new_cells.iter().map(|c| (key(c), c)).collect();
    let mut changed = 0;
    let mut out = String::new();
    for (k, o) in &old_map {
        match new_map.get(k) {
            None => {
                changed += 1;
                out.push_str(&format!(
                    "- {} -> {}: only in old ({})\n",
                    k.0,
                    k.1,
                    o.receivers()
                ));
            }
            Some(n) if seen(n) != seen(o) => {
                changed += 1;
                out.push_str(&format!("~ {} -> {}\n", k.0, k.1));
                let (a, b) = (seen(o), seen(n));
                for (what, a, b) in ["received by", "source seen", "reply"]
                    .iter()
                    .zip(a.iter().zip(b.iter()))
                    .map(|(w, (a, b))| (w, a, b))
                {
                    if a != b {
                        out.push_str(&format!("    {what}: {a}  =>  {b}\n"));
                    }
                }
            }
            _ => {}
        }
    }
    for (k, n) in &new_map {
        if !old_map.contains_key(k) {
            changed += 1;
            out.push_str(&format!(
                "+ {} -> {}: only in new ({})\n",
                k.0,
                k.1,
                n.receivers()
            ));
        }
    }
    out.push_str(&format!(
        "{changed} of {} flows changed\n",
        old_map.len().max(new_map.len())
    ));
    print!("{out}");
    Ok(if changed > 0 { EXIT_FAILED } else { EXIT_OK })
}
