//! The `tessera` command: `tessera run <config>` serves, `tessera check <config>` validates.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tessera::Gateway;
use tessera::config::Config;

#[derive(Parser)]
#[command(name = "tessera", version, about = "Programmable API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        /// Path to tessera.toml.
        config: PathBuf,
    },
    /// Validate a config file and load its plugins, without serving.
    Check {
        /// Path to tessera.toml.
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { config } => {
            let loaded = Config::load(&config)?;
            let routes = loaded.routes.len();
            Gateway::new(loaded)
                .await
                .with_context(|| format!("{}: plugins", config.display()))?;
            println!("{}: ok ({routes} routes)", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let loaded = Config::load(&config)?;
            let gateway = Gateway::new(loaded).await?.start().await?;
            let stop = gateway.shutdown_handle();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            gateway.wait().await;
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
