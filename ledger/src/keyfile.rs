//! Signing keys on disk.
//!
//! The key file holds one C2SP signing-key string. It must be readable by its
//! owner only: a key others can read is a key others can use to forge
//! checkpoints, so loading refuses it instead of warning.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::note::NoteSigner;
use crate::LedgerError;

/// Loads a signing key, refusing files that are missing, unreadable, or
/// readable or writable by group or others.
pub fn load_signing_key(path: &Path) -> Result<NoteSigner, LedgerError> {
    let meta = fs::metadata(path).map_err(|e| {
        LedgerError::Key(format!(
            "cannot read signing key {}: {e}; run `gatehouse init` or point the config at the key file",
            path.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(LedgerError::Key(format!(
                "signing key {} is accessible to group or others (mode {mode:03o}); run `chmod 600 {}` and rotate the key if others may have read it",
                path.display(),
                path.display()
            )));
        }
    }
    let text = fs::read_to_string(path).map_err(|e| {
        LedgerError::Key(format!(
            "cannot read signing key {}: {e}; check its owner and permissions",
            path.display()
        ))
    })?;
    NoteSigner::parse(&text)
        .map_err(|e| LedgerError::Key(format!("signing key {} is not usable: {e}", path.display())))
}

/// Writes a new signing key file readable only by its owner. Refuses to
/// overwrite an existing file.
pub fn write_signing_key(path: &Path, signer: &NoteSigner) -> Result<(), LedgerError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        LedgerError::Key(format!(
            "cannot create signing key {}: {e}; it must not exist already",
            path.display()
        ))
    })?;
    writeln!(f, "{}", signer.to_secret_string())
        .and_then(|_| f.sync_all())
        .map_err(|e| LedgerError::Key(format!("cannot write signing key {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_owner_only_and_refused_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let signer = NoteSigner::from_seed("log", [5; 32]).unwrap();
        write_signing_key(&path, &signer).unwrap();
        assert_eq!(
            load_signing_key(&path).unwrap().verifier(),
            signer.verifier()
        );
        assert!(
            write_signing_key(&path, &signer).is_err(),
            "never overwrites"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = load_signing_key(&path).unwrap_err().to_string();
            assert!(err.contains("chmod 600"), "{err}");
        }
        let missing = load_signing_key(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read signing key"), "{missing}");
    }
}
