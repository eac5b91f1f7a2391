//! Reading Kubernetes manifests from files: the only I/O of this crate, kept apart from the
//! translation.

use std::path::{Path, PathBuf};

use crate::objects::{ObjectError, Objects};

/// Why manifests could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds something that is not a valid object.
    #[error("{path}: {source}")]
    Object {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ObjectError,
    },
}

/// Reads a YAML/JSON file, or every `*.yaml`, `*.yml` and `*.json` file under a directory
/// (recursively, in name order), into `objects`. Returns the number of objects recognized.
pub fn read_manifests(path: &Path, objects: &mut Objects) -> Result<usize, ManifestError> {
    let meta = std::fs::metadata(path).map_err(|source| io_err(path, source))?;
    if meta.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| io_err(path, source))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|source| io_err(path, source))?;
        entries.sort();
        let mut n = 0;
        for e in entries {
            let is_manifest = e
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
            if e.is_dir() || is_manifest {
                n += read_manifests(&e, objects)?;
            }
        }
        return Ok(n);
    }
    let bytes = std::fs::read(path).map_err(|source| io_err(path, source))?;
    objects
        .add_yaml_documents(&bytes)
        .map_err(|source| ManifestError::Object {
            path: path.to_path_buf(),
            source,
        })
}

fn io_err(path: &Path, source: std::io::Error) -> ManifestError {
    ManifestError::Io {
        path: path.to_path_buf(),
        source,
    }
}
