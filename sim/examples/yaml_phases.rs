//! Time the phases of the YAML row of `scripts/bench-vs-kernel`: read
//! the scenario file, build the scenario, compile every node.
//!
//! `cargo run --release --example yaml_phases -- FILE`

use kpsim::compile::compile_owned;
use kpsim::scenario::{Limits, Scenario};
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = Path::new(args.first().expect("usage: yaml_phases FILE"));
    let t0 = Instant::now();
    let text = std::fs::read_to_string(path).expect("readable");
    let t1 = Instant::now();
    let loaded = Scenario::from_str_with(&text, path, &Limits::default()).expect("loads");
    let t2 = Instant::now();
    // Handed over, as the CLI does.
    let c = ManuallyDrop::new(compile_owned(loaded.scenario, &BTreeMap::new()).expect("compiles"));
    let t3 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    eprintln!(
        "read {:.1} ms, scenario {:.1} ms, compile {:.1} ms; {} nodes",
        ms(t0, t1),
        ms(t1, t2),
        ms(t2, t3),
        c.scenario.nodes.len()
    );
}
