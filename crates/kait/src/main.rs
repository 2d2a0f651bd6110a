//! `kait`: the webhook server and its command-line tools.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Subcommand};
use kait::client;
use kait::client::commands::{ListCommand, Listing};
use kait::config::{LogFormat, ServeArgs, ServeConfig};
use tokio_util::sync::CancellationToken;

#[derive(clap::Parser)]
#[command(
    name = "kait",
    version,
    about = "A webhook platform for IoT and multimedia systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the dispatcher.
    Serve(Box<ServeArgs>),
    /// Create or update the database schema (SQLite or PostgreSQL), then exit. Takes the same
    /// settings as `serve`; `serve` migrates at start-up too.
    Migrate(Box<ServeArgs>),
    /// Measure throughput and latency on this machine (loopback only).
    Bench(kait::bench::BenchArgs),
    /// Check a saved webhook request (read from standard input): signature and timestamp.
    Verify(kait::verify::VerifyArgs),
    /// Receive webhooks locally (or follow a polling endpoint) and print them.
    Listen(kait::listen::ListenArgs),
    /// Send a message: `kait send APP EVENT_TYPE '{"json": "payload"}'` (or the payload on stdin).
    Send(client::SendArgs),
    /// Follow an application's messages live, as they are accepted.
    Tail(client::TailArgs),
    /// Send again what failed (or, with --missing, what never went) since a time.
    Replay(client::ReplayArgs),
    /// Applications.
    #[command(subcommand)]
    App(client::commands::ListCommand),
    /// An application's endpoints: `kait endpoint list APP`.
    #[command(subcommand)]
    Endpoint(client::commands::ListCommand),
    /// Incoming sources.
    #[command(subcommand)]
    Source(client::commands::ListCommand),
    /// Pipes.
    #[command(subcommand)]
    Pipe(client::commands::ListCommand),
    /// Print a link to an application's consumer portal.
    Portal(client::PortalArgs),
}

fn main() -> ExitCode {
    // `serve` and `migrate` show each setting's default, taken from the code that owns it.
    let matches = Cli::command()
        .mut_subcommand("serve", kait::config::with_defaults)
        .mut_subcommand("migrate", kait::config::with_defaults)
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Migrate(args) => migrate(*args),
        Command::Bench(args) => kait::bench::run(args),
        Command::Verify(args) => kait::verify::run(args),
        Command::Listen(args) => kait::listen::run(args),
        Command::Send(args) => client::commands::send(args),
        Command::Tail(args) => client::commands::tail(args),
        Command::Replay(args) => client::commands::replay(args),
        Command::App(ListCommand::List(args)) => client::commands::list(Listing::Apps, args),
        Command::Endpoint(ListCommand::List(args)) => {
            client::commands::list(Listing::Endpoints, args)
        }
        Command::Source(ListCommand::List(args)) => client::commands::list(Listing::Sources, args),
        Command::Pipe(ListCommand::List(args)) => client::commands::list(Listing::Pipes, args),
        Command::Portal(args) => client::commands::portal(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kait: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServeConfig::resolve(args)?;
    init_logging(config.log_format);
    let generated = config.ensure_admin_token()?;
    if generated {
        println!(
            "Generated an admin token (kept in {}): {}",
            config
                .data_dir
                .join(kait::config::ADMIN_TOKEN_FILE)
                .display(),
            config.admin_token.as_deref().unwrap_or_default()
        );
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let address = listener.local_addr()?;
        println!("kait listening on http://{address}");
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        kait::serve::run(config, listener, shutdown).await
    })
}

fn migrate(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::resolve(args)?;
    init_logging(config.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let applied = runtime.block_on(kait::serve::migrate(&config))?;
    match &config.postgres {
        Some(postgres) => println!(
            "PostgreSQL schema {} is up to date ({applied} migrations applied)",
            postgres.schema
        ),
        None => println!(
            "SQLite database in {} is up to date",
            config.data_dir.display()
        ),
    }
    Ok(())
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
