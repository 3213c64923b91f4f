//! The gateway's own connection to the real database.
//!
//! The gateway logs in upstream with the target's credential (never shown to
//! clients), optionally read-only, and hands back the server's parameter
//! statuses and cancel key so the session can relay them.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Target;
use crate::gateway::wire::frame::{self, read_frame, Frame};
use crate::gateway::wire::Stream;

/// Why the upstream connection could not be set up.
#[derive(Debug, Error)]
pub enum UpstreamError {
    /// TCP connect or I/O failed.
    #[error("cannot reach upstream {addr}: {source}")]
    Connect {
        /// host:port.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The login could not be completed (authentication method, SCRAM).
    #[error("upstream refused the connection: {0}")]
    Refused(String),
    /// The server answered the startup with an error.
    #[error("upstream refused the login ({code}): {message}")]
    Rejected {
        /// Its SQLSTATE.
        code: String,
        /// Its message.
        message: String,
    },
    /// TLS to the server failed (not offered, bad name, handshake).
    #[error("TLS to upstream failed: {0}")]
    Tls(String),
    /// The server has no connection slot left (SQLSTATE 53300).
    #[error("upstream has no connection slots left: {0}")]
    Full(String),
    /// The server spoke something unexpected.
    #[error("upstream protocol error: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// What kind of failure it is, in words a client and an operator can
    /// act on (never the database's own message, which a client of the
    /// gateway must not see).
    pub fn class(&self) -> &'static str {
        match self {
            UpstreamError::Connect { .. } => {
                "the database does not accept connections at its address (down, or unreachable)"
            }
            UpstreamError::Tls(_) => "TLS to the database failed",
            UpstreamError::Rejected { code, .. } if code.starts_with("28") => {
                "the database refused the gateway's credentials for it"
            }
            UpstreamError::Refused(_) => "the database refused the gateway's login",
            UpstreamError::Rejected { code, .. } if code == "3D000" => {
                "the database does not exist on that server"
            }
            UpstreamError::Rejected { code, .. } if code.starts_with("57P0") => {
                "the database is starting up or shutting down"
            }
            UpstreamError::Rejected { .. } => "the database refused the connection",
            UpstreamError::Full(_) => "the database has no connection slots left",
            UpstreamError::Protocol(_) => "the database answered in an unexpected way",
        }
    }
}

/// An authenticated upstream connection, ready for queries.
pub struct Upstream {
    /// The connection: TCP, or TLS over TCP.
    pub stream: Box<dyn Stream>,
    /// ParameterStatus frames the server sent during startup.
    pub parameters: Vec<Frame>,
    /// The server's (pid, secret) cancel key.
    pub cancel_key: (i32, i32),
}

/// What an upstream connection is for: named in its `application_name`, so
/// that the database's logs and `pg_stat_activity` tell a client's session
/// from the gateway's own catalog reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A client's session: `gatehouse`.
    Session,
    /// The gateway's own catalog lookup: `gatehouse catalog`.
    Catalog,
}

impl Purpose {
    fn application_name(self) -> &'static str {
        match self {
            Purpose::Session => "gatehouse",
            Purpose::Catalog => "gatehouse catalog",
        }
    }
}

