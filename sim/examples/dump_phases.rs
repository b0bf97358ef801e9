//! Time the phases of loading an `iptables-save` dump (read, parse,
//! validate, engine) and the whole of [`Engine::load`], with the sizes of
//! the rule types: the best of REPEATS runs of each (default 1).
//!
//! `cargo run --release --example dump_phases -- FILE [REPEATS]`

use kpsim::netfilter::{Engine, Match, Rule, Ruleset, Target};
use std::mem::ManuallyDrop;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().expect("usage: dump_phases FILE [REPEATS]");
    let repeats: usize = args.get(1).map_or(1, |r| r.parse().expect("a count"));
    eprintln!(
        "size_of: Rule {} Match {} Target {}",
        std::mem::size_of::<Rule>(),
        std::mem::size_of::<Match>(),
        std::mem::size_of::<Target>()
    );
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let mut best = [f64::MAX; 5];
    for _ in 0..repeats {
        let t0 = Instant::now();
        let text = std::fs::read_to_string(path).expect("readable");
        let t1 = Instant::now();
        let rs = Ruleset::parse(&text).expect("parses");
        let t2 = Instant::now();
        rs.validate().expect("valid");
        let t3 = Instant::now();
        // Kept, as the command line keeps what it loads until it exits.
        let e = ManuallyDrop::new(Engine::new(rs).expect("engine"));
        let t4 = Instant::now();
        let loaded = ManuallyDrop::new(Engine::load(&text).expect("loads"));
        let t5 = Instant::now();
        assert_eq!(e.ruleset(), loaded.ruleset());
        for (b, t) in
            best.iter_mut()
                .zip([ms(t0, t1), ms(t1, t2), ms(t2, t3), ms(t3, t4), ms(t4, t5)])
        {
            *b = b.min(t);
        }
    }
    let [read, parse, validate, engine, load] = best;
    eprintln!(
        "best of {repeats}: read {read:.1} ms, parse {parse:.1} ms, validate {validate:.1} ms, \
         engine {engine:.1} ms; Engine::load {load:.1} ms"
    );
}
