//! `netlab`: network probes run inside lab hosts by the netlab tests, plus lab cleanup for
//! humans (`netlab cleanup-stale`, `netlab cleanup-all`). See `edgeray_tests::netlab::probe`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match edgeray_tests::netlab::probe::main_with_args(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netlab: {e}");
            ExitCode::FAILURE
        }
    }
}