fn startup_message(
    target: &Target,
    user: &str,
    options: Option<&str>,
    purpose: Purpose,
) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_i32(196608);
    // The settings the gateway reads SQL text and resolves names with, and
    // the session limits, as startup parameters: they override database and
    // role defaults, and RESET and DISCARD ALL come back to them.
    let limits = [
        target.statement_timeout.as_millis().to_string(),
        target.idle_in_transaction_timeout.as_millis().to_string(),
    ];
    let settings = gatehouse_engine::classify::SQL_TEXT_SETTINGS
        .iter()
        .copied()
        .chain([("search_path", gatehouse_engine::classify::SEARCH_PATH)])
        .chain(
            gatehouse_engine::classify::SESSION_LIMIT_SETTINGS
                .iter()
                .copied()
                .zip(limits.iter().map(String::as_str)),
        );
    let database = target.database.as_str();
    for (k, v) in [
        ("user", user),
        ("database", database),
        ("application_name", purpose.application_name()),
    ]
    .into_iter()
    .chain(settings)
    {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    if let Some(o) = options {
        body.put_slice(b"options\0");
        body.put_slice(o.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 4);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(&body);
    out
}

/// Logs, once per process and target, a server newer than the parser the
/// gateway reads SQL with: its new syntax is denied as unreadable.
fn warn_if_newer_than_the_parser(target: &Target, body: &[u8]) {
    static WARNED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut parts = body.split(|b| *b == 0);
    if parts.next() != Some(b"server_version".as_slice()) {
        return;
    }
    let version = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let parser = gatehouse_engine::classify::PARSER_MAJOR_VERSION;
    if major_version(&version).is_some_and(|m| m > parser) {
        let mut warned = WARNED.lock().expect("warned lock");
        if !warned.contains(&target.name) {
            warned.push(target.name.clone());
            tracing::warn!(
                target = target.name,
                server_version = %version,
                "the database is newer than PostgreSQL {parser}, whose parser Gatehouse reads SQL with: statements using newer syntax are denied as unreadable"
            );
        }
    }
}

/// The major version of a `server_version` such as `15.18 (Debian ...)`.
fn major_version(server_version: &str) -> Option<u32> {
    server_version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
}

/// `name value` of a ParameterStatus body reporting one of the
/// [`gatehouse_engine::classify::SQL_TEXT_SETTINGS`] at another value than
/// the gateway reads SQL with, if it is one.
pub(super) fn foreign_sql_text_setting(body: &[u8]) -> Option<String> {
    let mut parts = body.split(|b| *b == 0);
    let name = String::from_utf8_lossy(parts.next()?);
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let foreign = if name.eq_ignore_ascii_case("client_encoding") {
        !crate::gateway::wire::utf8_encoding(&value)
    } else if name.eq_ignore_ascii_case("standard_conforming_strings") {
        !value.eq_ignore_ascii_case("on")
    } else {
        false
    };
    foreign.then(|| format!("{name} {value}"))
}

fn refused(f: &Frame) -> UpstreamError {
    let fields = frame::error_fields(f.body());
    let field = |code: u8| {
        fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    };
    if field(b'C') == "53300" {
        UpstreamError::Full(field(b'M'))
    } else {
        UpstreamError::Rejected {
            code: field(b'C'),
            message: field(b'M'),
        }
    }
}

/// Connects and logs in to `target`. `read_only` makes every transaction of
/// the session read-only upstream (defense in depth for identities whose
/// policy allows only reads).
pub async fn connect(
    target: &Target,
    read_only: bool,
    purpose: Purpose,
) -> Result<Upstream, UpstreamError> {
    let addr = format!("{}:{}", target.host, target.port);
    let tcp = TcpStream::connect(&addr)
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    tcp.set_nodelay(true).ok();
    let mut stream = secure(tcp, target, &addr).await?;
    let (user, password) = if read_only {
        target
            .read_only_login()
            .unwrap_or((&target.user, target.password.as_deref()))
    } else {
        (&target.user, target.password.as_deref())
    };
    let options = read_only.then_some("-c default_transaction_read_only=on");
    stream
        .write_all(&startup_message(target, user, options, purpose))
        .await
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let mut parameters = Vec::new();
    let mut cancel_key = (0, 0);
    let mut scram: Option<ScramSha256> = None;
    let io = |e: frame::FrameError| UpstreamError::Protocol(e.to_string());
    loop {
        let f = read_frame(&mut stream, 1 << 20).await.map_err(io)?;
        match f.tag() {
            b'R' => {
                let body = f.body();
                let code = i32::from_be_bytes(
                    body.get(..4)
                        .ok_or_else(|| UpstreamError::Protocol("short auth".into()))?
                        .try_into()
                        .expect("4 bytes"),
                );
                let need_password = || {
                    password.ok_or_else(|| {
                        UpstreamError::Refused(format!(
                            "upstream {} asks for a password but the target has none configured",
                            target.name
                        ))
                    })
                };
                let reply = match code {
                    0 => None,
                    3 => {
                        let mut b = need_password()?.as_bytes().to_vec();
                        b.push(0);
                        Some(frame::message(b'p', &b))
                    }
                    5 => {
                        let salt: [u8; 4] = body
                            .get(4..8)
                            .and_then(|s| s.try_into().ok())
                            .ok_or_else(|| UpstreamError::Protocol("short MD5 salt".into()))?;
                        let hashed = postgres_protocol::authentication::md5_hash(
                            user.as_bytes(),
                            need_password()?.as_bytes(),
                            salt,
                        );
                        let mut b = hashed.into_bytes();
                        b.push(0);
                        Some(frame::message(b'p', &b))
                    }
                    10 => {
                        let mechanisms = &body[4..];
                        if !mechanisms.windows(14).any(|w| w == b"SCRAM-SHA-256\0") {
                            return Err(UpstreamError::Refused(
                                "upstream offers no SASL mechanism the gateway supports".into(),
                            ));
                        }
                        let client = ScramSha256::new(
                            need_password()?.as_bytes(),
                            ChannelBinding::unsupported(),
                        );
                        let mut b = BytesMut::new();
                        b.put_slice(b"SCRAM-SHA-256\0");
                        b.put_i32(client.message().len() as i32);
                        b.put_slice(client.message());
                        scram = Some(client);
                        Some(frame::message(b'p', &b))
                    }
                    11 => {
                        let client = scram.as_mut().ok_or_else(|| {
                            UpstreamError::Protocol("SASL continue without start".into())
                        })?;
                        client
                            .update(&body[4..])
                            .map_err(|e| UpstreamError::Refused(format!("SCRAM: {e}")))?;
                        Some(frame::message(b'p', client.message()))
                    }
                    12 => {
                        let mut client = scram.take().ok_or_else(|| {
                            UpstreamError::Protocol("SASL final without start".into())
                        })?;
                        client.finish(&body[4..]).map_err(|e| {
                            UpstreamError::Refused(format!(
                                "upstream server signature invalid: {e}"
                            ))
                        })?;
                        None
                    }
                    other => {
                        return Err(UpstreamError::Refused(format!(
                            "unsupported authentication method {other}"
                        )))
                    }
                };
                if let Some(r) = reply {
                    stream
                        .write_all(&r)
                        .await
                        .map_err(|source| UpstreamError::Connect {
                            addr: addr.clone(),
                            source,
                        })?;
                }
            }
            b'S' => {
                // The start-up parameters the gateway sent say otherwise, but a
                // server (or a pooler in front of it) could ignore them.
                if let Some(setting) = foreign_sql_text_setting(f.body()) {
                    return Err(UpstreamError::Refused(format!(
                        "upstream {} runs the session with {setting}, with which it would read other SQL than Gatehouse judges",
                        target.name
                    )));
                }
                warn_if_newer_than_the_parser(target, f.body());
                parameters.push(f)
            }
            b'K' => {
                let b = f.body();
                if b.len() >= 8 {
                    cancel_key = (
                        i32::from_be_bytes(b[0..4].try_into().expect("4 bytes")),
                        i32::from_be_bytes(b[4..8].try_into().expect("4 bytes")),
                    );
                }
            }
            b'Z' => {
                return Ok(Upstream {
                    stream,
                    parameters,
                    cancel_key,
                })
            }
            b'E' => return Err(refused(&f)),
            b'N' => {}
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    other as char
                )))
            }
        }
    }
}

