//! The `gatehouse.toml` configuration file.
//!
//! Relative paths in the file are relative to the file's own directory, so a
//! directory made by `gatehouse init` can be moved as a whole.

use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context, Result};
use gatehouse_ledger::{Durability, WriterOptions};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how events are recorded.
    pub ledger: LedgerSection,
    /// Where clients connect.
    #[serde(default)]
    pub listen: ListenSection,
    /// Upstream databases, chosen by the client's startup `database`.
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetSection>,
    /// The admin API.
    #[serde(default)]
    pub admin: AdminSection,
    /// Where approval requests and decisions are announced.
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<WebhookSection>,
    /// Approvals in Slack, with buttons, over Socket Mode.
    pub slack: Option<SlackSection>,
    /// This gateway shares its control state with others (docs/cluster.md).
    pub cluster: Option<ClusterSection>,
    /// Masking secrets.
    #[serde(default)]
    pub masking: MaskingSection,
    /// How the gateway logs.
    #[serde(default)]
    pub log: LogSection,
}

/// `[log]`: the gateway's log on standard error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `text` (the default; colours only on a terminal) or `json` (one
    /// object per line, for log shippers).
    #[serde(default)]
    pub format: LogFormat,
}

/// See [`LogSection::format`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[masking]`: the secret behind `hash` pseudonyms.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingSection {
    /// Owner-only file holding the 32-byte key (64 hex digits) of `hash`
    /// masking. Without it, statements masked with `hash` are denied.
    pub key_file: Option<PathBuf>,
}

/// `[[webhook]]`: a URL that receives a JSON POST for every approval
/// request and decision.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Delivery attempts per notification.
    #[serde(default = "default_webhook_attempts")]
    pub attempts: u32,
    /// Milliseconds before the first retry; doubled after each.
    #[serde(default = "default_webhook_backoff_ms")]
    pub backoff_ms: u64,
    /// Milliseconds one attempt may take.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Environment variable holding the secret each request is signed
    /// with (HMAC-SHA256, see docs/webhooks.md); unsigned without one.
    pub secret_env: Option<String>,
    /// `json` (default): Gatehouse's documented payload. `slack`: a Slack
    /// incoming-webhook message (`{"text": ...}`).
    #[serde(default)]
    pub format: WebhookFormat,
}

/// `[cluster]`: gateways sharing one control log (docs/cluster.md). Policy,
/// identities, credentials, operators and blocks are then read from and
/// recorded in the control log; each gateway keeps its own ledger for its
/// sessions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This gateway's name, unique in the cluster.
    pub gateway: String,
    /// The control log: a ledger file the gateways of one host share.
    pub control: PathBuf,
    /// The control log's signing key file (a copy on every gateway).
    pub control_key: PathBuf,
    /// How often, in milliseconds, the control log is checked for the other
    /// gateways' changes.
    #[serde(default = "default_cluster_poll_ms")]
    pub poll_ms: u64,
    /// How long the gateway may go without reading the control log before
    /// it stops vouching for identities (e.g. `30s`, the default).
    #[serde(default = "default_max_staleness")]
    pub max_staleness: String,
    /// `strict` (the default): past `max_staleness`, every session ends
    /// and logins are refused until the control log can be read again.
    /// `best_effort`: keep serving on the last state applied.
    #[serde(default)]
    pub mode: ClusterMode,
}

/// See [`ClusterSection::mode`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// Fail closed.
    #[default]
    Strict,
    /// Serve on the last state applied.
    BestEffort,
}

fn default_max_staleness() -> String {
    "30s".into()
}

fn default_cluster_poll_ms() -> u64 {
    100
}

/// `[slack]`: held statements posted to a Slack channel with "Approve
/// once" and "Deny" buttons, received over Socket Mode (an outbound
/// WebSocket: the gateway needs no public address). See docs/console.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSection {
    /// The channel's id (e.g. `C0123456789`) the bot posts requests in.
    pub channel: String,
    /// Environment variable holding the bot token (`xoxb-...`; scopes
    /// `chat:write`).
    pub bot_token_env: String,
    /// Environment variable holding the app-level token (`xapp-...`; scope
    /// `connections:write`) that opens the Socket Mode connection.
    pub app_token_env: String,
    /// Slack's Web API (changed only for tests against a stand-in).
    #[serde(default = "default_slack_api_url")]
    pub api_url: String,
}

