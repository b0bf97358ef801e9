//! The `kpsim` command line: the only place that knows about arguments,
//! files, output formats and exit codes.

mod cli;

/// mimalloc: loading a large dump allocates hundreds of thousands of small
/// rule parts from several threads, which it serves markedly faster than
/// the system allocator. Built without its transparent-huge-page advice
/// (feature `no_thp`): with the kernel's usual `madvise` setting, every
/// fresh 2 MB page of the heap then costs a zeroing and often a memory
/// compaction at the fault, which made up a large, load-dependent share
/// of a dump load's time (system time and peak RSS both drop without it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::run());
}
