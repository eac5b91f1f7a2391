//! `silverback-envtest-echo [--listen ADDR:PORT] [--name NAME]`: the echo server of
//! `silverback_envtest::echo` as a process, e.g. inside a test network namespace
//! (`ip netns exec sbt-N silverback-envtest-echo --listen 10.213.0.2:8080 --name backend-a`).
//! Defaults: `--listen 0.0.0.0:8080`, `--name` = the listen address. Prints `listening on ADDR`
//! once it accepts connections.

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let mut listen = "0.0.0.0:8080".to_owned();
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().context("--listen needs a value")?,
            "--name" => name = Some(args.next().context("--name needs a value")?),
            "-h" | "--help" => {
                println!("usage: silverback-envtest-echo [--listen ADDR:PORT] [--name NAME]");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    let name = name.unwrap_or_else(|| listen.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        println!("listening on {}", listener.local_addr()?);
        silverback_envtest::echo::serve(listener, name).await?;
        Ok(())
    })
}
