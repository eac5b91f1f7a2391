//! Test support for silverback: a real Kubernetes control plane and network namespaces.
//!
//! # Control plane
//!
//! [`ControlPlane`] starts a real `etcd` and `kube-apiserver` (built from Go modules by
//! `test/envtest/build.sh`): the API server on a free loopback port, etcd on unix sockets in the
//! control plane's temporary directory. It generates certificates, a service-account signing
//! key and an admin identity (a client certificate in the group `system:masters`), waits until
//! the API server is ready (`/readyz`), writes a kubeconfig, installs CustomResourceDefinitions
//! and hands out [`kube::Client`]s. Dropping it kills both processes and removes its temporary
//! directory, also when the test panics. Should the test process die without unwinding, the
//! processes get SIGKILL from the kernel (parent-death signal) and the next start removes the
//! directory.
//!
//! Each test can start its own control plane (about 3 s), or tests can share one per test
//! binary with [`ControlPlane::shared`] and a namespace each.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use silverback_envtest::{ControlPlane, GatewayApiChannel};
//!
//! let cp = ControlPlane::builder()
//!     .gateway_api_crds(GatewayApiChannel::Standard)
//!     .crds("tests/data/my-crds.yaml")
//!     .start()
//!     .await?;
//! let ns = cp.create_namespace("my-test").await?;
//! let client = cp.client();
//! // ... create objects with kube::Api in `ns` ...
//!
//! // A client for a ServiceAccount, authorised only by the RBAC the test applies:
//! let sa = cp.service_account_identity(&ns, "controller").await?;
//! let restricted = sa.client()?;
//! # let _ = (client, restricted);
//! # Ok(()) }
//! ```
//!
//! The binaries are looked up in `$SILVERBACK_ENVTEST_DIR`, else in the default cache directory
//! that `test/envtest/build.sh` fills (see [`Assets`]).
//!
//! An API server alone runs no controllers: no Pods run, no EndpointSlices appear by themselves,
//! deleted namespaces stay `Terminating`. Tests create EndpointSlices themselves.
//!
//! # Backends in network namespaces
//!
//! The API server rejects loopback addresses in EndpointSlices. [`netns::NetNs`] creates a
//! network namespace joined to the host by a veth pair with private addresses, so a backend can
//! listen on a non-loopback address that the host (and the data plane under test) reaches.
//! [`echo`] is a small HTTP echo server for such backends, also available as the binary
//! `silverback-envtest-echo`.

mod assets;
mod certs;
mod control_plane;
mod crds;
pub mod echo;
pub mod netns;
mod process;

pub use assets::{Assets, GatewayApiChannel, Versions};
pub use control_plane::{ControlPlane, ControlPlaneBuilder, Identity};
pub use crds::{install_crds, read_crds};

/// Makes ring rustls's process-wide crypto provider unless one is installed already, so
/// clients build even when another crate in the test binary enables a second provider.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