/// Negotiates TLS with the server when the target asks for it: the server
/// must accept (no silent fall-back to plain text) and present a certificate
/// that chains to the target's CA and names its host.
async fn secure(
    mut tcp: TcpStream,
    target: &Target,
    addr: &str,
) -> Result<Box<dyn Stream>, UpstreamError> {
    let Some(config) = &target.tls else {
        return Ok(Box::new(tcp));
    };
    let io = |source| UpstreamError::Connect {
        addr: addr.to_owned(),
        source,
    };
    let mut request = BytesMut::with_capacity(8);
    request.put_i32(8);
    request.put_i32(80877103);
    tcp.write_all(&request).await.map_err(io)?;
    if tcp.read_u8().await.map_err(io)? != b'S' {
        return Err(UpstreamError::Tls(format!(
            "upstream {} does not accept TLS, which target {} requires",
            addr, target.name
        )));
    }
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| UpstreamError::Tls(format!("invalid TLS server name {}: {e}", target.host)))?;
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| UpstreamError::Tls(format!("TLS handshake with {addr} failed: {e}")))?;
    Ok(Box::new(tls))
}

/// Sends a CancelRequest for `key` to the target.
pub async fn cancel(target: &Target, key: (i32, i32)) -> std::io::Result<()> {
    let mut s = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let mut b = BytesMut::with_capacity(16);
    b.put_i32(16);
    b.put_i32(80877102);
    b.put_i32(key.0);
    b.put_i32(key.1);
    s.write_all(&b).await?;
    s.shutdown().await
}

#[cfg(test)]
mod tests {

    #[test]
    fn failures_are_classed_for_clients_and_operators() {
        let rejected = |code: &str| UpstreamError::Rejected {
            code: code.into(),
            message: "password authentication failed for user \"gatehouse\"".into(),
        };
        assert!(rejected("28P01").class().contains("credentials"));
        assert!(rejected("3D000").class().contains("does not exist"));
        assert!(rejected("57P03").class().contains("starting up"));
        assert!(UpstreamError::Tls("handshake".into())
            .class()
            .contains("TLS"));
        // The database's own words never reach a client through the class.
        assert!(!rejected("28P01").class().contains("gatehouse"));
    }

    use super::*;

    #[test]
    fn server_versions_give_their_major() {
        assert_eq!(major_version("15.18 (Debian 15.18-0+deb12u1)"), Some(15));
        assert_eq!(major_version("18beta1"), Some(18));
        assert_eq!(major_version("9.6.24"), Some(9));
        assert_eq!(major_version("unknown"), None);
    }
}
