//! The TOML parser (feature `config-file`): [`IpcConfig::from_toml_str`] and
//! [`IpcConfig::from_file`], with errors that name the key and where it is.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::IpcConfig;
use crate::error::{IpcError, Result};

impl IpcConfig {
    /// Reads and checks a TOML configuration; `origin` (usually the file name) is what errors
    /// name. An empty text gives the defaults. (Feature `config-file`.)
    ///
    /// Errors ([`IpcError::Config`]) name `origin`, the key (`ipc.max_connections`) and,
    /// where the key appears in the text, its line and column: syntax errors, values of the
    /// wrong type, unknown keys or sections, and values out of range
    /// ([`IpcConfig::validate`]).
    ///
    /// ```
    /// use lapce_ipc::IpcConfig;
    ///
    /// let config = IpcConfig::from_toml_str("[ipc]\nwait_mode = \"spin\"\n", "my.toml")?;
    /// assert_eq!(config.wait_strategy(), lapce_ipc::WaitStrategy::Spin);
    ///
    /// let err = IpcConfig::from_toml_str("[ipc]\nmax_connections = \"many\"\n", "my.toml").unwrap_err();
    /// let msg = err.to_string();
    /// assert!(msg.starts_with("config my.toml: ipc.max_connections: invalid type"), "{msg}");
    /// assert!(msg.ends_with("(line 2, column 19)"), "{msg}");
    /// # Ok::<(), lapce_ipc::IpcError>(())
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
    pub fn from_toml_str(text: &str, origin: &str) -> Result<IpcConfig> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if let Some(e) = errors.into_iter().next() {
            return Err(located(text, &root, origin, e.message(), e.span()));
        }
        let config = IpcConfig::deserialize(toml::de::Deserializer::from(root.clone()))
            .map_err(|e| located(text, &root, origin, e.message(), e.span()))?;
        config.check().map_err(|e| {
            let span = span_of_key(root.get_ref(), e.key);
            let mut err = located(text, &root, origin, &e.reason, span);
            if let IpcError::Config { key, .. } = &mut err {
                *key = Some(e.key.to_owned());
            }
            err
        })?;
        Ok(config)
    }

    /// Reads and checks the TOML file at `path` (see [`IpcConfig::from_toml_str`]); errors
    /// name the file. (Feature `config-file`.)
    #[cfg_attr(docsrs, doc(cfg(feature = "config-file")))]
    pub fn from_file(path: impl AsRef<Path>) -> Result<IpcConfig> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| IpcError::Config {
            origin: origin.clone(),
            key: None,
            reason: format!("cannot read: {e}"),
        })?;
        IpcConfig::from_toml_str(&text, &origin)
    }
}

/// A [`IpcError::Config`] for an error at `span` of `text`: the key is the one the span falls
/// in, the position is appended to the reason.
fn located(
    text: &str,
    root: &toml::Spanned<DeTable<'_>>,
    origin: &str,
    reason: &str,
    span: Option<Range<usize>>,
) -> IpcError {
    let mut key = None;
    let mut reason = reason.trim_end().replace('\n', "; ");
    if let Some(span) = span {
        let mut path = Vec::new();
        if key_path_at(root.get_ref(), span.start, &mut path) {
            key = Some(path.join("."));
        }
        let (line, column) = line_column(text, span.start);
        let source = text.lines().nth(line - 1).unwrap_or_default().trim();
        if key.is_none() && !source.is_empty() {
            // A syntax error: no key to name, so show the line.
            reason.push_str(&format!(" (line {line}, column {column}: `{source}`)"));
        } else {
            reason.push_str(&format!(" (line {line}, column {column})"));
        }
    }
    IpcError::Config { origin: origin.to_owned(), key, reason }
}

/// The dotted key whose name or value contains byte `pos`, innermost first.
fn key_path_at(table: &DeTable<'_>, pos: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        let here = key.span().contains(&pos) || value.span().contains(&pos);
        path.push(key.get_ref().to_string());
        if let DeValue::Table(inner) = value.get_ref() {
            if key_path_at(inner, pos, path) {
                return true;
            }
        }
        if here {
            return true;
        }
        path.pop();
    }
    false
}

/// Where the value of the dotted `key` is in the text, if the key is there.
fn span_of_key(root: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
    let mut table = root;
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (_, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        if parts.peek().is_none() {
            return Some(value.span());
        }
        table = value.get_ref().as_table()?;
    }
    None
}

/// 1-based line and column (in characters) of byte `pos`.
fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..pos.min(text.len())];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line, column)
}
