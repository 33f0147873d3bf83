//! The `rookery` command.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rookery::config::{Config, LogFormat, StoreBackend};
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
    /// Runs the server. Without `--role`, every role in one process with no
    /// other service (single node); with it, the given roles as a member of
    /// a cluster (`[cluster]` in the configuration: Redis, gRPC).
    Serve {
        /// `cm`, `session`, `s2s` or `all`; repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        role: Vec<RoleArg>,
    },
    /// Manages accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages the store (`[store]` in the configuration).
    #[command(subcommand)]
    Store(StoreCommand),
    /// Checks the configuration file and prints the effective configuration.
    CheckConfig,
}

/// A role of `rookery serve --role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    /// Connection manager: client listeners, TLS, SASL, stream parsing.
    Cm,
    /// Session node: owner of a share of the users.
    Session,
    /// Federation: streams with other servers (port 5269), for the whole
    /// cluster.
    S2s,
    /// All three.
    All,
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

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Brings the store's schema up to date. ScyllaDB: creates the keyspace
    /// if missing and applies the schema steps not yet applied (run it
    /// before starting servers of a new version). The embedded SQLite store
    /// migrates itself when opened; this opens it.
    Migrate,
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
    let config = Config::from_sources(cli.config.as_deref(), std::env::vars())?;
    init_logging(&config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(run(cli.command, config))
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { role } if role.is_empty() => serve(config).await,
        Command::Serve { role } => {
            use rookery_cluster::Role;
            let mut roles = Vec::new();
            for r in role {
                let add: &[Role] = match r {
                    RoleArg::Cm => &[Role::Cm],
                    RoleArg::Session => &[Role::Session],
                    RoleArg::S2s => &[Role::S2s],
                    RoleArg::All => &[Role::Cm, Role::Session, Role::S2s],
                };
                for a in add {
                    if !roles.contains(a) {
                        roles.push(*a);
                    }
                }
            }
            serve_cluster(config, &roles).await
        }
        Command::CheckConfig => {
            print!("{}", toml::to_string(&config)?);
            Ok(())
        }
        Command::User(cmd) => user(cmd, &config).await,
        Command::Store(StoreCommand::Migrate) => migrate(&config).await,
    }
}

async fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    let store = server::StoreHandle::open(config).await?;
    let stores = store.stores();
    let users = stores.users.as_ref();
    match cmd {
        UserCommand::Add { jid, password } => {
            admin::add(config, users, &jid, &password).await?;
            println!("created {}", admin::account_jid(config, &jid)?);
        }
        UserCommand::Passwd { jid, password } => {
            admin::passwd(config, users, &jid, &password).await?;
            println!("password changed for {}", admin::account_jid(config, &jid)?);
        }
        UserCommand::Del { jid } => {
            admin::delete(config, &stores, &jid).await?;
            println!("deleted {}", admin::account_jid(config, &jid)?);
        }
        UserCommand::List => {
            for u in users.list().await? {
                println!("{u}");
            }
        }
        UserCommand::Import { file, unique_salts } => {
            let started = std::time::Instant::now();
            let n = admin::import(config, users, &file, unique_salts).await?;
            println!(
                "imported {n} accounts in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    store.flush().await?;
    Ok(())
}

/// `rookery store migrate`
async fn migrate(config: &Config) -> anyhow::Result<()> {
    match config.store.backend {
        StoreBackend::Sqlite => {
            let path = config.server.data_dir.join("rookery.db");
            let store = server::open_store(config)?;
            store.flush().await?;
            println!(
                "the embedded store migrates itself when opened: {} is up to date",
                path.display()
            );
        }
        StoreBackend::Scylla => {
            let cfg = &config.store.scylla;
            let applied = rookery_scylla::migrate(cfg).await.with_context(|| {
                format!(
                    "migrating keyspace {} on ScyllaDB at {}",
                    cfg.keyspace,
                    cfg.nodes.join(", ")
                )
            })?;
            if applied.is_empty() {
                println!("keyspace {}: schema is up to date", cfg.keyspace);
            } else {
                for step in &applied {
                    println!("applied {step}");
                }
                println!(
                    "keyspace {}: {} schema step(s) applied, schema is up to date",
                    cfg.keyspace,
                    applied.len()
                );
            }
        }
    }
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // The handlers are in place before anything listens: a SIGTERM right
    // after start-up is a clean shutdown, not the default (immediate) exit.
    let stop = Shutdown::install()?;
    let running = server::start(config).await?;
    stop.wait().await;
    tracing::info!("shutting down");
    running.shutdown(Duration::from_secs(10)).await;
    Ok(())
}

async fn serve_cluster(config: Config, roles: &[rookery_cluster::Role]) -> anyhow::Result<()> {
    let stop = Shutdown::install()?;
    let node = rookery::cluster::start(config, roles).await?;
    stop.wait().await;
    tracing::info!("draining, then leaving the cluster");
    node.drain().await;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment it is installed.
#[cfg(unix)]
struct Shutdown {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Shutdown {
    fn install() -> anyhow::Result<Shutdown> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Shutdown {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Shutdown;

#[cfg(not(unix))]
impl Shutdown {
    fn install() -> anyhow::Result<Shutdown> {
        Ok(Shutdown)
    }

    async fn wait(self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
