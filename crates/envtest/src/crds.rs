//! Installing CustomResourceDefinitions from YAML files and directories.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt as _};

const FIELD_MANAGER: &str = "silverback-envtest";

/// Reads every CustomResourceDefinition in `path`: a YAML (or JSON) file with one or more
/// documents, or a directory whose `*.yaml`, `*.yml` and `*.json` files are read recursively in
/// name order. Documents of other kinds (for example a `kustomization.yaml`) are skipped.
pub fn read_crds(path: &Path) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let mut files = Vec::new();
    collect_files(path, &mut files)?;
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        // CRD schemas nest deeply and are large; the defaults guard against hostile input.
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_depth: 1024,
                max_nodes: 10_000_000,
                max_events: 40_000_000,
            },
        };
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_str_multiple_with_options(&text, options)
                .with_context(|| format!("parsing YAML in {}", file.display()))?;
        for doc in docs {
            if doc.get("kind").and_then(|k| k.as_str()) != Some("CustomResourceDefinition") {
                continue;
            }
            let crd: CustomResourceDefinition = serde_json::from_value(doc)
                .with_context(|| format!("a CustomResourceDefinition in {}", file.display()))?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(entry);
        }
    }
    Ok(())
}

/// Installs (server-side applies) every CustomResourceDefinition found in `paths` (see
/// [`read_crds`]) and waits until all are `Established`, at most `timeout`. Returns their names.
pub async fn install_crds(
    client: &Client,
    paths: &[PathBuf],
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let mut crds = Vec::new();
    for path in paths {
        let found = read_crds(path)?;
        if found.is_empty() {
            bail!("no CustomResourceDefinition in {}", path.display());
        }
        crds.extend(found);
    }
    apply_and_wait(client, crds, timeout).await
}

pub(crate) async fn apply_and_wait(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::with_capacity(crds.len());
    for mut crd in crds {
        let name = crd.name_any();
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.status = None;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CustomResourceDefinition {name}"))?;
        names.push(name);
    }
    let deadline = Instant::now() + timeout;
    for name in &names {
        loop {
            let crd = api.get(name).await?;
            if is_established(&crd) {
                break;
            }
            if Instant::now() > deadline {
                bail!("CustomResourceDefinition {name} not Established within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(names)
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conds| {
            conds
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_files_and_skips_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: apiextensions.k8s.io/v1\n\
             kind: CustomResourceDefinition\n\
             metadata: {name: widgets.example.com}\n\
             spec:\n  group: example.com\n  scope: Namespaced\n\
             \x20 names: {plural: widgets, singular: widget, kind: Widget}\n\
             \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
             \x20   schema: {openAPIV3Schema: {type: object}}\n\
             ---\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n---\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("notes.txt"),
            "kind: CustomResourceDefinition",
        )
        .unwrap();
        let crds = read_crds(dir.path()).unwrap();
        assert_eq!(crds.len(), 1);
        assert_eq!(crds[0].name_any(), "widgets.example.com");
        assert_eq!(crds[0].spec.names.kind, "Widget");
    }
}
