//! Accepting clients: TLS negotiation, cancel requests, startup and SCRAM
//! authentication against gateway-issued credentials, then the upstream
//! login and the hand-over to the relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use gatehouse_ledger::event::{AuthenticationFailed, SessionOpened};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::gateway::control::scram::{self, Exchange};
use crate::gateway::control::shared::{
    CancelTarget, Refusals, SessionControl, Shared, Termination,
};
use crate::gateway::relay::session::{self, SessionInfo};
use crate::gateway::relay::upstream;
use crate::gateway::wire::frame::{self, read_frame, read_startup, FrameError};
use crate::gateway::wire::refusal::Refusal;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3_0: i32 = 196608;

/// Startup parameters a client may pass on to the upstream session. Others
/// (`options`, `search_path`, `role`, read-only overrides, ...) could change
/// what policy judged, so they are dropped.
/// `client_encoding` is not among them: every upstream session runs in
/// UTF8 (see [`utf8_encoding`]).
const FORWARDED_PARAMETERS: &[&str] = &[
    "DateStyle",
    "TimeZone",
    "extra_float_digits",
    "IntervalStyle",
];

pub use crate::gateway::wire::{utf8_encoding, Stream};

/// Unix time in nanoseconds.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Accepts clients forever.
/// Accepts clients until `stop` resolves; then ends every session (each
/// records its end) and waits for them, at most `grace`.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    let mut refusals = AcceptFailures::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(accepted) => {
                        refusals.succeeded();
                        accepted
                    }
                    Err(e) => {
                        Refusals::count(&shared.refusals.accept_failures);
                        // Out of file descriptors, memory or buffers, or a
                        // connection reset before it was accepted: never a
                        // reason to stop serving the sessions that run.
                        let pause = refusals.failed(&e);
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = &mut stop => break,
                        }
                        continue;
                    }
                };
                socket.set_nodelay(true).ok();
                let shared = shared.clone();
                let tls = tls.clone();
                let Ok(slot) = shared.connection_slots.clone().try_acquire_owned() else {
                    let limit = shared.max_connections;
                    Refusals::count(&shared.refusals.max_connections);
                    sessions.spawn(async move {
                        warn!(%peer, limit, "connection refused: [listen] max_connections reached");
                        let mut socket = socket;
                        let _ = fatal(
                            &mut socket,
                            "53300",
                            &format!("too many connections: Gatehouse accepts at most {limit} at once ([listen] max_connections); try again later"),
                        )
                        .await;
                        // Closing with unread input would reset the
                        // connection and could destroy the answer: read
                        // what the client sends, briefly, first.
                        let _ = socket.shutdown().await;
                        let mut sink = [0u8; 4096];
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut socket, &mut sink).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        })
                        .await;
                    });
                    continue;
                };
                sessions.spawn(async move {
                    let _slot = slot;
                    let Some(logged_in) = shared.pending_logins.admit(peer.ip()) else {
                        let cap = shared.pending_logins.per_address();
                        Refusals::count(&shared.refusals.pending_logins_per_address);
                        warn!(%peer, cap, "connection refused: too many connections from this address are logging in");
                        let mut socket = socket;
                        let _ = fatal(
                            &mut socket,
                            "53300",
                            &format!("too many connections from {} that have not logged in: Gatehouse accepts at most {cap} per address ([listen] max_pending_logins_per_address); try again later", peer.ip()),
                        )
                        .await;
                        let _ = socket.shutdown().await;
                        return;
                    };
                    // Until it logs in, a connection has login_timeout; a
                    // session, once open, has no such limit.
                    let limit = shared.login_timeout;
                    let timeouts = shared.clone();
                    let work = handle(socket, peer, shared, tls, logged_in.clone());
                    tokio::pin!(work);
                    let ended = tokio::select! {
                        r = &mut work => r,
                        () = tokio::time::sleep(limit) => {
                            if logged_in.is_logged_in() {
                                work.await
                            } else {
                                Refusals::count(&timeouts.refusals.login_timeout);
                                Err(anyhow::anyhow!("no login within {limit:?}; connection closed"))
                            }
                        }
                    };
                    if let Err(e) = ended {
                        info!(%peer, "connection ended: {e}");
                    }
                });
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            () = &mut stop => break,
        }
    }
    info!(sessions = sessions.len(), "stopping: ending sessions");
    shared.shutdown.send_replace(true);
    let drained = tokio::time::timeout(grace, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("some sessions did not end within {grace:?}; stopping anyway");
        sessions.abort_all();
    }
    Ok(())
}

