//! The `gatehouse.toml` configuration file.
//!
//! Relative paths in the file are relative to the file's own directory, so a
//! directory made by `gatehouse init` can be moved as a whole.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gatehouse_ledger::{Durability, WriterOptions};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how events are recorded.
    pub ledger: LedgerSection,
}

/// `[ledger]`: the audit ledger.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// The ledger's SQLite file.
    pub path: PathBuf,
    /// The owner-only file holding the checkpoint signing key.
    pub signing_key: PathBuf,
    /// `os` (survives a process crash) or `fsync` (survives power loss).
    #[serde(default = "default_durability")]
    pub durability: String,
}

fn default_durability() -> String {
    "os".into()
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read config {}; pass --config with the file `gatehouse init` wrote",
                path.display()
            )
        })?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("config {} is invalid", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.ledger.path = base.join(&config.ledger.path);
        config.ledger.signing_key = base.join(&config.ledger.signing_key);
        config.durability()?;
        Ok(config)
    }

    /// The configured durability.
    pub fn durability(&self) -> Result<Durability> {
        self.ledger
            .durability
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[ledger] {e}"))
    }

    /// Writer options for the ledger, loading (and checking) the signing key.
    pub fn writer_options(&self) -> Result<WriterOptions> {
        let signer = gatehouse_ledger::keyfile::load_signing_key(&self.ledger.signing_key)?;
        let mut options = WriterOptions::new(&self.ledger.path, signer);
        options.durability = self.durability()?;
        Ok(options)
    }
}

/// The configuration `gatehouse init` writes.
pub fn initial(ledger: &str, signing_key: &str) -> String {
    format!(
        "# Gatehouse configuration. Relative paths are relative to this file.\n\
         \n\
         [ledger]\n\
         # The append-only audit ledger (SQLite).\n\
         path = {ledger:?}\n\
         # Checkpoint signing key; must be readable by its owner only.\n\
         signing_key = {signing_key:?}\n\
         # \"os\": a commit survives a process crash; \"fsync\": it also survives power loss.\n\
         durability = \"os\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_config_parses_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, initial("ledger.db", "signing.key")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.ledger.path, dir.path().join("ledger.db"));
        assert_eq!(c.durability().unwrap(), Durability::Os);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(
            &path,
            "[ledger]\npath = \"x\"\nsigning_key = \"k\"\ndurability = \"sometimes\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("\"os\" or \"fsync\""), "{err}");
        std::fs::write(
            &path,
            "[ledger]\npath = \"x\"\nsigning_key = \"k\"\nbogus = 1\n",
        )
        .unwrap();
        let err = format!("{:#}", Config::load(&path).unwrap_err());
        assert!(err.contains("line 4") && err.contains("bogus"), "{err}");
    }
}
