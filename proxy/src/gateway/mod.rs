//! The gateway in the data path: PostgreSQL clients in, judged and recorded
//! statements out to the real database.

//!
//! Three layers a newcomer can read in order: [`wire`] (the protocol as
//! bytes; imports nothing else here), [`relay`] (one session's path to the
//! database: the protocol core, judging, recording, masking) and
//! [`control`] (accepting clients, shared state, approvals, the admin API).

pub mod control;
pub mod relay;
pub mod wire;

pub use control::{
    admin, admin_tls, approvals, archive, metrics, scram, server, shared, snapshots, webhooks,
};

use std::sync::Arc;

use anyhow::{Context as _, Result};
use gatehouse_engine::policy::Policy;
use gatehouse_ledger::event::SessionClosed;
use gatehouse_ledger::{EventBody, Ledger};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::{Config, Target};
use crate::state::load_state_verified;

/// A gateway bound to its port, not yet serving.
pub struct Gateway {
    listener: TcpListener,
    admin: TcpListener,
    admin_tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<shared::Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    snapshots: Option<snapshots::Snapshotter>,
    archiver: Option<archive::Archiver>,
    slack: Option<control::slack::SlackConfig>,
}

impl Gateway {
    /// Rebuilds state from the ledger, opens the ledger writer and binds the
    /// listener.
    pub async fn bind(config: &Config) -> Result<Gateway> {
        config.listen.check_limits()?;
        let slack = config.slack()?;
        let targets = config.resolve_targets()?;
        if targets.is_empty() {
            anyhow::bail!("the config has no [[target]]: add the database clients should reach");
        }
        for target in &targets {
            check_target(target).await;
            check_read_only_login(target).await?;
        }
        let metrics = Arc::new(metrics::Metrics::new());
        let mut writer_options = config.writer_options()?;
        writer_options.on_commit = Some(metrics.commit_observer());
        let mut state =
            load_state_verified(&config.ledger.path, &writer_options.signer.verifier())?;
        // In a cluster, policy, identities, credentials, operators and blocks
        // are the control log's: applied up to its end before any login.
        let control = match config.control_log()? {
            Some(log) => {
                let events = log
                    .follow(0)
                    .and_then(|mut f| f.poll())
                    .context("cannot read the cluster's control log")?;
                let mut control_state = gatehouse_engine::state::GatewayState::default();
                for e in &events {
                    control_state.apply(e);
                }
                state.identities = control_state.identities;
                state.approvals = control_state.approvals;
                state.operators = control_state.operators;
                state.policy = control_state.policy;
                state.blocks = control_state.blocks;
                Some((log, events))
            }
            None => None,
        };
        let policy = match state.policy_source() {
            Some(source) => Policy::parse(source).map_err(|e| {
                anyhow::anyhow!("the policy in force in the ledger does not load ({e}); apply a corrected policy")
            })?,
            None => {
                tracing::warn!("no policy has been applied: every statement will be denied (gatehouse policy apply FILE)");
                Policy::deny_all()
            }
        };
        let ledger = Ledger::open(writer_options).map_err(|e| {
            let next = crate::commands::next_key_path(&config.ledger.signing_key);
            if next.exists() {
                anyhow::anyhow!(
                    "{e}; a key rotation was cut short: {} holds the new key. If the error names it as the current key, move it over {}; otherwise delete it",
                    next.display(),
                    config.ledger.signing_key.display()
                )
            } else {
                e.into()
            }
        })?;
        let tls = match (&config.listen.tls_cert, &config.listen.tls_key) {
            (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
            (None, None) => None,
            _ => anyhow::bail!("[listen] needs both tls_cert and tls_key, or neither"),
        };
        let admin_tls = match (&config.admin.tls_cert, &config.admin.tls_key) {
            (Some(c), Some(k)) => Some(server::tls_acceptor(c, k)?),
            (None, None) => None,
            _ => anyhow::bail!("[admin] needs both tls_cert and tls_key, or neither"),
        };
        let listener = TcpListener::bind(&config.listen.address)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen.address))?;
        let admin = TcpListener::bind(&config.admin.address)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} for the admin API",
                    config.admin.address
                )
            })?;
        let snapshots = snapshots::Snapshotter::start(
            ledger.clone(),
            state.clone(),
            config.ledger.snapshot_every,
        )
        .context("cannot start the snapshot thread")?;
        let archiver = config
            .archive_policy()?
            .map(|policy| archive::Archiver::start(ledger.clone(), policy))
            .transpose()
            .context("cannot start the archiving thread")?;
        info!(
            address = %listener.local_addr()?,
            targets = targets.len(),
            identities = state.identities.iter().count(),
            operators = state.operators.len(),
            tls = tls.is_some(),
            "gatehouse is serving"
        );
        let left_open: Vec<EventBody> = state
            .sessions
            .iter()
            .map(|(session, open)| {
                EventBody::from(SessionClosed {
                    session: *session,
                    identity: open.identity.clone(),
                    reason: format!(
                        "the gateway stopped without closing it (a crash or kill); it ended at or after {}, \
                         the last event before the restart; statements it let through with no response \
                         recorded have an unknown outcome",
                        state
                            .as_of
                            .map(gatehouse_verify::report::rfc3339)
                            .unwrap_or_else(|| "the start of the ledger".into())
                    ),
                    statements: open.statements,
                })
            })
            .collect();
        let mut shared = shared::Shared::new(
            ledger,
            targets,
            state,
            policy,
            shared::Limits {
                max_frame: config.listen.max_frame_bytes,
                record_rows: config.ledger.record_rows,
                record_bytes: config.record_bytes()?,
                login_timeout: config.listen.login_timeout()?,
                max_connections: config.listen.max_connections,
                max_pending_logins_per_address: config.listen.max_pending_logins_per_address,
            },
            config.webhook_targets()?,
            metrics,
        );
        shared.masking.key = config.masking_key()?;
        let mut control_events = Vec::new();
        if let (Some((log, events)), Some(cluster)) = (control, &config.cluster) {
            let position = events.len() as u64;
            if events.iter().any(
                |e| matches!(&e.body, EventBody::GatewayRetired(r) if r.gateway == cluster.gateway),
            ) {
                anyhow::bail!(
                    "gateway {} was retired from the cluster and may not start again; give this gateway a new [cluster] gateway name and a new ledger",
                    cluster.gateway
                );
            }
            control_events = events;
            shared.approvals.join_cluster(&cluster.gateway);
            // Every gateway answers a login for an unknown identity with
            // the same fake salt, or comparing two would tell which
            // identities exist.
            shared.salt_secret = log.derived_secret("gatehouse 2026 cluster fake SCRAM salts");
            shared.control = Some(control::cluster::ControlLink::new(
                cluster.gateway.clone(),
                log,
                position,
                control::cluster::Timing {
                    poll: std::time::Duration::from_millis(cluster.poll_ms),
                    max_staleness: crate::config::parse_duration(&cluster.max_staleness)
                        .context("[cluster] max_staleness")?,
                    strict: cluster.mode == crate::config::ClusterMode::Strict,
                },
            )?);
        }
        let shared = Arc::new(shared);
        if let Some(link) = &shared.control {
            let applied = gatehouse_ledger::event::ControlApplied {
                gateway: link.gateway.clone(),
                through: link.position(),
                applied: link.position(),
                checkpoint: shared
                    .control_checkpoint()
                    .context("cannot read the control log's checkpoint")?,
            };
            shared
                .ledger
                .append(&applied.into())
                .await
                .context("cannot record the control state this gateway starts from")?;
            shared
                .enrol(&control_events)
                .await
                .context("cannot enrol this gateway in the control log")?;
        }
        let refused = shared
            .withdraw_where(
                |_| true,
                "the gateway restarted while the statement was held; it was not run",
            )
            .await?;
        if refused > 0 {
            tracing::warn!(refused, "denied statements left held by the previous run");
        }
        if !left_open.is_empty() {
            shared
                .ledger
                .append_all(&left_open)
                .await
                .context("cannot record the end of the sessions the previous run left open")?;
            tracing::warn!(
                sessions = left_open.len(),
                "recorded the end of sessions the previous run left open"
            );
        }
        info!(address = %admin.local_addr()?, tls = admin_tls.is_some(), "admin API is serving");
        Ok(Gateway {
            listener,
            admin,
            admin_tls,
            shared,
            tls,
            snapshots,
            archiver,
            slack,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.admin.local_addr()
    }

    /// A handle for operator actions on the running gateway (the admin API
    /// and tests use it).
    pub fn shared(&self) -> Arc<shared::Shared> {
        self.shared.clone()
    }

    /// Serves clients until the task is dropped or the listener fails.
    pub async fn run(self) -> Result<()> {
        self.run_until(std::future::pending()).await
    }

    /// Serves clients until `stop` resolves, then ends every session
    /// (recording each end) and waits for the ledger writer to finish.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        let Gateway {
            listener,
            admin,
            admin_tls,
            shared,
            tls,
            snapshots,
            archiver,
            slack,
        } = self;
        let mut stopping = shared.shutdown.subscribe();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let console = Arc::new(control::console::Console::new(
            admin_tls.is_some(),
            gatehouse_ledger::writer::system_clock(),
        ));
        let slack =
            slack.map(|config| control::slack::start(shared.clone(), config, console.chat_links()));
        let follower = control::cluster::follow(shared.clone());
        let router =
            admin::router(shared.clone()).merge(control::console::router(shared.clone(), console));
        let api = match admin_tls {
            None => tokio::spawn(std::future::IntoFuture::into_future(
                axum::serve(admin, router).with_graceful_shutdown(stopped),
            )),
            Some(acceptor) => tokio::spawn(std::future::IntoFuture::into_future(
                axum::serve(admin_tls::TlsListener::new(admin, acceptor)?, router)
                    .with_graceful_shutdown(stopped),
            )),
        };
        server::serve(
            listener,
            shared.clone(),
            tls,
            stop,
            std::time::Duration::from_secs(5),
        )
        .await?;
        let _ = api.await;
        if let Some(slack) = slack {
            let _ = slack.await;
        }
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        if let Some(snapshots) = snapshots {
            tokio::task::spawn_blocking(move || snapshots.stop()).await?;
        }
        if let Some(archiver) = archiver {
            tokio::task::spawn_blocking(move || archiver.stop()).await?;
        }
        // Held statements were denied as their sessions ended: their
        // notifications go out (or are recorded as not sent) while the
        // ledger is still open.
        let desk = shared.clone();
        tokio::task::spawn_blocking(move || desk.approvals.finish_webhooks(WEBHOOK_GRACE)).await?;
        let ledger = shared.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.close()).await?;
        // The ledger's tail is signed now: its final checkpoint is anchored
        // in the cluster's control log.
        let member = shared.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || member.anchor_final()).await? {
            tracing::warn!("cannot anchor the final checkpoint in the control log: {e}");
        }
        drop(shared);
        Ok(())
    }
}

