//! `rookery-load`: see the library documentation and `docs/benchmarks.md`.

use clap::Parser;
use rookery_loadtest::{Options, Scenario};

/// Real-XMPP load generator (loopback only).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// What to run.
    #[arg(value_enum)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Options,
    /// Runtime worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rookery-load: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(rookery_loadtest::run(cli.scenario, &cli.opts)) {
        Ok(report) => {
            if !cli.json {
                print!("{}", report.table());
            }
            println!("{}", report.json());
            if report.errors > 0 {
                std::process::ExitCode::from(1)
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("rookery-load: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
