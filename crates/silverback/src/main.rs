//! `silverback`: Kong for Kubernetes, in Rust. See `silverback --help`.

mod cli;
mod dataplane;
mod limits;
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
    if let Err(e) = init_tracing(&cli.log_level, cli.log_format) {
        eprintln!("silverback: {e}");
        return ExitCode::from(2);
    }
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

/// The node's log level, set up by [`init_tracing`]: what the admin API's
/// `/debug/node/log-level` shows and changes.
static LOG_LEVEL: std::sync::OnceLock<std::sync::Arc<silverback_proxy::log_level::LogLevel>> =
    std::sync::OnceLock::new();

/// The log level set up at start (a fixed one if logging was not set up by [`init_tracing`]).
pub fn log_level() -> std::sync::Arc<silverback_proxy::log_level::LogLevel> {
    LOG_LEVEL
        .get_or_init(|| std::sync::Arc::new(silverback_proxy::log_level::LogLevel::fixed()))
        .clone()
}

/// Sets up logging to stderr with the filter of `--log-level` (an invalid one is an error
/// that names it), behind a reload handle that `/debug/node/log-level` changes.
fn init_tracing(level: &str, format: LogFormat) -> Result<(), String> {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*, reload};
    let configured = log_filter(level);
    // A single word is a level (Kong's or tracing's): `EnvFilter` would take any other word
    // for a target, and log nothing else.
    let single = !configured.contains(['=', ',', '[']);
    const TRACING: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if single && !TRACING.contains(&configured.as_str()) {
        return Err(format!(
            "invalid log level '{level}': expected one of debug, info, notice, warn, error, crit, alert, emerg (Kong's), trace or off, or a tracing filter such as 'info,silverback_proxy=debug'"
        ));
    }
    let filter =
        EnvFilter::try_new(&configured).map_err(|e| format!("invalid log level '{level}': {e}"))?;
    // Kong's name of the configured level, as `GET /debug/node/log-level` shows it
    let shown = if silverback_proxy::log_level::filter_of(level).is_some() {
        level.to_string()
    } else {
        use tracing_subscriber::filter::LevelFilter;
        match filter.max_level_hint() {
            Some(LevelFilter::INFO) => "info",
            Some(LevelFilter::WARN) => "warn",
            Some(LevelFilter::ERROR) => "error",
            Some(LevelFilter::OFF) => "emerg",
            _ => "debug",
        }
        .to_string()
    };
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let out = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(out).init(),
        LogFormat::Json => registry.with(out.json()).init(),
    }
    let apply = move |f: &str| {
        let filter = EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    };
    let level = silverback_proxy::log_level::LogLevel::new(&shown, &configured, Box::new(apply));
    // (set once, before anything reads it)
    let _ = LOG_LEVEL.set(std::sync::Arc::new(level));
    Ok(())
}
