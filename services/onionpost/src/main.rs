//! `onionpost`: the one binary. It only wires: it reads the configuration, picks the modules of
//! the targets asked for, binds the listeners and hands everything to the runtime. Every service
//! lives in its own library crate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use onionpost_proto::ServiceName;
use onionpost_runtime::config::{Config, ConfigFile, describe_keys};
use onionpost_runtime::service::{Listeners, cancel_on_signal, run};
use onionpost_runtime::{Module, grpc, telemetry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serverless e-mail over Tor: a carrier that hosts onion identities and IMAP accounts, carries
/// mail for people who are offline, and bridges to the clearnet.
#[derive(Parser, Debug)]
#[command(name = "onionpost", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run services: all of them in one process (the default), or the named ones.
    ///
    /// Services not run here are reached over gRPC at their `remote.<service>` address.
    Serve(ServeArgs),
    /// Exit 0 only when every named service answers SERVING (for container health checks).
    Healthcheck(HealthcheckArgs),
    /// List every configuration key with its environment variable and default.
    ConfigKeys,
    /// Validate the configuration (file and environment) and exit.
    ConfigCheck(ConfigArgs),
    /// Administer a carrier through its admin HTTP API (address from ONIONPOST_ADMIN_URL, token
    /// from ONIONPOST_ADMIN_TOKEN).
    Admin(onionpost_admin::cli::AdminArgs),
}

#[derive(Args, Debug)]
struct ConfigArgs {
    /// TOML configuration file; every key can also be set as ONIONPOST_<KEY>.
    #[arg(long, short, env = "ONIONPOST_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// `all`, or a comma-separated list of: onion, keys, smtp-in, queue, smtp-out, imap,
    /// gateway, portal, admin.
    #[arg(long, short, default_value = "all")]
    target: String,
}

#[derive(Args, Debug)]
struct HealthcheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Services to check, as for `serve`.
    #[arg(long, short, default_value = "all")]
    target: String,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

/// The services this build contains. The others are contracts in `proto/` whose crates land
/// with their issues; asking for one says so.
fn module(target: ServiceName) -> Option<Box<dyn Module>> {
    match target {
        ServiceName::Admin => Some(Box::new(onionpost_admin::AdminModule)),
        ServiceName::Onion => Some(Box::new(onionpost_onion::OnionModule)),
        ServiceName::Keys => Some(Box::new(onionpost_keys::KeysModule)),
        ServiceName::SmtpOut => Some(Box::new(onionpost_smtp_out::SmtpOutModule)),
        ServiceName::Queue => Some(Box::new(onionpost_queue::QueueModule)),
        ServiceName::Imap => Some(Box::new(onionpost_imap::ImapModule)),
        ServiceName::SmtpIn => Some(Box::new(onionpost_smtp_in::SmtpInModule)),
        ServiceName::Gateway => Some(Box::new(onionpost_gateway::GatewayModule)),
        ServiceName::Portal => Some(Box::new(onionpost_portal::PortalModule)),
    }
}

fn built_targets() -> Vec<ServiceName> {
    ServiceName::ALL
        .iter()
        .copied()
        .filter(|target| module(*target).is_some())
        .collect()
}

fn parse_targets(list: &str) -> anyhow::Result<Vec<ServiceName>> {
    if list.trim() == "all" {
        return Ok(built_targets());
    }
    let mut targets = Vec::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let target: ServiceName = name
            .parse()
            .map_err(|error| anyhow::anyhow!("--target: {error}"))?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    anyhow::ensure!(
        !targets.is_empty(),
        "--target: name at least one service, or all"
    );
    Ok(targets)
}

fn load_config(args: &ConfigArgs) -> anyhow::Result<Config> {
    let file = args.config.as_deref().map(ConfigFile::read).transpose()?;
    Ok(Config::load(file.as_ref(), std::env::vars())?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("onionpost: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Healthcheck(args) => healthcheck(args).await,
            Command::ConfigKeys => {
                println!("{}", describe_keys());
                Ok(ExitCode::SUCCESS)
            }
            Command::Admin(args) => onionpost_admin::cli::run(args).await,
            Command::ConfigCheck(args) => load_config(&args).map(|_| {
                println!("configuration ok");
                ExitCode::SUCCESS
            }),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // One line, naming the problem: the chain of contexts joined by colons.
            eprintln!("onionpost: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn bind(what: &str, address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {what} {address}: {error}"))
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let targets = parse_targets(&args.target)?;
    let mut modules = Vec::new();
    for target in &targets {
        let module = module(*target).ok_or_else(|| {
            anyhow::anyhow!(
                "--target: service {} is not in this build yet (available: {})",
                target.as_str(),
                built_targets()
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        modules.push(module);
    }
    let label = format!(
        "onionpost[{}]",
        targets
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut telemetry_guard = telemetry::init(&config.log, &label)?;
    let listeners = Listeners {
        grpc: bind("grpc.listen", config.grpc_listen).await?,
        metrics: match config.metrics_listen {
            Some(address) => Some(bind("metrics.listen", address).await?),
            None => None,
        },
    };
    tracing::info!(targets = %label, version = env!("CARGO_PKG_VERSION"), "onionpost starting");
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let result = run(config, modules, listeners, shutdown).await;
    tracing::info!("onionpost stopped");
    telemetry_guard.shutdown();
    result.map(|()| ExitCode::SUCCESS)
}

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let targets = parse_targets(&args.target)?;
    // The carrier's services answer only to the carrier's credentials (mutual TLS).
    let tls = onionpost_runtime::grpc_tls::GrpcTls::from_secret(
        &onionpost_runtime::seal::CarrierSecret::load(&config)?,
    )?;
    let mut all_serving = true;
    for target in targets {
        let address = match config.remote.get(&target) {
            Some(address) => address.clone(),
            None => {
                let mut local = config.grpc_listen;
                if local.ip().is_unspecified() {
                    local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{local}")
            }
        };
        let transport = grpc::secured_transport(target, &address, &tls)
            .map_err(|error| anyhow::anyhow!("remote.{}: {error}", target.as_str()))?;
        let status = match tokio::time::timeout(
            Duration::from_secs(args.timeout),
            grpc::check_health(transport, target),
        )
        .await
        {
            Ok(Ok(true)) => "SERVING".to_owned(),
            Ok(Ok(false)) => "NOT_SERVING".to_owned(),
            Ok(Err(status)) => format!("UNREACHABLE ({})", status.message()),
            Err(_) => "UNREACHABLE (timed out)".to_owned(),
        };
        all_serving &= status == "SERVING";
        println!("{:<9} {:<28} {status}", target.as_str(), address);
    }
    Ok(if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
