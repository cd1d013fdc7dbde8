//! The `tessera` command: `tessera run <config>` serves, `tessera check <config>` validates,
//! `tessera plugin push` loads a plugin into a running gateway, `tessera new` starts a plugin
//! project.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tessera::Gateway;
use tessera::config::Config;

mod scaffold;

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
    /// Manage the plugins of a running gateway through its admin API.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
        /// The admin API's base URL.
        #[arg(long, global = true, default_value = "http://127.0.0.1:8081")]
        admin: String,
        /// Bearer token (default: $TESSERA_ADMIN_TOKEN).
        #[arg(long, global = true)]
        token: Option<String>,
    },
    /// Start a plugin project: a filter or a handler, in Rust, JavaScript or Python, with its
    /// tests and a README saying how to build, test and load it.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["filter", "handler"])))]
    New {
        /// The plugin's name: lower-case letters, digits and '-', starting with a letter, at most
        /// 64 characters. The project is created in <DIR>/<NAME>.
        name: String,
        /// A filter: sees requests before the route's target and responses after it.
        #[arg(long)]
        filter: bool,
        /// A handler: the route's target.
        #[arg(long)]
        handler: bool,
        /// The language.
        #[arg(long, value_enum, default_value_t = scaffold::Language::Rust)]
        lang: scaffold::Language,
        /// The directory to create the project in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Rust: where the tessera-sdk dependency comes from, a path to the SDK's directory or a
        /// version for a registry that has it (default: the sdk/ of the checkout this tessera
        /// was built from).
        #[arg(long, value_name = "PATH|VERSION")]
        sdk: Option<String>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Upload a component; the gateway validates it, stores it and serves it.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// The plugin name routes use.
        #[arg(long)]
        name: String,
    },
    /// List loaded plugins with their versions and counts.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
        Command::New {
            name,
            filter,
            handler: _,
            lang,
            dir,
            sdk,
        } => {
            let request = scaffold::Request {
                name,
                kind: if filter {
                    scaffold::Kind::Filter
                } else {
                    scaffold::Kind::Handler
                },
                language: lang,
                parent: dir,
                sdk,
            };
            let project = scaffold::create(&request)?;
            println!(
                "Created a {} {} plugin in {}. Next:\n\n  cd {}",
                request.language,
                request.kind,
                project.dir.display(),
                project.dir.display()
            );
            for command in &project.next {
                println!("  {command}");
            }
            println!(
                "\nREADME.md explains each step, and the route to add to the gateway's config."
            );
            Ok(())
        }
        Command::Check { config } => {
            let loaded = Config::load(&config)?;
            let routes = loaded.routes.len();
            Gateway::new(loaded)
                .await
                .with_context(|| config.display().to_string())?;
            println!("{}: ok ({routes} routes)", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let gateway = Gateway::from_file(&config).await?.start().await?;
            let stop = gateway.shutdown_handle();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = stop.send(true);
            });
            #[cfg(unix)]
            {
                let live = std::sync::Arc::clone(gateway.live());
                tokio::spawn(async move {
                    let Ok(mut hup) =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                    else {
                        return;
                    };
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the config");
                        if let Err(e) = live.reload_config().await {
                            tracing::error!(error = %tessera::error::chain(&e), "config reload refused");
                        }
                    }
                });
            }
            gateway.wait().await;
            Ok(())
        }
        Command::Plugin {
            command,
            admin,
            token,
        } => {
            let token = token
                .or_else(|| std::env::var(tessera::config::ADMIN_TOKEN_ENV).ok())
                .context("give --token or set TESSERA_ADMIN_TOKEN")?;
            let (method, path, body) = match &command {
                PluginCommand::Push { file, name } => {
                    let bytes = std::fs::read(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    (http::Method::PUT, format!("/admin/plugins/{name}"), bytes)
                }
                PluginCommand::List => (http::Method::GET, "/admin/plugins".to_owned(), Vec::new()),
            };
            let (status, text) = admin_request(&admin, &token, method, &path, body).await?;
            println!("{text}");
            if !status.is_success() {
                anyhow::bail!("the admin API answered {status}");
            }
            Ok(())
        }
    }
}

/// One request to the admin API; returns the status and body text.
async fn admin_request(
    base: &str,
    token: &str,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(http::StatusCode, String)> {
    use http_body_util::BodyExt;
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("`{base}` is not a valid admin URL"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = client
        .request(request)
        .await
        .with_context(|| format!("calling the admin API at {base}"))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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
