//! The `kiln` command line: the only place that prints, exits or shows progress bars.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
