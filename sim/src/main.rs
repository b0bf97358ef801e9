//! The `kpsim` command line: the only place that knows about arguments,
//! files, output formats and exit codes.

mod cli;

/// mimalloc: loading a large dump allocates hundreds of thousands of small
/// rule parts from several threads, which it serves markedly faster than
/// the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::run());
}
