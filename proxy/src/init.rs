//! `gatehouse init`: a new ledger, its signing key and its verifier key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gatehouse_engine::operators::{token_hash, Role};
use gatehouse_ledger::cbor::Bytes;
use gatehouse_ledger::event::{OperatorAction, OperatorAdded};
use gatehouse_ledger::keyfile::write_signing_key;
use gatehouse_ledger::note::NoteSigner;
use gatehouse_ledger::Ledger;

use crate::config::{self, Config};

/// File names inside an initialised directory.
pub const CONFIG: &str = "gatehouse.toml";
/// The signing key, owner-only.
pub const SIGNING_KEY: &str = "signing.key";
/// The public verifier key, for auditors.
pub const VERIFIER_KEY: &str = "verifier.pub";
/// The ledger file.
pub const LEDGER: &str = "ledger.db";
/// The first operator's bearer token, owner-only.
pub const OPERATOR_TOKEN: &str = "operator.token";
/// The key of `hash` masking, owner-only.
pub const MASKING_KEY: &str = "masking.key";
/// The first operator's name.
pub const FIRST_OPERATOR: &str = "admin";

/// What `init` produced.
pub struct Initialised {
    /// The configuration file.
    pub config: PathBuf,
    /// The verifier key string.
    pub verifier_key: String,
    /// The file holding the first operator's token.
    pub operator_token: PathBuf,
}

/// Creates `dir` (if needed) with a config, a fresh signing key, the verifier
/// key and a ledger whose first event records the initialisation. Refuses to
/// touch a directory that already holds any of these files.
pub fn init(dir: &Path, origin: Option<&str>) -> Result<Initialised> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in [
        CONFIG,
        SIGNING_KEY,
        VERIFIER_KEY,
        LEDGER,
        OPERATOR_TOKEN,
        MASKING_KEY,
    ] {
        if dir.join(name).exists() {
            bail!(
                "{} already exists; gatehouse init never overwrites a ledger or key — choose an empty directory",
                dir.join(name).display()
            );
        }
    }
    let origin = match origin {
        Some(o) => o.to_owned(),
        None => default_origin(dir)?,
    };
    let signer = NoteSigner::generate(&origin).with_context(|| {
        format!("cannot create a signing key named {origin:?}; pass --origin with a name without spaces or '+'")
    })?;
    let verifier_key = signer.verifier().to_string();
    write_signing_key(&dir.join(SIGNING_KEY), &signer)?;
    std::fs::write(dir.join(VERIFIER_KEY), format!("{verifier_key}\n"))
        .with_context(|| format!("cannot write {}", dir.join(VERIFIER_KEY).display()))?;
    let config_path = dir.join(CONFIG);
    let masking_key: String = crate::gateway::scram::random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_owner_only(&dir.join(MASKING_KEY), &format!("{masking_key}\n"))?;
    std::fs::write(
        &config_path,
        config::initial(LEDGER, SIGNING_KEY, MASKING_KEY),
    )
    .with_context(|| format!("cannot write {}", config_path.display()))?;

    let token = format!(
        "gho_{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            crate::gateway::scram::random_bytes::<32>()
        )
    );
    let token_path = dir.join(OPERATOR_TOKEN);
    write_owner_only(&token_path, &format!("{token}\n"))?;

    let config = Config::load(&config_path)?;
    let ledger = Ledger::open(config.writer_options()?)?;
    ledger.append_blocking(&[
        OperatorAction {
            operator: "gatehouse-init".into(),
            action: "ledger.init".into(),
            target: Some(origin.clone()),
            outcome: "ok".into(),
            detail: Some(verifier_key.clone()),
        }
        .into(),
        OperatorAdded {
            operator: FIRST_OPERATOR.into(),
            roles: Role::ALL.iter().map(|r| r.name().to_owned()).collect(),
            token_hash: Bytes(token_hash(&token)),
            added_by: "gatehouse-init".into(),
        }
        .into(),
    ])?;
    ledger.close();
    Ok(Initialised {
        config: config_path,
        verifier_key,
        operator_token: token_path,
    })
}

/// Writes a new file readable by its owner only; never overwrites.
fn write_owner_only(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn default_origin(dir: &Path) -> Result<String> {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = abs
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && !n.contains('+') && !n.chars().any(char::is_whitespace))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot derive a log origin from {}; pass --origin NAME",
                dir.display()
            )
        })?;
    Ok(format!("gatehouse/{name}"))
}

/// The verifier key that checks a ledger's checkpoint signatures for the
/// investigators' tools: `key` if given (it must load), else the
/// [`VERIFIER_KEY`] `gatehouse init` left beside the ledger, if there is
/// one. `Err` holds the key file and what is wrong with it.
pub fn verifier_key(
    ledger: &Path,
    key: Option<&Path>,
) -> Result<Option<gatehouse_ledger::note::VerifierKey>, (String, String)> {
    let beside = ledger
        .parent()
        .map(|dir| dir.join(VERIFIER_KEY))
        .filter(|k| k.is_file());
    let Some(file) = key.map(Path::to_path_buf).or(beside) else {
        return Ok(None);
    };
    let shown = file.display().to_string();
    let text = std::fs::read_to_string(&file).map_err(|e| (shown.clone(), e.to_string()))?;
    gatehouse_ledger::note::VerifierKey::parse(&text)
        .map(Some)
        .map_err(|e| (shown, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::LedgerReader;

    #[test]
    fn init_writes_an_owner_only_key_and_a_verifiable_ledger_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("gh");
        let out = init(&target, None).unwrap();
        assert!(out.verifier_key.starts_with("gatehouse/gh+"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(target.join(SIGNING_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let pubkey = std::fs::read_to_string(target.join(VERIFIER_KEY)).unwrap();
        assert_eq!(pubkey.trim(), out.verifier_key);
        let key = gatehouse_verify::VerifierKey::parse(pubkey.trim()).unwrap();
        let report = gatehouse_verify::verify_ledger(&target.join(LEDGER), &key, None).unwrap();
        assert!(report.is_intact());
        assert_eq!(
            LedgerReader::open(target.join(LEDGER))
                .unwrap()
                .len()
                .unwrap(),
            2
        );
        // The first operator holds every role; only its token's hash is recorded.
        let token = std::fs::read_to_string(&out.operator_token).unwrap();
        let state = crate::state::load_state(&target.join(LEDGER)).unwrap();
        let admin = state
            .operators
            .authenticate(token.trim())
            .expect("the token authenticates");
        assert_eq!(admin.roles.len(), 4);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out.operator_token)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = init(&target, None).err().unwrap().to_string();
        assert!(again.contains("never overwrites"), "{again}");
    }
}