async fn fatal<S: AsyncWrite + Unpin>(s: &mut S, code: &str, text: &str) -> std::io::Result<()> {
    s.write_all(&frame::error("FATAL", code, text)).await?;
    s.flush().await
}

async fn handle(
    mut socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    logged_in: Arc<crate::gateway::control::pending_logins::PendingLogin>,
) -> anyhow::Result<()> {
    // Negotiation: SSLRequest / GSSENCRequest may precede the startup packet.
    loop {
        let Some(body) = startup_packet(&mut socket).await? else {
            return Ok(());
        };
        let code = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
        match code {
            SSL_REQUEST => match &tls {
                Some(acceptor) => {
                    socket.write_all(b"S").await?;
                    let stream = acceptor.accept(socket).await?;
                    return startup(stream, peer, shared, true, logged_in).await;
                }
                None => socket.write_all(b"N").await?,
            },
            GSSENC_REQUEST => socket.write_all(b"N").await?,
            CANCEL_REQUEST => return cancel(&body, &shared).await,
            _ => return startup_with(socket, body, peer, shared, false, logged_in).await,
        }
    }
}

async fn startup<S: Stream>(
    mut stream: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: bool,
    logged_in: Arc<crate::gateway::control::pending_logins::PendingLogin>,
) -> anyhow::Result<()> {
    let Some(body) = startup_packet(&mut stream).await? else {
        return Ok(());
    };
    let code = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    if code == CANCEL_REQUEST {
        return cancel(&body, &shared).await;
    }
    startup_with(stream, body, peer, shared, tls, logged_in).await
}

/// Reads a startup-phase packet; `None` if the client just went away. A
/// malformed packet is answered with a FATAL error.
async fn startup_packet<S: Stream>(stream: &mut S) -> anyhow::Result<Option<bytes::Bytes>> {
    match read_startup(stream, 10_000).await {
        Ok(b) => Ok(Some(b)),
        Err(FrameError::Closed) => Ok(None),
        Err(e) => {
            fatal(stream, "08P01", &format!("invalid startup packet: {e}"))
                .await
                .ok();
            Err(e.into())
        }
    }
}

/// Consecutive accept failures: how long to pause before the next accept
/// (doubling from 10 ms to 1 s), and a log line at most once a second.
#[derive(Default)]
struct AcceptFailures {
    consecutive: u32,
    unlogged: u64,
    last_log: Option<std::time::Instant>,
}

impl AcceptFailures {
    fn succeeded(&mut self) {
        if self.consecutive > 0 {
            info!("accepting connections again");
        }
        self.consecutive = 0;
    }

    fn failed(&mut self, e: &std::io::Error) -> Duration {
        self.consecutive = self.consecutive.saturating_add(1);
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            warn!(
                failures = self.unlogged,
                "cannot accept a connection: {e}; sessions already open go on, and accepting resumes after a pause"
            );
            self.unlogged = 0;
            self.last_log = Some(std::time::Instant::now());
        }
        let exponent = self.consecutive.min(7);
        Duration::from_millis(10u64 << exponent).min(Duration::from_secs(1))
    }
}

