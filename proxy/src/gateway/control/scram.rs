//! Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it.
//!
//! The gateway holds only verifiers (salt, iterations, StoredKey, ServerKey)
//! from the ledger, never secrets. All credentials of an identity share its
//! salt and iteration count, so one exchange can check the client's proof
//! against each of the identity's usable credentials and learn which one the
//! client holds. Channel binding (`-PLUS`) is not offered.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use gatehouse_engine::identities::{Credential, ScramVerifier};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Iterations for new credentials (PostgreSQL's default).
pub const ITERATIONS: u32 = 4096;

/// The only mechanism offered.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Why an exchange failed. Clients only ever learn "authentication failed".
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message is not valid SCRAM.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client asked for channel binding, which the gateway does not offer.
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The proof matches no usable credential.
    #[error("the proof matches no usable credential")]
    BadProof,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Derives the verifier of `secret` (an ASCII secret, so SASLprep is the identity).
pub fn verifier_for(secret: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(secret.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    ScramVerifier {
        salt: salt.to_vec(),
        iterations,
        stored_key: Sha256::digest(client_key).to_vec(),
        server_key: hmac(&salted, b"Server Key").to_vec(),
    }
}

pub use crate::gateway::wire::random_bytes;

/// An exchange after the server-first message.
#[derive(Debug)]
pub struct Exchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl Exchange {
    /// Reads the client-first message and produces the server-first message.
    pub fn start(
        client_first: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> Result<(Exchange, String), ScramError> {
        let msg =
            std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (gs2_header, bare) = match msg.as_bytes().first() {
            Some(b'n') | Some(b'y') => {
                let mut parts = msg.splitn(3, ',');
                let flag = parts.next().unwrap_or_default();
                let authzid = parts.next().ok_or(ScramError::Malformed("no GS2 header"))?;
                let bare = parts
                    .next()
                    .ok_or(ScramError::Malformed("no client-first-bare"))?;
                if !(flag == "n" || flag == "y") || !authzid.is_empty() {
                    return Err(ScramError::Malformed("unsupported GS2 header"));
                }
                (format!("{flag},,"), bare)
            }
            Some(b'p') => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("no GS2 header")),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("missing or invalid client nonce"))?;
        if bare.split(',').any(|a| a.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes::<18>()));
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        Ok((
            Exchange {
                client_first_bare: bare.to_owned(),
                server_first: server_first.clone(),
                nonce,
                gs2_header,
            },
            server_first,
        ))
    }

    /// Checks the client-final message against `candidates`; returns the
    /// matching credential's index and the server-final message.
    pub fn finish(
        &self,
        client_final: &[u8],
        candidates: &[&Credential],
    ) -> Result<(usize, String), ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("missing channel binding attribute"))?;
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed(
                "channel binding attribute does not match",
            ));
        }
        let nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("missing nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce mismatch"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof is not 32 bytes"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        for (i, c) in candidates.iter().enumerate() {
            let v = &c.verifier;
            let signature = hmac(&v.stored_key, auth_message.as_bytes());
            let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
            let computed = Sha256::digest(&client_key);
            if constant_time_eq(&computed, &v.stored_key) {
                let server_signature = hmac(&v.server_key, auth_message.as_bytes());
                return Ok((i, format!("v={}", B64.encode(server_signature))));
            }
        }
        Err(ScramError::BadProof)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    fn credential(secret: &str, salt: &[u8]) -> Credential {
        Credential {
            id: "c".into(),
            issued_by: "t".into(),
            expires_at: u64::MAX,
            revoked: None,
            verifier: verifier_for(secret, salt, ITERATIONS),
        }
    }

    /// Runs a full exchange against rust-postgres' client implementation.
    fn login(secret: &str, creds: &[&Credential], salt: &[u8]) -> Result<usize, ScramError> {
        let mut client = ScramSha256::new(secret.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(client.message(), salt, ITERATIONS)?;
        client
            .update(server_first.as_bytes())
            .expect("client accepts server-first");
        let (i, server_final) = ex.finish(client.message(), creds)?;
        client
            .finish(server_final.as_bytes())
            .expect("client verifies the server signature");
        Ok(i)
    }

    #[test]
    fn rust_postgres_client_logs_in_with_the_right_secret_only() {
        let salt = random_bytes::<16>();
        let old = credential("old-secret", &salt);
        let new = credential("new-secret", &salt);
        assert_eq!(login("new-secret", &[&old, &new], &salt), Ok(1));
        assert_eq!(login("old-secret", &[&old, &new], &salt), Ok(0));
        assert_eq!(
            login("wrong", &[&old, &new], &salt),
            Err(ScramError::BadProof)
        );
        assert_eq!(login("old-secret", &[], &salt), Err(ScramError::BadProof));
    }

    #[test]
    fn malformed_and_channel_binding_messages_are_refused() {
        let salt = [1u8; 16];
        assert_eq!(
            Exchange::start(b"p=tls-server-end-point,,n=,r=abc", &salt, 4096).unwrap_err(),
            ScramError::ChannelBinding
        );
        for bad in [
            &b""[..],
            b"x",
            b"n,,n=,",
            b"n,a=admin,n=,r=abc",
            b"n,,n=,r=",
            b"\xff",
        ] {
            assert!(Exchange::start(bad, &salt, 4096).is_err(), "{bad:?}");
        }
        let (ex, _) = Exchange::start(b"n,,n=,r=abc", &salt, 4096).unwrap();
        for bad in [
            &b""[..],
            b"c=biws,r=abc,p=AAAA",
            b"c=eSws,r=x,p=AAAA",
            b"r=abc",
        ] {
            assert!(ex.finish(bad, &[]).is_err(), "{bad:?}");
        }
    }
}
