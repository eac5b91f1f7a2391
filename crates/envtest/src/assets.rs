//! Where the control-plane binaries and the Gateway API CRDs are.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The pins of `test/envtest/versions.sh`, compiled in so the default cache directory matches
/// the one `build.sh` fills.
const VERSIONS_SH: &str = include_str!("../../../test/envtest/versions.sh");

/// The environment variable naming the directory with `kube-apiserver` and `etcd`.
pub const ENV_DIR: &str = "SILVERBACK_ENVTEST_DIR";

/// The versions pinned in `test/envtest/versions.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// Kubernetes release of `kube-apiserver`, e.g. `1.35.4`.
    pub kubernetes: &'static str,
    /// etcd release, e.g. `3.6.5`.
    pub etcd: &'static str,
    /// Gateway API release whose CRDs are linked next to the binaries, e.g. `1.5.1`.
    pub gateway_api: &'static str,
}

impl Versions {
    /// The pinned versions.
    pub fn pinned() -> Self {
        Self {
            kubernetes: pin("K8S_VERSION"),
            etcd: pin("ETCD_VERSION"),
            gateway_api: pin("GATEWAY_API_VERSION"),
        }
    }
}

/// Reads `NAME=value` from versions.sh. The file is part of this repository and checked by a
/// unit test, so a missing pin is a bug here, reported as an empty string.
fn pin(name: &str) -> &'static str {
    VERSIONS_SH
        .lines()
        .filter_map(|line| line.trim().strip_prefix(name)?.strip_prefix('='))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .next()
        .unwrap_or("")
}

/// Release channel of the Gateway API CRDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayApiChannel {
    /// `config/crd/standard`: the GA and beta resources.
    Standard,
    /// `config/crd/experimental`: also the experimental resources and fields.
    Experimental,
}

impl GatewayApiChannel {
    fn dir_name(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Experimental => "experimental",
        }
    }
}

/// The directory holding the binaries built by `test/envtest/build.sh`.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// The directory `build.sh` uses when `SILVERBACK_ENVTEST_DIR` is not set:
    /// `${XDG_CACHE_HOME:-$HOME/.cache}/silverback/envtest/<kubernetes>-<etcd>`.
    pub fn default_dir() -> PathBuf {
        let v = Versions::pinned();
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/root"))
                    .join(".cache")
            });
        cache
            .join("silverback/envtest")
            .join(format!("{}-{}", v.kubernetes, v.etcd))
    }

    /// Finds the binaries: `$SILVERBACK_ENVTEST_DIR` if set, else [`Assets::default_dir`].
    ///
    /// The error tells how to build them.
    pub fn locate() -> anyhow::Result<Self> {
        let (dir, from_env) = match std::env::var_os(ENV_DIR).filter(|s| !s.is_empty()) {
            Some(dir) => (PathBuf::from(dir), true),
            None => (Self::default_dir(), false),
        };
        let assets = Self { dir };
        let missing: Vec<_> = [assets.kube_apiserver(), assets.etcd()]
            .into_iter()
            .filter(|p| !p.is_file())
            .collect();
        if !missing.is_empty() {
            let source = if from_env {
                format!("${ENV_DIR}")
            } else {
                format!("the default cache directory (${ENV_DIR} is not set)")
            };
            bail!(
                "the test control plane is not built: {} missing in {} ({source}).\n\
                 Build it once (a cold build takes several minutes; later runs are a no-op):\n\
                 \x20   test/envtest/build.sh\n\
                 and run the tests with\n\
                 \x20   SILVERBACK_ENVTEST_DIR=$(test/envtest/build.sh | tail -1) cargo test ...",
                missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                assets.dir.display(),
            );
        }
        Ok(assets)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the `kube-apiserver` binary.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// Path of the `etcd` binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The directory of the pinned Gateway API release's CRD manifests for `channel`
    /// (a link into the Go module cache made by `build.sh`).
    pub fn gateway_api_crds(&self, channel: GatewayApiChannel) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join("gateway-api").join(channel.dir_name());
        if !dir.is_dir() {
            bail!(
                "Gateway API CRDs not found at {}: run test/envtest/build.sh (it links them from \
                 the Go module cache; `go clean -modcache` removes them)",
                dir.display()
            );
        }
        dir.canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_from_versions_sh() {
        let v = Versions::pinned();
        for (name, value) in [
            ("kubernetes", v.kubernetes),
            ("etcd", v.etcd),
            ("gateway_api", v.gateway_api),
        ] {
            assert!(
                !value.is_empty() && value.split('.').all(|p| p.parse::<u32>().is_ok()),
                "{name} pin {value:?} is not a version"
            );
        }
        assert!(v.kubernetes.starts_with("1."));
    }

    #[test]
    fn default_dir_is_keyed_by_version() {
        let v = Versions::pinned();
        let dir = Assets::default_dir();
        assert!(dir.ends_with(format!("silverback/envtest/{}-{}", v.kubernetes, v.etcd)));
    }
}
