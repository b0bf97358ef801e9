//! Time the phases of loading an `iptables-save` dump (read, parse,
//! validate, engine), with the sizes of the rule types.
//!
//! `cargo run --release --example dump_phases -- FILE [REPEATS]`

use kpsim::netfilter::{Engine, Match, Rule, Ruleset, Target};
use std::mem::ManuallyDrop;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: dump_phases FILE");
    eprintln!(
        "size_of: Rule {} Match {} Target {}",
        std::mem::size_of::<Rule>(),
        std::mem::size_of::<Match>(),
        std::mem::size_of::<Target>()
    );
    let t0 = Instant::now();
    let text = std::fs::read_to_string(path).expect("readable");
    let t1 = Instant::now();
    let rs = Ruleset::parse(&text).expect("parses");
    let t2 = Instant::now();
    rs.validate().expect("valid");
    let t3 = Instant::now();
    let e = ManuallyDrop::new(Engine::new(rs).expect("engine"));
    let t4 = Instant::now();
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    eprintln!(
        "read {:.1} ms, parse {:.1} ms, validate {:.1} ms, engine {:.1} ms; {} tables",
        ms(t0, t1),
        ms(t1, t2),
        ms(t2, t3),
        ms(t3, t4),
        e.ruleset().tables.len()
    );
}
