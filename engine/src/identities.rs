//! Agent identities and their gateway credentials, as a fold over events.
//!
//! Identities and credentials exist only as ledger events (created, issued
//! with an expiry, revoked); this projection is the table the gateway
//! authenticates against, rebuilt from the ledger at start-up.

use std::collections::BTreeMap;

use gatehouse_ledger::cbor::{Cbor, Dec, DecodeError, Enc};
use gatehouse_ledger::cbor_record;
use gatehouse_ledger::event::{EventBody, Nanos};
use serde::Serialize;

/// What the gateway needs to check a SCRAM-SHA-256 proof. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `SHA-256(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

/// One issued credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credential {
    /// Its id, as recorded in session events.
    pub id: String,
    /// Who issued it.
    pub issued_by: String,
    /// When it stops working (Unix nanoseconds).
    pub expires_at: Nanos,
    /// Why it was revoked, if it was.
    pub revoked: Option<String>,
    /// The SCRAM verifier (not part of state reports).
    #[serde(skip)]
    pub verifier: ScramVerifier,
}

impl Credential {
    /// Whether it can be used to log in at `now`.
    pub fn usable_at(&self, now: Nanos) -> bool {
        self.revoked.is_none() && now < self.expires_at
    }
}

/// One agent identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Its name (the PostgreSQL user name clients log in with).
    pub name: String,
    /// Who created it.
    pub created_by: String,
    /// Free text.
    pub description: Option<String>,
    /// Credentials by id, including expired and revoked ones.
    pub credentials: BTreeMap<String, Credential>,
    /// Why it was disabled (retired), if it was: it cannot log in and no
    /// credential can be issued to it. Final.
    pub disabled: Option<String>,
}

/// Every identity, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Identities {
    by_name: BTreeMap<String, Identity>,
}

impl Identities {
    /// Folds one event in. Events that do not concern identities are ignored;
    /// events about unknown identities or credentials change nothing (the
    /// commands that write them refuse such events in the first place).
    pub fn apply(&mut self, body: &EventBody) {
        match body {
            EventBody::IdentityCreated(e) => {
                self.by_name
                    .entry(e.identity.clone())
                    .or_insert_with(|| Identity {
                        name: e.identity.clone(),
                        created_by: e.operator.clone(),
                        description: e.description.clone(),
                        credentials: BTreeMap::new(),
                        disabled: None,
                    });
            }
            EventBody::IdentityDisabled(e) => {
                if let Some(identity) = self.by_name.get_mut(&e.identity) {
                    identity.disabled.get_or_insert_with(|| e.reason.clone());
                }
            }
            EventBody::CredentialIssued(e) => {
                if let Some(identity) = self.by_name.get_mut(&e.identity) {
                    identity.credentials.insert(
                        e.credential.clone(),
                        Credential {
                            id: e.credential.clone(),
                            issued_by: e.operator.clone(),
                            expires_at: e.expires_at,
                            revoked: None,
                            verifier: ScramVerifier {
                                salt: e.salt.0.clone(),
                                iterations: e.iterations,
                                stored_key: e.stored_key.0.clone(),
                                server_key: e.server_key.0.clone(),
                            },
                        },
                    );
                }
            }
            EventBody::CredentialRevoked(e) => {
                if let Some(c) = self
                    .by_name
                    .get_mut(&e.identity)
                    .and_then(|i| i.credentials.get_mut(&e.credential))
                {
                    c.revoked.get_or_insert_with(|| e.reason.clone());
                }
            }
            _ => {}
        }
    }

    /// An identity by name.
    pub fn get(&self, name: &str) -> Option<&Identity> {
        self.by_name.get(name)
    }

    /// Every identity, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        self.by_name.values()
    }

    /// Credentials of `name` that can log in at `now`.
    pub fn usable_credentials(&self, name: &str, now: Nanos) -> Vec<&Credential> {
        self.get(name)
            .map(|i| {
                i.credentials
                    .values()
                    .filter(|c| c.usable_at(now))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The salt and iteration count new credentials of `name` must use: all
    /// credentials of an identity share them, so a SCRAM exchange (which
    /// announces one salt before the client proves anything) can check the
    /// proof against each of the identity's credentials.
    pub fn scram_parameters(&self, name: &str) -> Option<(Vec<u8>, u32)> {
        self.get(name)?
            .credentials
            .values()
            .next()
            .map(|c| (c.verifier.salt.clone(), c.verifier.iterations))
    }
}

// Snapshot encodings (crate::snapshot): every field, the verifier included.

impl Cbor for ScramVerifier {
    fn encode(&self, enc: &mut Enc) {
        enc.map(4);
        enc.uint(0);
        enc.bytes(&self.salt);
        enc.uint(1);
        self.iterations.encode(enc);
        enc.uint(2);
        enc.bytes(&self.stored_key);
        enc.uint(3);
        enc.bytes(&self.server_key);
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
        let offset = dec.offset();
        if dec.map()? != 4 {
            return Err(DecodeError::Unexpected {
                offset,
                expected: "the field count of ScramVerifier",
            });
        }
        dec.key(0)?;
        let salt = dec.bytes()?.to_vec();
        dec.key(1)?;
        let iterations = u32::decode(dec)?;
        dec.key(2)?;
        let stored_key = dec.bytes()?.to_vec();
        dec.key(3)?;
        let server_key = dec.bytes()?.to_vec();
        Ok(ScramVerifier {
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }
}

cbor_record!(Credential {
    0 => id,
    1 => issued_by,
    2 => expires_at,
    3 => revoked,
    4 => verifier,
});

cbor_record!(Identity {
    0 => name,
    1 => created_by,
    2 => description,
    3 => credentials,
    4 => disabled,
});

cbor_record!(Identities { 0 => by_name, });

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_ledger::cbor::Bytes;
    use gatehouse_ledger::event::{CredentialIssued, CredentialRevoked, IdentityCreated};

    fn issued(id: &str, identity: &str, expires_at: Nanos) -> EventBody {
        CredentialIssued {
            credential: id.into(),
            identity: identity.into(),
            operator: "alice".into(),
            expires_at,
            salt: Bytes(vec![1; 16]),
            iterations: 4096,
            stored_key: Bytes(vec![2; 32]),
            server_key: Bytes(vec![3; 32]),
        }
        .into()
    }

    #[test]
    fn credentials_follow_issue_expiry_and_revocation() {
        let mut ids = Identities::default();
        ids.apply(&issued("c0", "ghost", 100));
        assert!(
            ids.get("ghost").is_none(),
            "no credential for an identity that does not exist"
        );
        ids.apply(
            &IdentityCreated {
                identity: "agent".into(),
                operator: "alice".into(),
                description: None,
            }
            .into(),
        );
        ids.apply(&issued("c1", "agent", 100));
        ids.apply(&issued("c2", "agent", 200));
        assert_eq!(ids.usable_credentials("agent", 50).len(), 2);
        assert_eq!(ids.usable_credentials("agent", 150).len(), 1, "c1 expired");
        ids.apply(
            &CredentialRevoked {
                credential: "c2".into(),
                identity: "agent".into(),
                operator: "bob".into(),
                reason: "leaked".into(),
            }
            .into(),
        );
        assert!(ids.usable_credentials("agent", 150).is_empty());
        assert_eq!(
            ids.get("agent").unwrap().credentials["c2"]
                .revoked
                .as_deref(),
            Some("leaked")
        );
        assert_eq!(ids.scram_parameters("agent"), Some((vec![1; 16], 4096)));
    }
}
