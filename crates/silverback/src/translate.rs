//! `silverback translate -f FILE_OR_DIR`: Kubernetes manifests in, Kong declarative
//! configuration out, and the problems found on the way.

use std::process::ExitCode;

use silverback_translator::{
    Objects, TranslateOptions, manifests::read_manifests, translate_typed,
};

use crate::cli::{OutputFormat, TranslateArgs};

/// Prints the configuration on stdout and every problem on stderr; exit 1 when there were
/// problems (the configuration is printed anyway), 2 when the input cannot be read.
pub fn run(args: &TranslateArgs) -> ExitCode {
    let mut objects = Objects::default();
    if let Err(e) = read_manifests(&args.file, &mut objects) {
        eprintln!("silverback: {e}");
        return ExitCode::from(2);
    }
    let opts = TranslateOptions {
        router_flavor: args.router_flavor,
        ..TranslateOptions::default()
    };
    let out = translate_typed(&objects, &opts);
    match args.output {
        OutputFormat::Json => println!("{}", out.to_json()),
        OutputFormat::Yaml => print!("{}", out.to_yaml()),
    }
    for p in &out.problems {
        eprintln!("{p}");
    }
    if out.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
