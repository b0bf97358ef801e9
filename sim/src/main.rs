//! The `kpsim` command line: the only place that knows about arguments,
//! files, output formats and exit codes.

mod cli;

fn main() {
    std::process::exit(cli::run());
}
