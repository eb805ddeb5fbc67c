//! The `edgeray` binary: see `edgeray --help`.

fn main() -> std::process::ExitCode {
    edgeray::cli::main()
}
