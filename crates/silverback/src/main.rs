//! `silverback`: Kong for Kubernetes, in Rust. See `silverback --help`.

mod cli;
mod dataplane;
mod run;
mod translate;
mod validate;

// The allocator of the data plane and the controller: faster than the system's for the many
// small, short-lived allocations of configuration loads and request handling.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse_env();
    init_tracing(&cli.log_level, cli.log_format);
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Version => {
            println!("silverback {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Translate(args) => translate::run(&args),
        Command::Proxy(args) => report(dataplane::serve(&args.data_plane, args.config.as_deref())),
        Command::Run(args) => report(run::run(*args)),
        Command::Controller(args) => report(run::controller(*args)),
    }
}

/// Exit status of a long-running subcommand: errors are printed with their causes.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("silverback: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Kong's `log_level` names mapped to `tracing` levels; anything else is a `tracing` filter.
fn log_filter(level: &str) -> String {
    match level {
        "debug" | "info" | "warn" | "error" | "trace" => level.to_string(),
        "notice" => "info".into(),
        "crit" | "alert" | "emerg" => "error".into(),
        other => other.to_string(),
    }
}

fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
