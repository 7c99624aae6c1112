//! Converting other tools' stack files into services.toml (`dagstart import`), and
//! services.toml into theirs (`dagstart export`).
//!
//! Each importer reads its format into a [`Draft`]: the nodes as dagstart will run them, and
//! the list of what could not be carried over, each with the reason. [`Draft::to_toml`] writes
//! the services.toml with that list as a comment at the top; nothing is dropped silently.
//! This part knows nothing of the engine's runtime: it writes text that the loader then checks.

mod compose;
mod draft;
mod duration;
mod export_process_compose;
mod export_systemd;
mod process_compose;
mod procfile;

use std::path::Path;

pub use draft::{Draft, DraftNode, Health, Lost};
pub use export_process_compose::to_process_compose;
pub use export_systemd::{SystemdExport, UnitFile, project_name, to_systemd, unit_name};

/// The formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// docker compose (`compose.yaml`, `docker-compose.yml`)
    Compose,
    /// process-compose (`process-compose.yaml`)
    ProcessCompose,
    /// a Procfile (foreman, honcho), with the `.env` beside it
    Procfile,
}

/// Why a file could not be imported at all.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    #[diagnostic(code(dagstart::import::read))]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {message}")]
    #[diagnostic(code(dagstart::import::yaml))]
    Yaml { path: String, message: String },
    #[error("{path}: {message}")]
    #[diagnostic(code(dagstart::import::shape), help("{help}"))]
    Shape {
        path: String,
        message: String,
        help: String,
    },
    #[error("cannot tell the format of {path}")]
    #[diagnostic(
        code(dagstart::import::format),
        help("name it with --from compose, --from process-compose or --from procfile")
    )]
    UnknownFormat { path: String },
}

/// Reads `path` (of `format`, or detected) into a draft. `env` answers variables that the
/// file itself needs resolved at import (compose's `${VAR:+alt}`, which dagstart cannot
/// express); files beside it (`env_file`, `.env`) are read relative to its directory.
pub fn import(
    path: &Path,
    format: Option<Format>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Draft, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let format = match format {
        Some(format) => format,
        None => detect(path, &text).ok_or_else(|| ImportError::UnknownFormat {
            path: path.display().to_string(),
        })?,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    import_text(&text, format, dir, env).map_err(|e| e.at(&path.display().to_string()))
}

/// Reads `text` of `format` into a draft; files it names (`env_file`, `.env`) are read
/// relative to `dir`.
pub fn import_text(
    text: &str,
    format: Format,
    dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Draft, Broken> {
    match format {
        Format::Compose => compose::import(text, dir, env),
        Format::ProcessCompose => process_compose::import(text),
        Format::Procfile => Ok(procfile::import(text, dir)),
    }
}

/// The format of `path`, by its name first and then by what it holds.
pub fn detect(path: &Path, text: &str) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    if name.starts_with("procfile") {
        return Some(Format::Procfile);
    }
    if name.contains("process-compose") {
        return Some(Format::ProcessCompose);
    }
    if name.contains("compose") {
        return Some(Format::Compose);
    }
    let value: yaml_serde::Value = yaml_serde::from_str(text).ok()?;
    if value.get("processes").is_some() {
        Some(Format::ProcessCompose)
    } else if value.get("services").is_some() {
        Some(Format::Compose)
    } else {
        None
    }
}

/// The YAML document of `text`, and its mapping under `key` (`services`, `processes`).
pub(crate) fn top_mapping<'d>(
    doc: &'d yaml_serde::Value,
    key: &str,
    help: &str,
) -> Result<&'d yaml_serde::Mapping, Broken> {
    doc.get(key)
        .and_then(yaml_serde::Value::as_mapping)
        .ok_or_else(|| Broken::Shape {
            message: format!("no `{key}` mapping"),
            help: help.into(),
        })
}

pub(crate) fn parse_yaml(text: &str) -> Result<yaml_serde::Value, Broken> {
    yaml_serde::from_str(text).map_err(|e| Broken::Yaml(e.to_string()))
}

/// A problem of a whole file, before its path is known to the importer.
#[derive(Debug)]
pub enum Broken {
    Yaml(String),
    Shape { message: String, help: String },
}

impl Broken {
    /// The error, saying which file it is about.
    pub fn at(self, path: &str) -> ImportError {
        match self {
            Broken::Yaml(message) => ImportError::Yaml {
                path: path.to_owned(),
                message,
            },
            Broken::Shape { message, help } => ImportError::Shape {
                path: path.to_owned(),
                message,
                help,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd documents of every format: an error or valid TOML, never a panic.
    #[test]
    fn odd_input_is_an_error_or_valid_toml() {
        let odd = [
            "services:\n  1: {command: [1, true, null]}\n  '': {}\n",
            "services:\n  a: [not, a, mapping]\n  b: {depends_on: 7, healthcheck: {test: []}}\n",
            "services:\n  a: {command: x, depends_on: {b: {condition: 3}}}\n  b: {command: y, restart: 'on-failure:x'}\n",
            "services:\n  a: {command: 'x ${', environment: {K: {nested: 1}}, stop_grace_period: forever}\n",
            "processes:\n  a: {command: 5, readiness_probe: {}, shutdown: {signal: 99}}\n",
            "processes:\n  a: {depends_on: {b: {condition: process_completed}}}\n  b: {command: y}\n",
            "processes: 3\n",
            "services: {}\n",
            "- a\n- b\n",
        ];
        let dir = tempfile::tempdir().unwrap();
        for (i, text) in odd.iter().enumerate() {
            for (name, format) in [
                ("compose.yaml", Format::Compose),
                ("process-compose.yaml", Format::ProcessCompose),
                ("Procfile", Format::Procfile),
            ] {
                let path = dir.path().join(format!("{i}-{name}"));
                std::fs::write(&path, text).unwrap();
                if let Ok(draft) = import(&path, Some(format), &|_| None) {
                    let toml = draft.to_toml();
                    assert!(
                        toml::from_str::<toml::Table>(&toml).is_ok(),
                        "not TOML from {text:?} as {format:?}:\n{toml}"
                    );
                }
            }
        }
    }
}
