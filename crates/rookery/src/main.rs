//! The `rookery` command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rookery::config::{Config, LogFormat};
use rookery::{admin, server};
use tracing_subscriber::EnvFilter;

/// Rookery XMPP server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Without one, the defaults apply: domain
    /// `localhost`, data in `./data`, a self-signed certificate.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (every role in one process).
    Serve,
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Checks the configuration file and prints the effective configuration.
    CheckConfig,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates an account.
    Add {
        /// `user@domain` or `user` (of the configured domain).
        jid: String,
        /// The password (only its SCRAM keys are stored).
        #[arg(long, short)]
        password: String,
    },
    /// Changes the password of an account.
    Passwd {
        /// The account.
        jid: String,
        /// The new password.
        #[arg(long, short)]
        password: String,
    },
    /// Deletes an account.
    Del {
        /// The account.
        jid: String,
    },
    /// Lists accounts.
    List,
    /// Creates or updates accounts from a file of `jid password` lines.
    Import {
        /// The file.
        file: PathBuf,
        /// Derive a separate salt per account even when passwords repeat
        /// (slower: one key derivation per account).
        #[arg(long)]
        unique_salts: bool,
    },
}

fn init_logging(config: &Config) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(p) => Config::load(p)?,
        None => {
            let mut c = Config::default();
            c.check()?;
            c
        }
    };
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::CheckConfig => {
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
        Command::User(cmd) => {
            let store = server::open_store(&config)?;
            match cmd {
                UserCommand::Add { jid, password } => {
                    admin::add(&config, &store, &jid, &password).await?;
                    println!("created {}", admin::account_jid(&config, &jid)?);
                }
                UserCommand::Passwd { jid, password } => {
                    admin::passwd(&config, &store, &jid, &password).await?;
                    println!(
                        "password changed for {}",
                        admin::account_jid(&config, &jid)?
                    );
                }
                UserCommand::Del { jid } => {
                    admin::delete(&config, &server::stores(&store), &jid).await?;
                    println!("deleted {}", admin::account_jid(&config, &jid)?);
                }
                UserCommand::List => {
                    use rookery_core::UserStore;
                    for u in store.list().await? {
                        println!("{u}");
                    }
                }
                UserCommand::Import { file, unique_salts } => {
                    let started = std::time::Instant::now();
                    let n = admin::import(&config, &store, &file, unique_salts).await?;
                    println!(
                        "imported {n} accounts in {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
            }
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let running = server::start(config).await?;
    wait_for_signal().await?;
    tracing::info!("shutting down");
    running.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

#[cfg(not(unix))]
async fn wait_for_signal() -> anyhow::Result<()> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
