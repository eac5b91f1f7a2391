//! `silverback validate FILE`: load a declarative configuration with the data plane's rules and
//! report every error.

use std::io::Read;
use std::process::ExitCode;

use silverback_config::{ConfigError, LoadOptions, PluginRegistry, load_bytes};

use crate::cli::{ErrorFormat, ValidateArgs};

/// Runs the subcommand: exit 0 when valid, 1 on any configuration error, 2 when the file
/// cannot be read.
pub fn run(args: &ValidateArgs) -> ExitCode {
    let bytes = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.file)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            eprintln!("silverback: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: args.router_flavor,
        plugins: &plugins,
        now_unix: None,
    };
    match load_bytes(&bytes, &opts) {
        Ok(cfg) => {
            println!(
                "{}: valid ({} entities, configuration hash {})",
                args.file.display(),
                cfg.entity_count(),
                silverback_config::config_hash(&bytes, &cfg)
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            report(&args.file.display().to_string(), &err, args.output);
            ExitCode::from(1)
        }
    }
}

fn report(file: &str, err: &ConfigError, format: ErrorFormat) {
    match format {
        ErrorFormat::Json => println!("{:#}", err.kong_body(true)),
        ErrorFormat::Text => {
            let lines = err.lines();
            for line in &lines {
                println!("{file}: {line}");
            }
            eprintln!(
                "{file}: invalid ({} error{})",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" }
            );
        }
    }
}
