//! Mapping directories on disk: atomic writes of generated mappings, and reading a directory
//! back (WireMock's layout: `DIR/mappings/*.json`, each file one mapping or
//! `{"mappings": [...]}`).

use std::io::Write;
use std::path::{Path, PathBuf};

use apm_capture::MappingFile;
use serde_json::Value;

/// A file-level problem, naming the file (and the index inside it, when it holds several).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{file}: {message}")]
pub struct FileError {
    /// The file (and `#index` for multi-mapping files).
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// An I/O failure while writing.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct WriteError {
    /// The path being written.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// The directory holding the mapping files: `dir/mappings` when it exists (WireMock's root
/// layout), otherwise `dir` itself.
pub fn mappings_dir(dir: &Path) -> PathBuf {
    let sub = dir.join("mappings");
    if sub.is_dir() { sub } else { dir.to_path_buf() }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let wrap = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(wrap)
}

/// Writes mappings to `out/mappings/<file_name>`. Returns the number written.
///
/// Only [`MappingFile`]s can be written, and those are built from sanitized exchanges only.
pub fn write_mappings(out: &Path, mappings: &[MappingFile]) -> Result<usize, WriteError> {
    let dir = out.join("mappings");
    std::fs::create_dir_all(&dir).map_err(|source| WriteError {
        path: dir.clone(),
        source,
    })?;
    for m in mappings {
        write_atomic(&dir.join(&m.file_name), m.bytes())?;
    }
    Ok(mappings.len())
}

/// A mapping read from disk and where it came from.
#[derive(Debug, Clone)]
pub struct LoadedMapping {
    /// `file` or `file#index`.
    pub origin: String,
    /// The mapping JSON.
    pub mapping: Value,
}

/// Reads every `*.json` under the mappings directory of `dir` (sorted by name, not recursive
/// into hidden entries). Bad files are reported and skipped.
pub fn read_mappings(dir: &Path) -> Result<(Vec<LoadedMapping>, Vec<FileError>), FileError> {
    let root = mappings_dir(dir);
    let entries = std::fs::read_dir(&root).map_err(|e| FileError {
        file: root.display().to_string(),
        message: format!("cannot read the mappings directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.is_file()
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) => {
                errors.push(FileError {
                    file: name,
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(mut m)) => {
                if let Some(Value::Array(list)) = m.remove("mappings") {
                    for (i, item) in list.into_iter().enumerate() {
                        out.push(LoadedMapping {
                            origin: format!("{name}#{i}"),
                            mapping: item,
                        });
                    }
                } else {
                    out.push(LoadedMapping {
                        origin: name,
                        mapping: Value::Object(m),
                    });
                }
            }
            Ok(_) => errors.push(FileError {
                file: name,
                message: "not a mapping: expected a JSON object".into(),
            }),
            Err(e) => errors.push(FileError {
                file: name,
                message: format!("invalid JSON: {e}"),
            }),
        }
    }
    Ok((out, errors))
}
