//! `silverback run` (controller and data plane in one process) and `silverback controller`.

use std::sync::Arc;

use anyhow::Context;
use silverback_controller::{
    DataPlaneTarget, InProcessTarget, kube_client, start_cluster, start_files,
};

use crate::cli::{ControllerArgs, RunArgs};
use crate::dataplane;

/// `silverback run`: with `--config`, the data plane alone; with `--manifests`, the files
/// mode; otherwise the cluster mode. The controller configures the in-process gateway
/// directly (an atomic swap, no HTTP).
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.manifests.is_none() && args.config.is_some() {
        return dataplane::serve(&args.data_plane, args.config.as_deref());
    }
    let settings = dataplane::prepare(&args.data_plane)?;
    let rt = dataplane::runtime(&settings)?;
    rt.block_on(async move {
        let flavor = settings.router_flavor;
        let plugins = settings.plugins.clone();
        let gateway = Arc::new(dataplane::start(settings, None).await?);
        let target: Arc<dyn DataPlaneTarget> =
            Arc::new(InProcessTarget::new(gateway.clone(), flavor, plugins));
        let mut opts = args.controller;
        opts.sync.router_flavor = flavor;
        let controller = match &args.manifests {
            Some(dir) => {
                tracing::info!(dir = %dir.display(), "serving Kubernetes manifests from files");
                start_files(dir.clone(), &opts.sync, vec![target]).await?
            }
            None => {
                let client = kube_client(opts.kube.kubeconfig.as_deref()).await.context(
                    "no cluster to watch: give --kubeconfig, run in a Pod, or use --manifests DIR / --config FILE",
                )?;
                start_cluster(client, &opts, vec![target]).await?
            }
        };
        controller.run_until(dataplane::shutdown_signal()).await;
        tracing::info!("shutting down");
        match Arc::try_unwrap(gateway) {
            Ok(g) => g.shutdown().await,
            Err(_) => tracing::warn!("the gateway is still referenced; exiting without draining"),
        }
        Ok(())
    })
}

/// `silverback controller`: watches the cluster and pushes to the data planes given by
/// `--kong-admin-url` or discovered through `--kong-admin-svc`.
pub fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("silverback-controller")
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let mut opts = args.controller;
        opts.sync.router_flavor = args.router_flavor;
        let client = kube_client(opts.kube.kubeconfig.as_deref()).await?;
        let controller = start_cluster(client, &opts, Vec::new()).await?;
        controller.run_until(dataplane::shutdown_signal()).await;
        Ok(())
    })
}