async fn cancel(body: &[u8], shared: &Shared) -> anyhow::Result<()> {
    if body.len() != 12 {
        return Ok(());
    }
    let key = (
        i32::from_be_bytes(body[4..8].try_into().expect("4 bytes")),
        i32::from_be_bytes(body[8..12].try_into().expect("4 bytes")),
    );
    let target = shared
        .cancel_keys
        .lock()
        .expect("cancel lock")
        .get(&key)
        .cloned();
    match target {
        Some(CancelTarget { target, key, held }) => {
            // A held statement is not running upstream: the cancel is for it.
            if held.holding.load(std::sync::atomic::Ordering::SeqCst) {
                held.cancelled.notify_waiters();
            } else {
                upstream::cancel(&target, key).await?
            }
        }
        None => warn!("cancel request with an unknown key ignored"),
    }
    Ok(())
}

fn parse_parameters(body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = &body[4..];
    while let Some(k) = frame::get_cstr(&mut rest) {
        if k.is_empty() {
            break;
        }
        match frame::get_cstr(&mut rest) {
            Some(v) => out.push((k, v)),
            None => break,
        }
    }
    out
}

async fn startup_with<S: Stream>(
    mut stream: S,
    body: bytes::Bytes,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: bool,
    logged_in: Arc<crate::gateway::control::pending_logins::PendingLogin>,
) -> anyhow::Result<()> {
    let code = i32::from_be_bytes(body[..4].try_into().expect("length checked"));
    if code >> 16 != 3 {
        fatal(
            &mut stream,
            "0A000",
            &format!(
                "unsupported frontend protocol {}.{}: Gatehouse speaks 3.0",
                code >> 16,
                code & 0xffff
            ),
        )
        .await
        .ok();
        return Ok(());
    }
    let params = parse_parameters(&body);
    if code != PROTOCOL_3_0 {
        // Ask for 3.0 (NegotiateProtocolVersion), listing no unsupported options.
        let mut b = BytesMut::new();
        b.put_i32(PROTOCOL_3_0);
        b.put_i32(0);
        stream.write_all(&frame::message(b'v', &b)).await?;
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(identity) = get("user").filter(|u| !u.is_empty()) else {
        fatal(
            &mut stream,
            "28000",
            "no user name in the startup packet: connect as a Gatehouse identity",
        )
        .await
        .ok();
        return Ok(());
    };
    let target_name = get("database").unwrap_or_else(|| identity.clone());
    let application_name = get("application_name");
    let client_addr = peer.to_string();
    if let Some(encoding) = get("client_encoding").filter(|e| !utf8_encoding(e)) {
        warn!(%peer, identity, encoding, "refused a session in another client encoding than UTF8");
        fatal(
            &mut stream,
            "22023",
            &format!(
                "Gatehouse serves only client_encoding UTF8 (this client asked for \"{encoding}\"): it judges SQL as UTF-8 text, and in another encoding the database would read other SQL; connect with client_encoding=UTF8 (PGCLIENTENCODING=UTF8)"
            ),
        )
        .await
        .ok();
        return Ok(());
    }

    let credential = match authenticate(&mut stream, &shared, &identity).await {
        Ok(c) => {
            // Logged in: the login timeout no longer applies (what follows
            // is recorded and must not be cut short).
            logged_in.logged_in();
            c
        }
        Err(reason) => {
            let event = AuthenticationFailed {
                identity: identity.clone(),
                client_addr: client_addr.clone(),
                target: Some(target_name.clone()),
                reason: reason.clone(),
            };
            if let Err(e) = shared.ledger.append(&event.into()).await {
                warn!("cannot record a failed login: {e}");
            }
            shared.metrics.login_failed("authentication");
            warn!(%peer, identity, "authentication failed: {reason}");
            fatal(
                &mut stream,
                "28P01",
                &format!("password authentication failed for user \"{identity}\""),
            )
            .await
            .ok();
            return Ok(());
        }
    };

    if let Some(reason) = shared.disabled(&identity) {
        let event = AuthenticationFailed {
            identity: identity.clone(),
            client_addr: client_addr.clone(),
            target: Some(target_name.clone()),
            reason: format!("identity is disabled: {reason}"),
        };
        if let Err(e) = shared.ledger.append(&event.into()).await {
            warn!("cannot record a refused login: {e}");
        }
        shared.metrics.login_failed("disabled");
        warn!(%peer, identity, "login refused: the identity is disabled");
        let error = frame::refusal(
            "FATAL",
            "28000",
            Refusal::IdentityDisabled,
            &format!("identity \"{identity}\" is disabled in Gatehouse: {reason}"),
        );
        let _ = stream.write_all(&error).await;
        let _ = stream.flush().await;
        return Ok(());
    }

    if let Some(reason) = shared.blocked(&identity) {
        let event = AuthenticationFailed {
            identity: identity.clone(),
            client_addr: client_addr.clone(),
            target: Some(target_name.clone()),
            reason: format!("identity is blocked: {reason}"),
        };
        if let Err(e) = shared.ledger.append(&event.into()).await {
            warn!("cannot record a refused login: {e}");
        }
        shared.metrics.login_failed("blocked");
        warn!(%peer, identity, "login refused: the identity is blocked");
        let error = frame::refusal(
            "FATAL",
            "28000",
            Refusal::IdentityBlocked,
            &format!("identity \"{identity}\" is blocked by Gatehouse: {reason}"),
        );
        let _ = stream.write_all(&error).await;
        let _ = stream.flush().await;
        return Ok(());
    }

    let Some(target) = shared.targets.get(&target_name).cloned() else {
        fatal(
            &mut stream,
            "3D000",
            &format!("database \"{target_name}\" is not a Gatehouse target"),
        )
        .await
        .ok();
        return Ok(());
    };
    let read_only = shared.policy().read_only(&identity, &target.name);
    if read_only && target.read_only.is_none() && !target.accept_read_only_without_role {
        fatal(
            &mut stream,
            "28000",
            &format!(
                "policy keeps identity \"{identity}\" read-only, and target \"{}\" has no \
                 read_only_user, a database role without write privileges to run it as; an \
                 operator must configure one (or accept the weaker \
                 default_transaction_read_only with accept_read_only_without_role = true)",
                target.name
            ),
        )
        .await
        .ok();
        return Ok(());
    }
    // Held for the session's life: one database connection each.
    let _session_slot = match shared.session_slots.get(&target.name) {
        None => None,
        Some(slots) => match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => {
                let limit = target.max_sessions.unwrap_or_default();
                Refusals::count(&shared.refusals.max_sessions);
                warn!(
                    target = target.name,
                    limit, "login refused: the target's max_sessions reached"
                );
                fatal(
                    &mut stream,
                    "53300",
                    &format!(
                        "too many sessions on database \"{}\": Gatehouse opens at most {limit} at once \
                         (the target's max_sessions); try again later",
                        target.name
                    ),
                )
                .await
                .ok();
                return Ok(());
            }
        },
    };
    let mut upstream = match upstream::connect(&target, read_only, upstream::Purpose::Session).await
    {
        Ok(u) => u,
        Err(upstream::UpstreamError::Full(reason)) => {
            Refusals::count(&shared.refusals.database_full);
            shared.metrics.upstream_error(&target.name);
            warn!(
                target = target.name,
                "upstream login refused, no connection slots: {reason}"
            );
            fatal(
                &mut stream,
                "53300",
                &format!(
                    "database \"{}\" has no connection slots left ({reason}); try again later, or ask \
                     the operator to set the target's max_sessions below the database's max_connections",
                    target.name
                ),
            )
            .await
            .ok();
            return Ok(());
        }
        Err(e) => {
            shared.metrics.upstream_error(&target.name);
            warn!(target = target.name, "upstream login failed: {e}");
            fatal(
                &mut stream,
                "08006",
                &format!(
                    "Gatehouse cannot reach database \"{}\" right now: {}; try again later, or tell the operator if it persists",
                    target.name,
                    e.class()
                ),
            )
            .await
            .ok();
            return Ok(());
        }
    };
    let forwarded: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| FORWARDED_PARAMETERS.contains(&k.as_str()))
        .cloned()
        .collect();
    if !forwarded.is_empty() {
        let sets: String = forwarded
            .iter()
            .map(|(k, v)| format!("SET {} TO '{}';", k, v.replace('\'', "''")))
            .collect();
        session::run_internal(upstream.stream.as_mut(), &sets).await?;
    }

    let session = shared.next_session();
    let opened = SessionOpened {
        session,
        identity: identity.clone(),
        target: target.name.clone(),
        client_addr: client_addr.clone(),
        application_name: application_name.clone(),
        credential: Some(credential.clone()),
        tls,
    };
    if let Err(e) = shared.ledger.append(&opened.into()).await {
        fatal(
            &mut stream,
            "58030",
            &format!("Gatehouse cannot record this session, so it refuses it: {e}"),
        )
        .await
        .ok();
        return Ok(());
    }
    info!(
        session,
        identity,
        target = target.name,
        read_only,
        "session opened"
    );
    shared.metrics.session_opened(&identity, &target.name);

    let client_key: (i32, i32) = (
        i32::from_be_bytes(scram::random_bytes()),
        i32::from_be_bytes(scram::random_bytes()),
    );
    let held = Arc::new(crate::gateway::control::shared::HeldStatement::default());
    shared.cancel_keys.lock().expect("cancel lock").insert(
        client_key,
        CancelTarget {
            target: target.clone(),
            key: upstream.cancel_key,
            held: held.clone(),
        },
    );
    let mut hello = BytesMut::new();
    for p in &upstream.parameters {
        hello.put_slice(&p.bytes);
    }
    let mut key = BytesMut::new();
    key.put_i32(client_key.0);
    key.put_i32(client_key.1);
    hello.put_slice(&frame::message(b'K', &key));
    hello.put_slice(&frame::ready(b'I'));
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let (kill, killed) = tokio::sync::watch::channel(None);
    let activity = Arc::new(session::Activity::default());
    shared.sessions.lock().expect("sessions lock").insert(
        session,
        SessionControl {
            identity: identity.clone(),
            credential: credential.clone(),
            target: target.name.clone(),
            client_addr: client_addr.clone(),
            application_name: application_name.clone(),
            started: now_ns(),
            upstream: CancelTarget {
                target: target.clone(),
                key: upstream.cancel_key,
                held: held.clone(),
            },
            kill,
            activity: activity.clone(),
        },
    );
    // A block recorded between the check above and the registration must
    // still end this session.
    if let Some(reason) = shared.blocked(&identity) {
        if let Some(c) = shared.sessions.lock().expect("sessions lock").get(&session) {
            c.kill.send_replace(Some(Termination {
                operator: None,
                reason: format!("identity {identity} was blocked: {reason}"),
            }));
        }
    }
    // The session lives no longer than the credential it logged in with.
    let expiry = shared
        .credential_expiry(&identity, &credential)
        .filter(|at| *at != u64::MAX)
        .map(|at| {
            tokio::spawn(end_at_expiry(
                shared.clone(),
                session,
                credential.clone(),
                at,
            ))
        });
    let info = SessionInfo {
        id: session,
        identity,
        target,
        held,
        activity,
    };
    let result = session::relay(stream, upstream.stream, info, shared.clone(), killed).await;
    if let Some(expiry) = expiry {
        expiry.abort();
    }
    shared
        .sessions
        .lock()
        .expect("sessions lock")
        .remove(&session);
    shared
        .cancel_keys
        .lock()
        .expect("cancel lock")
        .remove(&client_key);
    result
}