/// How long queued webhook notifications may still be delivered at shutdown.
const WEBHOOK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Runs `gatehouse serve` until SIGINT or SIGTERM.
pub async fn serve(config: &Config) -> Result<()> {
    raise_open_file_limit();
    Gateway::bind(config)
        .await?
        .run_until(stop_signal())
        .await?;
    info!("gatehouse stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard one: every session holds
/// two sockets, and the default soft limit (often 1,024) would refuse
/// connections long before the machine must. Logs both limits.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                "cannot raise the open-file limit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    info!(
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-file limit"
    );
}

/// Refuses to start when a target's read-only login can change anything:
/// read-only identities run as it, and it is what holds them read-only
/// should a statement be misjudged. A target that cannot be reached now is
/// not checked (logged); it is checked at the next start.
/// How long the start-up check of a target may take.
const TARGET_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects and logs in to `target` once at start-up and says how that went:
/// an operator learns at once which target fails and why (unreachable,
/// credentials, TLS, no such database). The gateway serves anyway: the
/// other targets work, and this one's clients are told the reason class.
async fn check_target(target: &Target) {
    let login = relay::upstream::connect(target, false, relay::upstream::Purpose::Catalog);
    match tokio::time::timeout(TARGET_CHECK, login).await {
        Ok(Ok(_)) => tracing::info!(target = target.name, "target reachable, gateway login works"),
        Ok(Err(e)) => tracing::error!(
            target = target.name,
            "target check failed: {}: {e}; serving the other targets, and this one's clients are told so",
            e.class()
        ),
        Err(_) => tracing::error!(
            target = target.name,
            "target check failed: no answer within {} s; serving the other targets",
            TARGET_CHECK.as_secs()
        ),
    }
}

async fn check_read_only_login(target: &Target) -> Result<()> {
    let Some((user, _)) = target.read_only_login() else {
        if target.accept_read_only_without_role {
            tracing::warn!(
                target = target.name,
                "read-only identities on this target rely on default_transaction_read_only alone \
                 (accept_read_only_without_role); configure read_only_user for a role that cannot write"
            );
        }
        return Ok(());
    };
    match relay::catalog::write_privileges(target).await {
        Ok(found) if found.is_empty() => {
            tracing::info!(
                target = target.name,
                user,
                "the read-only login cannot write"
            );
            Ok(())
        }
        Ok(found) => anyhow::bail!(
            "target {}: read_only_user {user} can change data, so it cannot hold read-only \
             identities read-only: {}. Revoke these (for example REVOKE INSERT, UPDATE, DELETE, \
             TRUNCATE ON ALL TABLES IN SCHEMA public FROM {user}) or name another role",
            target.name,
            found.join(", ")
        ),
        Err(e) => {
            tracing::warn!(
                target = target.name,
                "cannot check that read_only_user {user} cannot write: {e}; checked at the next start"
            );
            Ok(())
        }
    }
}
