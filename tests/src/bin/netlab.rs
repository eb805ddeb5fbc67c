//! `netlab`: network probes run inside lab hosts by the netlab tests, lab cleanup for humans
//! (`netlab cleanup-stale`, `netlab cleanup-all`; see `edgeray_tests::netlab::probe`), and
//! `netlab bench HOSTS ...`: `edgeray bench` on a lab of pinned one-core hosts
//! (`edgeray_tests::netlab::bench`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("bench") => edgeray_tests::netlab::bench::main_with_args(&args[1..]),
        _ => edgeray_tests::netlab::probe::main_with_args(&args).map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netlab: {e}");
            ExitCode::FAILURE
        }
    }
}