/// Ends `session` when `credential` expires, at `expires_at` (ns since the
/// epoch): its in-flight statement is cancelled, the client gets FATAL
/// 57P01 saying why, and the end is recorded like any termination.
async fn end_at_expiry(shared: Arc<Shared>, session: u64, credential: String, expires_at: u64) {
    // Long sleeps are cut into days (a timer cannot span years).
    loop {
        let now = now_ns();
        if now >= expires_at {
            break;
        }
        let wait = Duration::from_nanos(expires_at - now).min(Duration::from_secs(86_400));
        tokio::time::sleep(wait).await;
    }
    shared.end_session(
        session,
        Termination {
            operator: None,
            reason: format!(
                "credential {credential} expired at {}; log in with a new credential",
                gatehouse_verify::report::rfc3339(expires_at)
            ),
        },
    );
}

/// Runs SCRAM-SHA-256 with the client; returns the credential id it proved.
async fn authenticate<S: Stream>(
    stream: &mut S,
    shared: &Shared,
    identity: &str,
) -> Result<String, String> {
    let now = now_ns();
    let (salt, iterations, candidates) = {
        let ids = shared.identities.read().expect("identities lock");
        let creds: Vec<_> = ids
            .usable_credentials(identity, now)
            .into_iter()
            .cloned()
            .collect();
        match ids.scram_parameters(identity) {
            Some((salt, iterations)) => (salt, iterations, creds),
            None => {
                let fake = blake3::keyed_hash(&shared.salt_secret, identity.as_bytes());
                (
                    fake.as_bytes()[..16].to_vec(),
                    scram::ITERATIONS,
                    Vec::new(),
                )
            }
        }
    };
    let mut mechanisms = scram::MECHANISM.as_bytes().to_vec();
    mechanisms.extend_from_slice(&[0, 0]);
    send_auth(stream, 10, &mechanisms).await?;
    let first = read_password_message(stream, "SASLInitialResponse").await?;
    let mut body = first.body();
    let mechanism = frame::get_cstr(&mut body).ok_or("malformed SASLInitialResponse")?;
    if mechanism != scram::MECHANISM {
        return Err(format!("unsupported SASL mechanism {mechanism:?}"));
    }
    if body.len() < 4 {
        return Err("malformed SASLInitialResponse".into());
    }
    let (exchange, server_first) =
        Exchange::start(&body[4..], &salt, iterations).map_err(|e| e.to_string())?;
    send_auth(stream, 11, server_first.as_bytes()).await?;
    let last = read_password_message(stream, "SASLResponse").await?;
    let refs: Vec<_> = candidates.iter().collect();
    let (i, server_final) = exchange.finish(last.body(), &refs).map_err(|e| match e {
        scram::ScramError::BadProof if candidates.is_empty() => {
            "no usable credential (unknown identity, or all credentials expired or revoked)"
                .to_owned()
        }
        other => other.to_string(),
    })?;
    send_auth(stream, 12, server_final.as_bytes()).await?;
    send_auth(stream, 0, &[]).await?;
    Ok(candidates[i].id.clone())
}

/// Sends an Authentication message (`R`) with its code and data.
async fn send_auth<S: Stream>(stream: &mut S, code: i32, data: &[u8]) -> Result<(), String> {
    let mut b = BytesMut::with_capacity(4 + data.len());
    b.put_i32(code);
    b.put_slice(data);
    stream
        .write_all(&frame::message(b'R', &b))
        .await
        .map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Reads the client's next password-family message (`p`).
async fn read_password_message<S: Stream>(
    stream: &mut S,
    what: &str,
) -> Result<frame::Frame, String> {
    let f = read_frame(stream, 10_000)
        .await
        .map_err(|e| format!("no {what}: {e}"))?;
    if f.tag() != b'p' {
        return Err(format!("expected a {what}"));
    }
    Ok(f)
}

/// Loads a rustls acceptor from PEM files.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<TlsAcceptor> {
    use anyhow::Context;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("TLS certificate {} is not PEM", cert.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot read TLS key {}", key.display()))?,
    ))?
    .with_context(|| format!("no private key in {}", key.display()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