fn default_slack_api_url() -> String {
    "https://slack.com/api".into()
}

/// What a webhook receives.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The versioned JSON payload.
    #[default]
    Json,
    /// A Slack-compatible message.
    Slack,
}

fn default_webhook_attempts() -> u32 {
    5
}

fn default_webhook_backoff_ms() -> u64 {
    500
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

/// `[admin]`: the operators' HTTP API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// `host:port` to listen on; keep it on a private interface.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// PEM certificate chain: serve the API over HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// The console's base URL as approvers reach it (e.g.
    /// `https://gatehouse.internal:9443`): notifications link to each
    /// request in the console when it is set.
    #[serde(default)]
    pub console_url: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            console_url: None,
            tls_cert: None,
            tls_key: None,
            address: default_admin_address(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:6433".into()
}

/// `[listen]`: the client-facing side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    /// `host:port` to listen on.
    #[serde(default = "default_address")]
    pub address: String,
    /// Largest frame a client may send, in bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: usize,
    /// PEM certificate chain; with `tls_key`, enables TLS (SSLRequest answered 'S').
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// How long a client may take from connecting to logging in (`10s`,
    /// like PostgreSQL's authentication_timeout); a connection that has
    /// not logged in by then is closed. Default 10 s.
    pub login_timeout: Option<String>,
    /// Most client connections open at once, logged in or not; more are
    /// answered FATAL 53300 naming this limit. Default 1,000.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections one client address may hold before they log in;
    /// more are answered FATAL 53300. Default 256: room for an application
    /// server opening its whole pool at once, while one address cannot
    /// take every place of `max_connections`.
    #[serde(default = "default_max_pending_logins_per_address")]
    pub max_pending_logins_per_address: usize,
}

fn default_max_connections() -> usize {
    1000
}

fn default_max_pending_logins_per_address() -> usize {
    256
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            address: default_address(),
            max_frame_bytes: default_max_frame(),
            tls_cert: None,
            tls_key: None,
            login_timeout: None,
            max_connections: default_max_connections(),
            max_pending_logins_per_address: default_max_pending_logins_per_address(),
        }
    }
}

impl ListenSection {
    /// Refuses limits that would refuse every client.
    pub fn check_limits(&self) -> Result<()> {
        if self.max_connections == 0 {
            anyhow::bail!("[listen] max_connections must be at least 1");
        }
        if self.max_pending_logins_per_address == 0 {
            anyhow::bail!("[listen] max_pending_logins_per_address must be at least 1");
        }
        Ok(())
    }

    /// `login_timeout`, parsed (default 10 s).
    pub fn login_timeout(&self) -> Result<Duration> {
        match &self.login_timeout {
            None => Ok(Duration::from_secs(10)),
            Some(v) => parse_duration(v).context("[listen] login_timeout"),
        }
    }
}

fn default_address() -> String {
    "127.0.0.1:6432".into()
}

fn default_max_frame() -> usize {
    64 << 20
}

