//! The `warden` binary: `serve`, and client verbs.
use std::process::ExitCode;

use clap::Parser as _;
use mimalloc::MiMalloc;
use warden::{
    cli::{self, Cli, Command},
    config::Config,
    server::Warden,
    telemetry,
};

/// glibc's allocator spent most of ListWorkers' time in `malloc_consolidate` once the fleet
/// state was large (perf, benches/fleet_scale.rs); mimalloc does not.
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    // One crypto provider for every TLS user (tonic, redis, OTLP).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("warden: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Migrate(args) => warden::history::migrate(&args.database_url)
                .await
                .map_err(anyhow::Error::from),
            other => cli::run(other).await.map_err(anyhow::Error::from),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("warden: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: warden::config::ServeArgs) -> anyhow::Result<()> {
    let tokens = std::env::var("WARDEN_TOKENS").ok();
    let config = Config::load(&args, tokens.as_deref())?;
    let _telemetry = telemetry::init(config.log_format, &config.log_level)?;
    // Listen for the signal before anything starts: a SIGTERM during start-up (once the
    // port answers, say) is a graceful shutdown too, not the default action's abrupt exit.
    let signal = shutdown_signal()?;
    let warden = Warden::start(config).await?;
    signal.await;
    tracing::info!("shutdown signal received");
    warden.shutdown().await;
    Ok(())
}

/// SIGINT or SIGTERM, registered now (when this is called), awaited later.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