/// `[[target]]`: one upstream database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// The database name clients ask for.
    pub name: String,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`.
    pub url: String,
    /// The upstream password (prefer `password_env`).
    pub password: Option<String>,
    /// Environment variable holding the upstream password.
    pub password_env: Option<String>,
    /// An upstream role without write privileges, used for identities whose
    /// policy allows only reads (otherwise such sessions run with
    /// `default_transaction_read_only`).
    pub read_only_user: Option<String>,
    /// Environment variable holding `read_only_user`'s password.
    pub read_only_password_env: Option<String>,
    /// Without `read_only_user`, sessions of identities that policy keeps
    /// read-only are refused, unless this is true: then they rely on
    /// `default_transaction_read_only` alone, which the gateway's
    /// classification must keep (`BEGIN READ WRITE`, `set_config` undo it).
    #[serde(default)]
    pub accept_read_only_without_role: bool,
    /// Require TLS to the database (no fall-back to plain text).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA(s) the database's certificate must chain to (with `tls`).
    pub tls_ca: Option<PathBuf>,
    /// The longest one statement may run upstream (`60s`, `5m`; `off` for
    /// no limit). Default 60 s. Set on every upstream session; clients
    /// cannot change it.
    pub statement_timeout: Option<String>,
    /// The longest a transaction may sit idle upstream, holding its locks
    /// (`60s`, `5m`; `off`). Default 60 s; clients cannot change it.
    pub idle_in_transaction_session_timeout: Option<String>,
    /// Most client sessions open on this target at once (each holds one
    /// database connection); logins beyond it are refused with SQLSTATE
    /// 53300 naming the limit. Keep it below the database's own
    /// `max_connections`. Default: no limit of the gateway's own.
    pub max_sessions: Option<usize>,
}

/// The default of both session limits.
const DEFAULT_SESSION_LIMIT: Duration = Duration::from_secs(60);

/// A session limit as written: a duration, or `off` (zero: no limit).
fn session_limit(what: &str, key: &str, value: Option<&str>) -> Result<Duration> {
    match value {
        None => Ok(DEFAULT_SESSION_LIMIT),
        Some("off") => Ok(Duration::ZERO),
        Some(v) => parse_duration(v).with_context(|| format!("{what}: {key}")),
    }
}

/// A resolved upstream target.
#[derive(Clone)]
pub struct Target {
    /// The name clients ask for.
    pub name: String,
    /// Upstream host.
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Upstream user.
    pub user: String,
    /// Upstream database.
    pub database: String,
    /// Upstream password, if any.
    pub password: Option<String>,
    /// Read-only upstream login, if configured.
    pub read_only: Option<(String, Option<String>)>,
    /// Whether read-only identities may run without `read_only` (on
    /// `default_transaction_read_only` alone).
    pub accept_read_only_without_role: bool,
    /// TLS settings when the target requires TLS.
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ClientConfig>>,
    /// `statement_timeout` of every upstream session (zero: none).
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every upstream session.
    pub idle_in_transaction_timeout: Duration,
    /// Most sessions open at once (`None`: no limit of the gateway's own).
    pub max_sessions: Option<usize>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn client_tls(what: &str, ca: &Path) -> Result<std::sync::Arc<tokio_rustls::rustls::ClientConfig>> {
    use tokio_rustls::rustls;
    let pem = std::fs::read(ca)
        .with_context(|| format!("{what}: cannot read tls_ca {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.with_context(|| format!("{what}: tls_ca {} is not PEM", ca.display()))?;
        roots.add(cert).with_context(|| {
            format!(
                "{what}: tls_ca {} holds an unusable certificate",
                ca.display()
            )
        })?;
    }
    if roots.is_empty() {
        anyhow::bail!("{what}: tls_ca {} holds no certificate", ca.display());
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

impl Target {
    /// The read-only login, if one is configured.
    pub fn read_only_login(&self) -> Option<(&String, Option<&str>)> {
        self.read_only.as_ref().map(|(u, p)| (u, p.as_deref()))
    }
}

fn env_secret(var: &str, what: &str) -> Result<String> {
    std::env::var(var).map_err(|_| anyhow::anyhow!("{what}: environment variable {var} is not set"))
}

impl TargetSection {
    fn resolve(&self) -> Result<Target> {
        let what = format!("[[target]] {}", self.name);
        let rest = self
            .url
            .strip_prefix("postgres://")
            .or_else(|| self.url.strip_prefix("postgresql://"))
            .ok_or_else(|| anyhow::anyhow!("{what}: url must start with postgres://"))?;
        let (auth, hostpart) = rest.split_once('@').ok_or_else(|| {
            anyhow::anyhow!("{what}: url must name a user: postgres://USER@HOST:PORT/DB")
        })?;
        let (user, url_password) = match auth.split_once(':') {
            Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
            None => (auth.to_owned(), None),
        };
        let (hostport, database) = hostpart.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("{what}: url must name a database: postgres://USER@HOST:PORT/DB")
        })?;
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse()
                    .map_err(|_| anyhow::anyhow!("{what}: port {p:?} is not a number"))?,
            ),
            None => (hostport.to_owned(), 5432),
        };
        let password = match (&self.password_env, &self.password, url_password) {
            (Some(var), _, _) => Some(env_secret(var, &what)?),
            (None, Some(p), _) => Some(p.clone()),
            (None, None, p) => p,
        };
        let read_only = match &self.read_only_user {
            Some(u) => Some((
                u.clone(),
                self.read_only_password_env
                    .as_deref()
                    .map(|v| env_secret(v, &what))
                    .transpose()?,
            )),
            None => None,
        };
        let tls = match (self.tls, &self.tls_ca) {
            (false, None) => None,
            (true, Some(ca)) => Some(client_tls(&what, ca)?),
            (true, None) => {
                anyhow::bail!("{what}: tls = true needs tls_ca, the PEM file of the database's CA")
            }
            (false, Some(_)) => {
                anyhow::bail!("{what}: tls_ca is set but tls is not; set tls = true")
            }
        };
        let statement_timeout = session_limit(
            &what,
            "statement_timeout",
            self.statement_timeout.as_deref(),
        )?;
        let idle_in_transaction_timeout = session_limit(
            &what,
            "idle_in_transaction_session_timeout",
            self.idle_in_transaction_session_timeout.as_deref(),
        )?;
        if self.max_sessions == Some(0) {
            anyhow::bail!("{what}: max_sessions must be at least 1 (leave it out for no limit)");
        }
        Ok(Target {
            tls,
            accept_read_only_without_role: self.accept_read_only_without_role,
            statement_timeout,
            idle_in_transaction_timeout,
            max_sessions: self.max_sessions,
            name: self.name.clone(),
            host,
            port,
            user,
            database: database.split('?').next().unwrap_or(database).to_owned(),
            password,
            read_only,
        })
    }
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
    /// Result rows recorded per statement, as the client received them
    /// (masked). Rows beyond it are counted and digested, not stored.
    #[serde(default = "default_record_rows")]
    pub record_rows: usize,
    /// Most bytes of result values recorded per statement (`"64 KiB"`):
    /// recording stops at the first row that would pass it, so a few wide
    /// rows cannot bloat the ledger; the rest are counted and digested.
    #[serde(default = "default_record_bytes")]
    pub record_bytes: String,
    /// A snapshot of the gateway's state every this many events, so start-up
    /// and `gatehouse state --at` fold at most about this many events after
    /// one snapshot; 0 writes none.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// How long committed events may wait for a signed checkpoint, e.g.
    /// `50ms` (format 2, docs/ledger-format.md section 5.3): every event is
    /// committed before its statement runs; only the signature is batched.
    /// `0` signs every commit (format 1).
    #[serde(default = "default_sign_every")]
    pub sign_every: String,
    /// Most committed events waiting for a signed checkpoint.
    #[serde(default = "default_sign_max_events")]
    pub sign_max_events: u64,
    /// Seal the live segment once it holds about this much (`1 GiB`,
    /// `512 MiB`) and go on in the next (docs/ledger-format.md section 9).
    #[serde(default)]
    pub segment_max: Option<String>,
    /// Seal the live segment once its first event is this old (`1h`, `1d`).
    #[serde(default)]
    pub segment_every: Option<String>,
    /// Run for each sealed segment, oldest first, until it succeeds
    /// (PostgreSQL's convention: `%p` the segment's path, `%f` its file
    /// name, `%%` a percent sign), e.g. `cp %p /mnt/archive/%f`.
    #[serde(default)]
    pub archive_command: Option<String>,
    /// Sealed segments kept on disk once archived (default: all).
    #[serde(default)]
    pub retain_local: Option<usize>,
}

/// What to do with sealed ledger segments (`[ledger] archive_command`,
/// `retain_local`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePolicy {
    /// The command, with `%p`, `%f` and `%%`.
    pub command: String,
    /// Sealed segments kept on disk once archived (`None`: all).
    pub retain_local: Option<usize>,
}

/// Parses a size such as `1 GiB`, `512MiB`, `64 MB` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let what = || format!("size {s:?} must look like 1 GiB, 512 MiB or 100 MB");
    let n: u64 = num.parse().with_context(what)?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => bail!(
            "{}: unit must be B, KiB, MiB, GiB, TiB or KB, MB, GB, TB",
            what()
        ),
    };
    let bytes = n.checked_mul(scale).with_context(what)?;
    if bytes == 0 {
        bail!("size {s:?} must be positive");
    }
    Ok(bytes)
}

fn default_sign_every() -> String {
    "50ms".into()
}

fn default_sign_max_events() -> u64 {
    10_000
}

/// Parses `[ledger] sign_every`: `0`, milliseconds (`50ms`) or a duration
/// as [`parse_duration`] reads it (`1s`), up to
/// [`gatehouse_ledger::writer::MAX_SIGNING_DELAY`], the longest an event may
/// wait for its signature.
pub fn parse_sign_every(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let what = || format!("[ledger] sign_every = {s:?} (50ms, 1s, or 0 to sign every commit)");
    let delay = match s.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.parse().with_context(what)?),
        None => parse_duration(s).with_context(what)?,
    };
    let longest = gatehouse_ledger::writer::MAX_SIGNING_DELAY;
    if delay > longest {
        bail!(
            "[ledger] sign_every = {s:?} is longer than {} s; events would wait too long for a signature",
            longest.as_secs()
        );
    }
    Ok(delay)
}

fn default_durability() -> String {
    "os".into()
}

fn default_record_rows() -> usize {
    100
}

fn default_record_bytes() -> String {
    "64 KiB".into()
}

fn default_snapshot_every() -> u64 {
    10_000
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
        for t in &mut config.targets {
            if let Some(ca) = &t.tls_ca {
                t.tls_ca = Some(base.join(ca));
            }
        }
        if let (Some(c), Some(k)) = (&config.listen.tls_cert, &config.listen.tls_key) {
            config.listen.tls_cert = Some(base.join(c));
            config.listen.tls_key = Some(base.join(k));
        }
        if let Some(c) = &mut config.cluster {
            c.control = base.join(&c.control);
            c.control_key = base.join(&c.control_key);
        }
        if let Some(k) = &config.masking.key_file {
            config.masking.key_file = Some(base.join(k));
        }
        if let (Some(c), Some(k)) = (&config.admin.tls_cert, &config.admin.tls_key) {
            config.admin.tls_cert = Some(base.join(c));
            config.admin.tls_key = Some(base.join(k));
        }
        config.durability()?;
        Ok(config)
    }

    /// The webhook targets, checked.
    pub fn webhook_targets(&self) -> Result<Vec<crate::gateway::webhooks::WebhookTarget>> {
        if let Some(url) = &self.admin.console_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!(
                    "[admin] console_url {url:?} must start with http:// or https:// \
                     (the console's address as approvers' browsers reach it)"
                );
            }
        }
        self.webhooks
            .iter()
            .map(|w| {
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    anyhow::bail!(
                        "[[webhook]] url {:?} must start with http:// or https://",
                        w.url
                    );
                }
                if !(1..=20).contains(&w.attempts) {
                    anyhow::bail!("[[webhook]] attempts must be between 1 and 20");
                }
                let secret = match &w.secret_env {
                    Some(var) => {
                        let secret = std::env::var(var).map_err(|_| {
                            anyhow::anyhow!(
                                "[[webhook]] {}: secret_env names {var}, which is not set; \
                                 export it (at least 16 characters) or remove secret_env",
                                w.url
                            )
                        })?;
                        if secret.len() < 16 {
                            anyhow::bail!(
                                "[[webhook]] {}: the secret in {var} is shorter than 16 characters",
                                w.url
                            );
                        }
                        Some(secret.into_bytes())
                    }
                    None => None,
                };
                Ok(crate::gateway::webhooks::WebhookTarget {
                    url: w.url.clone(),
                    attempts: w.attempts,
                    backoff: std::time::Duration::from_millis(w.backoff_ms),
                    timeout: std::time::Duration::from_millis(w.timeout_ms.max(1)),
                    secret,
                    slack: w.format == WebhookFormat::Slack,
                    console_url: self.admin.console_url.clone(),
                })
            })
            .collect()
    }

    /// The Slack integration, checked: its tokens read from the
    /// environment. Slack users link to operators in the console, so the
    /// console's address must be known.
    pub fn slack(&self) -> Result<Option<crate::gateway::control::slack::SlackConfig>> {
        let Some(slack) = &self.slack else {
            return Ok(None);
        };
        let console_url = self.admin.console_url.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "[slack] needs [admin] console_url: Slack users link themselves to operators \
                 by opening a console link, so set console_url to the console's address as \
                 approvers' browsers reach it"
            )
        })?;
        let token = |var: &str, prefix: &str, what: &str| -> Result<String> {
            let token = std::env::var(var).map_err(|_| {
                anyhow::anyhow!("[slack] {what}: the environment variable {var} is not set; export the token there")
            })?;
            if !token.starts_with(prefix) {
                bail!("[slack] {what}: the token in {var} does not start with {prefix}; check that the bot and app tokens are not swapped");
            }
            Ok(token)
        };
        if !(slack.api_url.starts_with("http://") || slack.api_url.starts_with("https://")) {
            bail!(
                "[slack] api_url {:?} must start with http:// or https://",
                slack.api_url
            );
        }
        if slack.channel.trim().is_empty() {
            bail!("[slack] channel is empty: give the channel's id (e.g. C0123456789)");
        }
        Ok(Some(crate::gateway::control::slack::SlackConfig {
            channel: slack.channel.clone(),
            bot_token: token(&slack.bot_token_env, "xoxb-", "bot_token_env")?,
            app_token: token(&slack.app_token_env, "xapp-", "app_token_env")?,
            api_url: slack.api_url.trim_end_matches('/').to_owned(),
            console_url: console_url.trim_end_matches('/').to_owned(),
        }))
    }

    /// The cluster's control log, when this gateway is one of several
    /// (`[cluster]`), opened for appending and following.
    pub fn control_log(&self) -> Result<Option<gatehouse_ledger::shared_log::SharedLog>> {
        let Some(cluster) = &self.cluster else {
            return Ok(None);
        };
        if cluster.gateway.is_empty()
            || !cluster
                .gateway
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            bail!(
                "[cluster] gateway {:?} must be a name of letters, digits, '_', '.' or '-'",
                cluster.gateway
            );
        }
        if !(10..=10_000).contains(&cluster.poll_ms) {
            bail!("[cluster] poll_ms must be between 10 and 10000");
        }
        let signer = gatehouse_ledger::keyfile::load_signing_key(&cluster.control_key)
            .with_context(|| {
                format!(
                    "[cluster] control_key {}: create it with `gatehouse cluster init`, or copy the one the other gateways use",
                    cluster.control_key.display()
                )
            })?;
        let mut options = WriterOptions::new(&cluster.control, signer);
        options.durability = self.durability()?;
        Ok(Some(
            gatehouse_ledger::shared_log::SharedLog::open(options).with_context(|| {
                format!("cannot open the control log {}", cluster.control.display())
            })?,
        ))
    }

    /// The configured durability.
    pub fn durability(&self) -> Result<Durability> {
        self.ledger
            .durability
            .parse()
            .map_err(|e: String| anyhow::anyhow!("[ledger] {e}"))
    }

    /// The targets with their URLs parsed and secrets read from the environment.
    pub fn resolve_targets(&self) -> Result<Vec<Target>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for t in &self.targets {
            if !seen.insert(t.name.clone()) {
                anyhow::bail!("[[target]] {} is defined twice", t.name);
            }
            out.push(t.resolve()?);
        }
        Ok(out)
    }

    /// What to do with sealed segments: `None` keeps them where they are.
    pub fn archive_policy(&self) -> Result<Option<ArchivePolicy>> {
        match (&self.ledger.archive_command, self.ledger.retain_local) {
            (None, None) => Ok(None),
            (None, Some(_)) => bail!(
                "[ledger] retain_local removes only archived segments: set archive_command too"
            ),
            (Some(command), retain_local) if !command.trim().is_empty() => {
                Ok(Some(ArchivePolicy {
                    command: command.clone(),
                    retain_local,
                }))
            }
            (Some(_), _) => bail!("[ledger] archive_command is empty"),
        }
    }

    /// Writer options for the ledger, loading (and checking) the signing key.
    pub fn writer_options(&self) -> Result<WriterOptions> {
        let signer = gatehouse_ledger::keyfile::load_signing_key(&self.ledger.signing_key)?;
        let mut options = WriterOptions::new(&self.ledger.path, signer);
        options.durability = self.durability()?;
        options.sign_every = parse_sign_every(&self.ledger.sign_every)?;
        if self.ledger.sign_max_events == 0 {
            bail!("[ledger] sign_max_events must be at least 1");
        }
        options.sign_max_events = self.ledger.sign_max_events;
        options.segments = self.segment_policy()?;
        Ok(options)
    }

    /// `[ledger] record_bytes` in bytes.
    pub fn record_bytes(&self) -> Result<usize> {
        let bytes = parse_size(&self.ledger.record_bytes).context("[ledger] record_bytes")?;
        usize::try_from(bytes).context("[ledger] record_bytes is too large for this machine")
    }

    /// When the ledger writer seals a segment (`[ledger] segment_max`,
    /// `segment_every`).
    pub fn segment_policy(&self) -> Result<gatehouse_ledger::SegmentPolicy> {
        Ok(gatehouse_ledger::SegmentPolicy {
            max_bytes: self
                .ledger
                .segment_max
                .as_deref()
                .map(|s| parse_size(s).context("[ledger] segment_max"))
                .transpose()?,
            every: self
                .ledger
                .segment_every
                .as_deref()
                .map(|s| parse_duration(s).context("[ledger] segment_every"))
                .transpose()?,
        })
    }
}

/// The configuration `gatehouse init` writes.
pub fn initial(ledger: &str, signing_key: &str, masking_key: &str) -> String {
    format!(
        "# Gatehouse configuration. Relative paths are relative to this file.\n\
         \n\
         [ledger]\n\
         # The append-only audit ledger (SQLite).\n\
         path = {ledger:?}\n\
         # Checkpoint signing key; must be readable by its owner only.\n\
         signing_key = {signing_key:?}\n\
         # \"os\": a commit survives a process crash; \"fsync\": it also survives power loss.\n\
         durability = \"os\"\n\
         # A snapshot of the state every N events, so start-up folds at most about N (0: none).\n\
         snapshot_every = 10000\n\
         # Checkpoints are signed at most this long after their events commit (0: every commit).\n\
         sign_every = \"50ms\"\n\
         # Result rows recorded per statement, as the client saw them, and their most bytes:\n\
         # record_rows = 100\n\
         # record_bytes = \"64 KiB\"\n\
         # Cut the ledger into sealed segments, archive them, keep the newest N on disk\n\
         # (docs/deployment.md):\n\
         # segment_max = \"1 GiB\"\n\
         # segment_every = \"1d\"\n\
         # archive_command = \"cp %p /mnt/archive/%f\"\n\
         # retain_local = 7\n\
         \n\
         [masking]\n\
         # The secret behind \"hash\" pseudonyms; readable by its owner only, never in the ledger.\n\
         key_file = {masking_key:?}\n"
    )
}

impl Config {
    /// The `hash` masking key, if one is configured. The file must hold 64
    /// hex digits and be readable by its owner only.
    pub fn masking_key(&self) -> Result<Option<gatehouse_engine::mask::HashKey>> {
        let Some(path) = &self.masking.key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the masking key {}; check its path in [masking] key_file",
                path.display()
            )
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "masking key {} is accessible to group or others (mode {mode:03o}); run `chmod 600 {}` and replace the key if others may have read it",
                    path.display(),
                    path.display()
                );
            }
        }
        let hex = text.trim();
        let bytes: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        let Some(bytes) = bytes else {
            anyhow::bail!(
                "masking key {} must hold 64 hex digits (32 random bytes), e.g. from `openssl rand -hex 32`",
                path.display()
            );
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        Ok(Some(gatehouse_engine::mask::HashKey::new(key)))
    }
}

/// Parses durations such as `30m`, `24h`, `7d`, `90s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?} must look like 30m, 24h or 7d"))?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" | "" => 3600,
        "d" => 86_400,
        _ => bail!("duration {s:?}: unit must be s, m, h or d"),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= 10 * 365 * 86_400)
        .with_context(|| format!("duration {s:?} is longer than ten years"))?;
    if secs == 0 {
        bail!("duration {s:?} must be positive");
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signing_delay_is_bounded_and_zero_signs_every_commit() {
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("64 MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1 GB!").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_sign_every("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_sign_every("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_sign_every("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_sign_every("2m").is_err());
        assert!(parse_sign_every("61s").is_err());
        assert!(parse_sign_every("fast").is_err());
    }

    #[test]
    fn slack_needs_the_console_and_both_tokens_in_their_places() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        let load = |admin: &str, slack: &str| {
            let text = format!(
                "{}\n[admin]\n{admin}\n[slack]\n{slack}\n",
                initial("ledger.db", "signing.key", "masking.key")
            );
            std::fs::write(&path, text).unwrap();
            Config::load(&path).unwrap().slack()
        };
        std::env::set_var("GH_CONFIG_TEST_BOT", "xoxb-1");
        std::env::set_var("GH_CONFIG_TEST_APP", "xapp-1");
        let slack = "channel = \"C1\"\nbot_token_env = \"GH_CONFIG_TEST_BOT\"\napp_token_env = \"GH_CONFIG_TEST_APP\"";
        let console = "console_url = \"https://gh.internal/\"";
        let error = load("", slack).unwrap_err().to_string();
        assert!(error.contains("console_url"), "{error}");
        let ok = load(console, slack).unwrap().unwrap();
        assert_eq!(ok.console_url, "https://gh.internal");
        assert_eq!(ok.api_url, "https://slack.com/api");
        assert_eq!(
            (ok.bot_token.as_str(), ok.app_token.as_str()),
            ("xoxb-1", "xapp-1")
        );
        assert!(
            !format!("{ok:?}").contains("xoxb-1"),
            "tokens stay out of logs"
        );
        let swapped = slack
            .replace("GH_CONFIG_TEST_BOT", "GH_CONFIG_TEST_X")
            .replace("GH_CONFIG_TEST_APP", "GH_CONFIG_TEST_BOT")
            .replace("GH_CONFIG_TEST_X", "GH_CONFIG_TEST_APP");
        let error = load(console, &swapped).unwrap_err().to_string();
        assert!(error.contains("swapped"), "{error}");
        let unset = slack.replace("GH_CONFIG_TEST_APP", "GH_CONFIG_TEST_UNSET");
        let error = load(console, &unset).unwrap_err().to_string();
        assert!(error.contains("GH_CONFIG_TEST_UNSET is not set"), "{error}");
    }

    #[test]
    fn initial_config_parses_and_resolves_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, initial("ledger.db", "signing.key", "masking.key")).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.ledger.path, dir.path().join("ledger.db"));
        assert_eq!(c.durability().unwrap(), Durability::Os);
        assert_eq!(c.ledger.snapshot_every, 10_000);
    }

    #[test]
    fn the_initial_configs_commented_ledger_lines_parse_once_uncommented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        let text = initial("ledger.db", "signing.key", "masking.key");
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path).unwrap();
        assert!(!c.segment_policy().unwrap().enabled());
        assert_eq!(c.archive_policy().unwrap(), None);
        assert_eq!(c.record_bytes().unwrap(), 64 << 10);
        let text = [
            "record_rows",
            "record_bytes",
            "segment_max",
            "segment_every",
            "archive_command",
            "retain_local",
        ]
        .iter()
        .fold(text, |t, key| {
            t.replace(&format!("# {key} ="), &format!("{key} ="))
        });
        std::fs::write(&path, &text).unwrap();
        let c = Config::load(&path).unwrap();
        let segments = c.segment_policy().unwrap();
        assert_eq!(segments.max_bytes, Some(1 << 30));
        assert_eq!(segments.every, Some(Duration::from_secs(86_400)));
        let archive = c.archive_policy().unwrap().unwrap();
        assert_eq!(archive.command, "cp %p /mnt/archive/%f");
        assert_eq!(archive.retain_local, Some(7));
        assert_eq!(
            (c.ledger.record_rows, c.record_bytes().unwrap()),
            (100, 64 << 10)
        );
        // Retention removes archived segments only.
        std::fs::write(
            &path,
            text.replace("archive_command =", "# archive_command ="),
        )
        .unwrap();
        let err = format!(
            "{:#}",
            Config::load(&path).unwrap().archive_policy().unwrap_err()
        );
        assert!(err.contains("set archive_command"), "{err}");
        std::fs::write(&path, text.replace("\"1 GiB\"", "\"big\"")).unwrap();
        let err = format!(
            "{:#}",
            Config::load(&path).unwrap().segment_policy().unwrap_err()
        );
        assert!(err.contains("segment_max"), "{err}");
    }

    #[test]
    fn masking_keys_are_hex_and_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(&path, initial("ledger.db", "signing.key", "masking.key")).unwrap();
        let c = Config::load(&path).unwrap();
        let key = dir.path().join("masking.key");
        assert!(c.masking_key().is_err(), "a missing key file is an error");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = format!("{:#}", c.masking_key().unwrap_err());
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(c.masking_key().unwrap().is_some());
        std::fs::write(&key, "not hex\n").unwrap();
        let err = format!("{:#}", c.masking_key().unwrap_err());
        assert!(err.contains("64 hex digits"), "{err}");
        // Without [masking], there is no key (hash masking is then denied).
        std::fs::write(&path, "[ledger]\npath = \"x\"\nsigning_key = \"k\"\n").unwrap();
        assert!(Config::load(&path)
            .unwrap()
            .masking_key()
            .unwrap()
            .is_none());
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
