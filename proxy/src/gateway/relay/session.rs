//! The relay for one authenticated session.
//!
//! Client frames are judged and recorded, then forwarded byte for byte.
//! Nothing executes upstream before its record (one `Statement` event: what
//! arrived and what policy decided) is committed to the ledger; if it cannot
//! be, the statement is refused. Its response is recorded later, with the
//! session's next record or shortly after.
//!
//! A denied statement is not answered by the gateway directly: it is
//! replaced upstream by a statement that fails with a per-session marker
//! (`gatehouse_deny_<nonce>_<n>`), and the relay swaps that error for the
//! policy's ErrorResponse. PostgreSQL thereby keeps its own error semantics
//! (pipelines skip to Sync, a transaction block becomes aborted) and every
//! response reaches the client in order, without the gateway re-implementing
//! the protocol's state machine.
//!
//! **The invariant.** No message that can make PostgreSQL run a statement
//! reaches it before that statement was judged and recorded as the
//! statement that will run:
//!
//! * a simple Query is judged and recorded whole, and forwarded only if
//!   PostgreSQL will run it (inside a pipeline, the relay asks first);
//! * an Execute is judged and recorded as the statement its portal was
//!   bound to, with the Bind's parameters, the name looked up as PostgreSQL
//!   holds it ([`crate::gateway::relay::server_names`]): Parse and Bind run
//!   nothing, and their text is what the Execute records;
//! * a portal can run no other way: SQL `FETCH` and `MOVE` of a protocol
//!   portal are refused, names that SQL `PREPARE`, `DEALLOCATE`, `DISCARD`,
//!   `DECLARE` or `CLOSE` touched are forgotten (so binding or executing
//!   them is refused), SQL `EXECUTE` is Unknown, and fast-path calls are
//!   refused;
//! * a denied or held statement reaches PostgreSQL in no form that can
//!   run: a failing Parse of a marker stands in for it.
//!
//! Tests: tests/protocol.rs, tests/approvals.rs, and the session fuzz test,
//! which checks the database's own statement log and audit triggers
//! against the ledger.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use gatehouse_engine::fingerprint::fingerprint;
use gatehouse_engine::policy::{class_name, Policy, StatementVerdict, Subject, Verdict};
use gatehouse_engine::{Action, Classification, StatementClass};
use gatehouse_ledger::cbor::Bytes as CborBytes;
use gatehouse_ledger::event::{
    ApprovalRequested, EventBody, Param, PendingEvent, Protocol, Response, ResultColumn, ResultRow,
    SessionClosed, SessionTerminated, Statement,
};
use gatehouse_ledger::{AppendError, AppendOutcome, CommitTurn};
use pgwire::messages::extendedquery::{Bind, Close, Execute, Parse};
use pgwire::messages::simplequery::Query;
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tracing::{info, warn};

use crate::config::Target;
use crate::gateway::relay::catalog::ViewReads;
use crate::gateway::relay::masking::{self, MaskSpec, StatementMask};
use crate::gateway::relay::read_ahead::{Ahead, ReadAhead};
use crate::gateway::relay::server_names::{Answer, Lookup, Names, OnFailure, Outcome};
use crate::gateway::relay::services::{Observation, Services};
use crate::gateway::wire::frame::{self, read_frame, Frame, FrameError};
use crate::gateway::wire::random_bytes;
use crate::gateway::wire::refusal::Refusal;
use crate::gateway::wire::Stream;

/// DataRow bytes gathered before they are hashed into a result digest.
const DIGEST_BATCH: usize = 16 << 10;

/// Most bytes read and discarded after a FATAL error, so it is delivered.
const DRAIN_BYTES: u64 = 64 << 20;

/// Who the session is.
pub struct SessionInfo {
    /// Session number in the ledger.
    pub id: u64,
    /// The authenticated identity.
    pub identity: String,
    /// The upstream target.
    pub target: Arc<Target>,
    /// The statement held for approval, as the cancel path sees it.
    pub held: Arc<HeldStatement>,
    /// What it is doing, as the session list shows it.
    pub activity: Arc<Activity>,
}

/// What a session is doing, for operators (`gatehouse sessions`): how many
/// statements it has had judged, and the one running now with its start.
#[derive(Default)]
pub struct Activity {
    statements: std::sync::atomic::AtomicU64,
    current: Mutex<Current>,
}

#[derive(Default)]
struct Current {
    /// Statements let through whose response has not arrived.
    in_flight: usize,
    /// The latest of them, and when it was let through.
    latest: Option<(String, Instant)>,
}

/// Longest statement text the session list shows (the ledger has it all).
const SHOWN_SQL: usize = 500;

impl Activity {
    /// Statements judged and recorded so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// The statement running now (the latest let through, when several
    /// are pipelined) and how long it has run.
    pub fn current(&self) -> Option<(String, Duration)> {
        let current = self.current.lock().ok()?;
        current
            .latest
            .as_ref()
            .filter(|_| current.in_flight > 0)
            .map(|(sql, since)| (sql.clone(), since.elapsed()))
    }

    fn judged(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }

    fn started(&self, sql: &str) {
        if let Ok(mut current) = self.current.lock() {
            let mut end = sql.len().min(SHOWN_SQL);
            while !sql.is_char_boundary(end) {
                end -= 1;
            }
            current.in_flight += 1;
            current.latest = Some((sql[..end].to_owned(), Instant::now()));
        }
    }

    fn answered(&self) {
        if let Ok(mut current) = self.current.lock() {
            current.in_flight = current.in_flight.saturating_sub(1);
            if current.in_flight == 0 {
                current.latest = None;
            }
        }
    }
}

/// The statement a session holds for approval, as its cancel path sees it.
#[derive(Default)]
pub struct HeldStatement {
    /// Set while a statement is held.
    pub holding: std::sync::atomic::AtomicBool,
    /// Wakes the session to withdraw it.
    pub cancelled: tokio::sync::Notify,
}

/// Why a session is being ended from outside, and by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// The operator, or `None` for the gateway itself.
    pub operator: Option<String>,
    /// Shown to the client and recorded.
    pub reason: String,
}

/// What became of a held statement, as its session learns it from the
/// approvers (through the control layer's approval desk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Approved by a quorum: run it.
    Approved,
    /// Denied by an approver: tell the client why.
    Refused(String),
    /// Refused by the gateway itself (a block, the session's end, a
    /// restart): tell the client why.
    Withdrawn(String),
    /// No approver decided in time.
    Expired,
}

/// A statement prepared with Parse: its text and classification.
struct Prepared {
    sql: String,
    classification: Arc<Classification>,
    denied: bool,
}

/// A portal created with Bind. It keeps the statement's text and
/// classification as they were at Bind: PostgreSQL runs the portal's plan
/// even after its statement's name is parsed again (or closed and parsed
/// again), so judging by the name at Execute would judge (and record)
/// another statement than the one that runs.
struct Portal {
    /// The statement's name, for the record.
    statement: String,
    sql: String,
    classification: Arc<Classification>,
    params: Vec<Param>,
    /// Result format codes from Bind (none: all text; one: all columns).
    result_formats: Vec<i16>,
}

/// A forwarded message whose outcome the upstream side must match.
enum Pending {
    /// An executed statement (Execute, or a whole simple Query).
    Exec(Box<Exec>),
    /// A Parse (the client's, or a denial's failing one): completes at
    /// ParseComplete or its error, or is skipped.
    Parse(Arc<Outcome>),
    /// A Bind: completes at BindComplete or its error, or is skipped.
    Bind(Arc<Outcome>),
    /// A Close: completes at CloseComplete or its error, or is skipped.
    Close(Arc<Outcome>),
    /// A Sync: completes at ReadyForQuery. Carries the number of the last
    /// denial issued before it: those denials' errors all arrive before
    /// this ReadyForQuery, so their entries can go then, and no later.
    Sync(u64),
    /// A gateway-internal simple query (a denial): completes at ReadyForQuery.
    Internal(u64),
    /// A Describe: completes at its RowDescription or NoData.
    Describe(Describer),
    /// The client ended a COPY FROM STDIN (CopyDone or CopyFail). A Sync
    /// between the message that started the copy and this one is ignored by
    /// PostgreSQL, and answered by no ReadyForQuery.
    CopyDone,
}

/// Who sent a Describe.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Describer {
    /// The client: its answer is forwarded.
    Client,
    /// The gateway, right before a masked Execute, to learn where each
    /// result column comes from and in which format: its answer describes
    /// that execution and is not forwarded.
    Gateway,
}

struct Exec {
    query: u64,
    simple: bool,
    started: Instant,
    tag: Option<String>,
    rows: u64,
    bytes: u64,
    error: Option<(String, String)>,
    columns: Vec<ResultColumn>,
    result: Vec<ResultRow>,
    truncated: bool,
    /// Bytes of values in `result`.
    recorded_bytes: usize,
    digest: Option<Box<blake3::Hasher>>,
    /// DataRow bytes not yet hashed: BLAKE3 hashes large inputs several
    /// times faster than one small row at a time.
    digest_pending: Vec<u8>,
    /// What to mask in its results, when masks bind the session.
    mask: Option<Box<StatementMask>>,
    /// It changes the catalog (DDL): masking's catalog cache is invalidated.
    ddl: bool,
    /// The relations its DDL names (see [`Context::own_relations`]).
    ddl_tables: Vec<String>,
    /// For an Execute, its portal's result formats: a RowDescription that
    /// answered a statement Describe says text for every column, whatever
    /// Bind later asked for.
    result_formats: Option<Vec<i16>>,
    /// A pure read goes to the database while its record commits (see
    /// [`reads_only`]): until this says the record committed, no byte of
    /// its results goes to the client.
    record: Option<AppendOutcome>,
}

impl Exec {
    fn new(query: u64, simple: bool) -> Exec {
        Exec {
            query,
            simple,
            started: Instant::now(),
            tag: None,
            rows: 0,
            bytes: 0,
            error: None,
            columns: Vec::new(),
            result: Vec::new(),
            truncated: false,
            recorded_bytes: 0,
            digest: None,
            digest_pending: Vec::new(),
            mask: None,
            ddl: false,
            ddl_tables: Vec::new(),
            result_formats: None,
            record: None,
        }
    }

    /// Records the columns of its result, in the formats the client gets.
    fn set_columns(&mut self, mut columns: Vec<ResultColumn>) {
        if let Some(formats) = &self.result_formats {
            for (i, c) in columns.iter_mut().enumerate() {
                c.format = match formats.len() {
                    0 => 0,
                    1 => formats[0] as u16,
                    _ => formats.get(i).copied().unwrap_or(0) as u16,
                };
            }
        }
        self.columns = columns;
    }

    /// The execution of a statement judged `j`.
    fn judged(mut self, j: &Judgement) -> Exec {
        self.mask = j
            .mask
            .clone()
            .map(|spec| Box::new(StatementMask::new(spec)));
        self.ddl = j.ddl;
        if j.ddl {
            self.ddl_tables = j.tables.clone();
        }
        self
    }

    /// Records one DataRow: the bytes the database sent go into the digest,
    /// the values the client received into the recorded result while the
    /// cap allows. The result stays a prefix of the rows: once one is left
    /// out, so is every later one.
    fn data_row(&mut self, original: &[u8], delivered: &[u8], cap: RecordCap) {
        let digest = self.digest.get_or_insert_with(Box::default);
        if self.digest_pending.len() + original.len() >= DIGEST_BATCH {
            digest.update(&self.digest_pending);
            self.digest_pending.clear();
        }
        if original.len() >= DIGEST_BATCH {
            digest.update(original);
        } else {
            self.digest_pending.extend_from_slice(original);
        }
        if self.truncated || self.result.len() >= cap.rows {
            self.truncated = true;
            return;
        }
        match frame::data_row_values(&delivered[5..]) {
            Some(values)
                if self.recorded_bytes
                    + values.iter().flatten().map(|v| v.len()).sum::<usize>()
                    > cap.bytes =>
            {
                self.truncated = true;
            }
            Some(values) => {
                self.recorded_bytes += values.iter().flatten().map(|v| v.len()).sum::<usize>();
                self.result.push(ResultRow {
                    values: values
                        .into_iter()
                        .map(|v| v.map(|v| CborBytes(v.to_vec())))
                        .collect(),
                })
            }
            None => self.truncated = true,
        }
    }
}

/// How much of a statement's result is recorded (`[ledger] record_rows`
/// and `record_bytes`).
#[derive(Debug, Clone, Copy)]
struct RecordCap {
    rows: usize,
    bytes: usize,
}

/// What the two directions of the relay share.
struct Tracker {
    pending: VecDeque<Pending>,
    /// An ErrorResponse came since the last ReadyForQuery.
    errored: bool,
    /// PostgreSQL is in COPY FROM STDIN and the client has not ended it:
    /// a Sync now is ignored.
    copy_in: bool,
    /// Denial ErrorResponses by marker number, waiting for their upstream error.
    denials: HashMap<u64, BytesMut>,
    /// Response events not yet appended; they ride along with the next
    /// write-ahead append, or are flushed shortly after.
    deferred: Vec<PendingEvent>,
    /// The last RowDescription seen: in the extended protocol it answers a
    /// Describe that may precede its Execute.
    last_description: Vec<ResultColumn>,
}

struct Context<C> {
    /// DDL ran in the current transaction (see [`Context::transaction_state`]).
    ddl_in_transaction: AtomicBool,
    /// Relations this session's DDL created or changed: known by name with
    /// any column, since the gateway's catalog connection cannot see a
    /// transaction's own DDL before it commits (see
    /// `Policy::deny_unresolved`).
    own_relations: Mutex<BTreeSet<String>>,
    info: SessionInfo,
    shared: Arc<C>,
    tracker: Mutex<Tracker>,
    flush: tokio::sync::Notify,
    /// Woken whenever answers from PostgreSQL have been taken in.
    answered: tokio::sync::Notify,
    /// Messages from the gateway itself to the client (a held statement's
    /// notice), sent between the database's messages.
    notices: tokio::sync::mpsc::UnboundedSender<BytesMut>,
    marker: String,
}

impl<C: Services> Context<C> {
    /// Records the end of an execution: what it masked, then its response.
    /// DDL, and results from tables the catalog did not know, invalidate
    /// masking's catalog cache.
    fn finish(
        &self,
        e: Box<Exec>,
        error_override: Option<&str>,
        completed: &mut Vec<PendingEvent>,
    ) {
        let e = *e;
        self.info.activity.answered();
        if let Some(m) = &e.mask {
            if let Some(applied) = m.applied(self.info.id, &self.info.identity, e.query) {
                for c in &applied.columns {
                    self.shared.observe(Observation::Masked {
                        strategy: &c.strategy,
                        values: c.values,
                    });
                }
                completed.push(EventBody::from(applied).to_pending());
            }
            if m.stale_catalog {
                self.shared
                    .masking()
                    .catalog
                    .invalidate(&self.info.target.name);
            }
        }
        if e.ddl {
            if e.error.is_none() {
                if let Ok(mut own) = self.own_relations.lock() {
                    own.extend(e.ddl_tables.iter().cloned());
                }
            }
            self.shared
                .masking()
                .catalog
                .invalidate(&self.info.target.name);
            self.ddl_in_transaction.store(true, Ordering::Relaxed);
        }
        completed.push(self.response_event(e, error_override));
    }

    /// At ReadyForQuery: DDL of a transaction that just ended is now visible
    /// to every session, so the catalog cache is invalidated once more.
    fn transaction_state(&self, status: Option<u8>) {
        if status == Some(b'I') && self.ddl_in_transaction.swap(false, Ordering::Relaxed) {
            self.shared
                .masking()
                .catalog
                .invalidate(&self.info.target.name);
        }
    }

    fn response_event(&self, e: Exec, error_override: Option<&str>) -> PendingEvent {
        let (sqlstate, error) = match (error_override, e.error) {
            (Some(why), _) => (None, Some(why.to_owned())),
            (None, Some((code, msg))) => (Some(code), Some(msg)),
            (None, None) => (None, None),
        };
        let mut response = Response {
            session: self.info.id,
            identity: self.info.identity.clone(),
            query: e.query,
            command_tag: e.tag,
            rows: e.rows,
            duration_ns: e.started.elapsed().as_nanos() as u64,
            sqlstate,
            error,
            bytes: e.bytes,
            columns: e.columns,
            result: e.result,
            truncated: e.truncated,
            result_digest: None,
        };
        // Left out where the recorded rows are the rows the database sent:
        // readers rebuild it from them (docs/ledger-format.md, section 7).
        if let Some(mut h) = e.digest {
            h.update(&e.digest_pending);
            let digest = h.finalize();
            if e.truncated || response.recorded_rows_digest() != *digest.as_bytes() {
                response.result_digest = Some(CborBytes(digest.as_bytes().to_vec()));
            }
        }
        EventBody::from(response).to_pending()
    }
}

/// Runs a gateway-internal query upstream (session setup), failing on error.
pub async fn run_internal(upstream: &mut dyn Stream, sql: &str) -> anyhow::Result<()> {
    let mut q = BytesMut::from(sql.as_bytes());
    q.put_u8(0);
    upstream.write_all(&frame::message(b'Q', &q)).await?;
    let mut error = None;
    loop {
        let f = read_frame(upstream, 1 << 24).await?;
        match f.tag() {
            b'E' => error = Some(frame::error_fields(f.body())),
            b'Z' => break,
            _ => {}
        }
    }
    match error {
        Some(fields) => anyhow::bail!("upstream refused session setup: {fields:?}"),
        None => Ok(()),
    }
}

/// Bytes buffered for the database before a write goes to its socket.
const UPSTREAM_BUFFER: usize = 64 << 10;

/// Relays one session until either side closes.
pub async fn relay<S: Stream, C: Services>(
    client: S,
    upstream: Box<dyn Stream>,
    info: SessionInfo,
    shared: Arc<C>,
    mut killed: tokio::sync::watch::Receiver<Option<Termination>>,
) -> anyhow::Result<()> {
    let marker = format!(
        "gatehouse_deny_{}",
        random_bytes::<8>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let (notices, notices_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Context {
        ddl_in_transaction: AtomicBool::new(false),
        own_relations: Mutex::new(BTreeSet::new()),
        info,
        shared,
        tracker: Mutex::new(Tracker {
            pending: VecDeque::new(),
            errored: false,
            copy_in: false,
            denials: HashMap::new(),
            deferred: Vec::new(),
            last_description: Vec::new(),
        }),
        flush: tokio::sync::Notify::new(),
        answered: tokio::sync::Notify::new(),
        notices,
        marker,
    };
    let (client_r, mut client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let mut client_side = ClientSide {
        ctx: &ctx,
        // Buffered: one read usually brings a whole message (or several),
        // where reading its header and body separately costs two syscalls.
        client: ReadAhead::new(tokio::io::BufReader::with_capacity(16 << 10, client_r)),
        upstream: BufWriter::with_capacity(UPSTREAM_BUFFER, upstream_w),
        statements: Names::default(),
        portals: Names::default(),
        skip_until_sync: false,
        stretch: 0,
        stretch_open: false,
        query: 0,
        next_denial: 0,
        turn: None,
    };
    let mut shutdown = ctx.shared.shutdown();
    let outcome = tokio::select! {
        r = client_side.run() => r,
        r = upstream_to_client(&ctx, upstream_r, notices_rx, &mut client_w) => Ok(match r {
            Ok(None) => End::Upstream,
            Ok(Some(setting)) => End::SettingChanged(setting),
            Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<Unrecorded>()) {
                Some(unrecorded) => End::Unrecorded(unrecorded.to_string()),
                None => End::UpstreamFailed(e.to_string()),
            },
        }),
        () = flush_deferred(&ctx) => Ok(End::Upstream),
        _ = shutdown.wait_for(|stop| *stop) => Ok(End::Shutdown),
        r = killed.wait_for(Option::is_some) => Ok(End::Killed(
            r.ok().and_then(|t| t.clone()).unwrap_or(Termination {
                operator: None,
                reason: "ended by Gatehouse".into(),
            }),
        )),
    };
    // Whatever ended the session, the ledger's commit role goes (the
    // records below wait for it).
    client_side.give_up_turn();
    let ended_by = match &outcome {
        Ok(End::Killed(_)) => Some(Refusal::SessionEnded),
        Ok(End::Shutdown) => Some(Refusal::ShuttingDown),
        _ => None,
    };
    let terminated_by = match &outcome {
        Ok(End::Killed(t)) => Some(t.operator.clone()),
        _ => None,
    };
    let (reason, fatal) = match outcome {
        Ok(End::Terminated) => ("client terminated the session".to_owned(), None),
        Ok(End::ClientClosed) => ("client disconnected".to_owned(), None),
        Ok(End::Upstream) => (
            "upstream closed the connection".to_owned(),
            Some((
                "08006",
                "the database closed its connection to Gatehouse; reconnect to start a new session"
                    .to_owned(),
            )),
        ),
        Ok(End::Fatal(msg)) => (msg.clone(), Some(("08P01", msg))),
        Ok(End::Unrecorded(msg)) => (msg.clone(), Some(("58030", msg))),
        Ok(End::UpstreamFailed(e)) => (
            format!("upstream connection failed: {e}"),
            Some((
                "08006",
                "the connection between Gatehouse and the database failed; reconnect to start a new session"
                    .to_owned(),
            )),
        ),
        Ok(End::SettingChanged(setting)) => {
            let msg = format!(
                "the database session switched to {setting}, with which it would read other SQL than Gatehouse judges; Gatehouse ended the session"
            );
            (msg.clone(), Some(("42501", msg)))
        }
        Ok(End::Killed(t)) => (
            t.reason.clone(),
            Some((
                "57P01",
                format!("Gatehouse ended this session: {}", t.reason),
            )),
        ),
        Ok(End::Shutdown) => (
            "the gateway is shutting down".to_owned(),
            Some((
                "57P01",
                "Gatehouse is shutting down; reconnect shortly".to_owned(),
            )),
        ),
        Err(e) => (format!("I/O error: {e}"), None),
    };
    let fatal_sent = fatal.is_some();
    let kind = match (&fatal, ended_by) {
        (Some(("57P01", _)), Some(kind)) => Some(kind),
        (Some(("42501", _)), _) => Some(Refusal::SessionEnded),
        (Some(("58030", _)), _) => Some(Refusal::LedgerUnavailable),
        _ => None,
    };
    if let Some((code, msg)) = fatal {
        warn!(session = ctx.info.id, "{msg}");
        let error = match kind {
            Some(kind) => frame::refusal("FATAL", code, kind, &msg),
            None => frame::error("FATAL", code, &msg),
        };
        let _ = client_w.write_all(&error).await;
        let _ = client_w.flush().await;
        let _ = client_w.shutdown().await;
    }
    let session = ctx.info.id;
    match ctx
        .shared
        .withdraw_session_approvals(
            session,
            &format!("the session ended while the statement was held ({reason})"),
        )
        .await
    {
        Ok(_) => {}
        Err(e) => warn!(session, "cannot record the end of held statements: {e}"),
    }
    let mut events = std::mem::take(&mut ctx.tracker.lock().expect("tracker").deferred);
    if let Some(operator) = terminated_by {
        events.push(
            EventBody::from(SessionTerminated {
                session: ctx.info.id,
                identity: ctx.info.identity.clone(),
                operator,
                reason: reason.clone(),
            })
            .to_pending(),
        );
    }
    // The close is the session's last event: held statements were withdrawn
    // and deferred events are in this batch. Readers take a session's events
    // to end here (docs/ledger-format.md, section 1), so nothing of this
    // session may be recorded after it.
    events.push(
        EventBody::from(SessionClosed {
            session: ctx.info.id,
            identity: ctx.info.identity.clone(),
            reason: reason.clone(),
            statements: client_side.query,
        })
        .to_pending(),
    );
    if let Err(e) = ctx.shared.ledger().append_pending(events).await {
        warn!(
            session = ctx.info.id,
            "cannot record the end of the session: {e}"
        );
    }
    info!(session = ctx.info.id, "session closed: {reason}");
    if fatal_sent {
        // Closing a socket with unread input resets the connection, which can
        // destroy the FATAL before the client reads it: drain what the client
        // is still sending, briefly and boundedly, before closing.
        let mut rest = (&mut client_side.client).take(DRAIN_BYTES);
        let mut sink = tokio::io::sink();
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::copy(&mut rest, &mut sink),
        )
        .await;
    }
    Ok(())
}

enum End {
    Terminated,
    ClientClosed,
    Upstream,
    /// A read from or write to either side failed while relaying the
    /// database's answers.
    UpstreamFailed(String),
    /// The database reported a setting that changes how it reads SQL text
    /// (`name value`): nothing more may reach it.
    SettingChanged(String),
    Fatal(String),
    Shutdown,
    /// Ended from outside (a block, a kill, a revocation).
    Killed(Termination),
    /// The ledger could not record a read already sent (see [`Unrecorded`]).
    Unrecorded(String),
}

/// Appends deferred Response events shortly after they appear, so a quiet
/// session's last responses do not wait for its next statement.
async fn flush_deferred<C: Services>(ctx: &Context<C>) {
    loop {
        ctx.flush.notified().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let events = std::mem::take(&mut ctx.tracker.lock().expect("tracker").deferred);
        if !events.is_empty() {
            if let Err(e) = ctx.shared.ledger().append_pending(events).await {
                warn!(session = ctx.info.id, "cannot record responses: {e}");
            }
        }
    }
}

struct ClientSide<'c, C, R> {
    ctx: &'c Context<C>,
    client: ReadAhead<R>,
    upstream: BufWriter<tokio::io::WriteHalf<Box<dyn Stream>>>,
    /// The prepared statements PostgreSQL holds (see [`Names`]).
    statements: Names<Prepared>,
    /// The portals PostgreSQL holds.
    portals: Names<Portal>,
    skip_until_sync: bool,
    /// The number of the current stretch of extended-protocol messages:
    /// the Syncs (and simple Queries) sent so far.
    stretch: u64,
    /// An extended-protocol message that can fail came since the last Sync.
    stretch_open: bool,
    query: u64,
    next_denial: u64,
    /// The ledger's commit role, taken with a pure read's record (see
    /// [`ClientSide::record`]) and kept until the read is sent: at
    /// most to the end of the next message, and never while waiting for
    /// the client, since every other session's record waits for it.
    turn: Option<CommitTurn>,
}

/// A statement as the client sent it, for its record.
struct Arrival<'s> {
    sql: &'s str,
    /// Bind parameters (extended protocol).
    params: Vec<Param>,
    /// Prepared statement name (extended protocol).
    statement: Option<String>,
    /// Portal name (extended protocol).
    portal: Option<String>,
    protocol: Protocol,
}

/// The verdict for a whole query, ready for recording and enforcement.
pub(crate) struct Judgement {
    pub(crate) action: Action,
    pub(crate) rule: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) class: StatementClass,
    pub(crate) tables: Vec<String>,
    pub(crate) columns: Vec<String>,
    /// What to mask, when masks bind the session and it may run.
    pub(crate) mask: Option<Arc<MaskSpec>>,
    /// Some statement is DDL.
    ddl: bool,
    /// Policy's verdict on each statement of the string, in order.
    pub(crate) statements: Vec<StatementVerdict>,
    /// Every statement of the string only reads, as the catalog shows it
    /// (the calls of the views it reads included): see [`reads_only`].
    pub(crate) only_reads: bool,
}

/// Whether a statement may go to the database while its record commits
/// (issue 15): allowed as it is (nothing to mask or hold), and every
/// statement of the string a plain read, which the classifier grants only
/// to reads that call nothing but known read-only builtins (the calls of
/// the views they read included) and take no row locks. Such a statement
/// changes nothing, so a gateway that dies before the commit leaves no
/// change the ledger does not show; and its results wait for the commit,
/// so the client sees nothing unrecorded.
fn reads_only(j: &Judgement) -> bool {
    j.action == Action::Allow && j.mask.is_none() && j.only_reads
}

/// Whether every statement of a (non-empty) classification only reads.
fn all_read(classification: &Classification) -> bool {
    !classification.statements.is_empty()
        && classification
            .statements
            .iter()
            .all(|s| s.class == StatementClass::Read)
}

fn judge(verdict: &Verdict, classification: &Classification) -> Judgement {
    let deciding = classification.statements.get(verdict.statement);
    let mut tables: Vec<String> = classification
        .statements
        .iter()
        .flat_map(|s| s.tables.iter().cloned())
        .collect();
    tables.sort();
    tables.dedup();
    let mut columns: Vec<String> = classification
        .statements
        .iter()
        .flat_map(|s| s.columns.iter().cloned())
        .collect();
    columns.sort();
    columns.dedup();
    let class = deciding.map_or(StatementClass::Unknown, |s| s.class);
    let (action, message) = match verdict.action {
        Action::Allow => (Action::Allow, None),
        Action::Deny => (Action::Deny, verdict.message.clone()),
        Action::RequireApproval => (Action::RequireApproval, verdict.message.clone()),
        Action::Mask => (Action::Mask, verdict.message.clone()),
    };
    let message = match (action, message) {
        (Action::Deny, None) => Some("statement not permitted by Gatehouse policy".to_owned()),
        (_, m) => m,
    };
    let message = match (&message, deciding.and_then(|s| s.reason.as_ref())) {
        (Some(m), Some(reason)) if class == StatementClass::Unknown => {
            Some(format!("{m} ({reason})"))
        }
        _ => message,
    };
    Judgement {
        action,
        rule: verdict.rule.clone(),
        message,
        class,
        tables,
        columns,
        mask: None,
        ddl: classification
            .statements
            .iter()
            .any(|s| s.class == StatementClass::Ddl),
        statements: Vec::new(),
        only_reads: false,
    }
}

impl<C: Services, R: AsyncBufRead + Unpin> ClientSide<'_, C, R> {
    async fn run(&mut self) -> std::io::Result<End> {
        loop {
            if self.turn.is_some() && !self.frame_waiting().await {
                self.give_up_turn();
            }
            let f = match read_frame(&mut self.client, self.ctx.shared.max_frame()).await {
                Ok(f) => f,
                Err(FrameError::Closed) => return Ok(End::ClientClosed),
                Err(FrameError::Io(e)) => return Err(e),
                Err(e) => {
                    return Ok(End::Fatal(format!(
                        "Gatehouse refused a client message: {e}"
                    )))
                }
            };
            match self.frame(f).await {
                Ok(Some(end)) => return Ok(end),
                Ok(None) => {}
                Err(FrameError::Io(e)) => return Err(e),
                Err(e) => {
                    return Ok(End::Fatal(format!(
                        "Gatehouse refused a client message: {e}"
                    )))
                }
            }
        }
    }

    /// Whether a whole message from the client is at hand: buffered, or
    /// readable now without waiting. (A part of one is not: reading the
    /// rest could wait for the client as long as it likes.)
    async fn frame_waiting(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(
                match std::pin::Pin::new(&mut self.client).poll_fill_buf(cx) {
                    std::task::Poll::Ready(Ok(b)) if b.len() >= 5 => {
                        let len = i32::from_be_bytes([b[1], b[2], b[3], b[4]]);
                        usize::try_from(len).is_ok_and(|len| b.len() > len)
                    }
                    _ => false,
                },
            )
        })
        .await
    }

    async fn frame(&mut self, f: Frame) -> Result<Option<End>, FrameError> {
        // A commit role kept from an Execute lasts until its stretch is
        // sent (the Sync or Flush right behind it), or is given up now.
        let sends = matches!(f.tag(), b'S' | b'H');
        if !sends {
            self.give_up_turn();
        }
        let handled = self.message(f).await;
        if sends {
            self.give_up_turn();
        }
        handled
    }

    /// Gives up the commit role if writing `len` more bytes for the
    /// database could wait on the socket: the database may be waiting for
    /// this session to read its answers, which may wait for the commit.
    fn make_room(&mut self, len: usize) {
        if self.upstream.buffer().len() + len > UPSTREAM_BUFFER {
            self.give_up_turn();
        }
    }

    /// Writes `bytes` for the database and sends everything buffered. The
    /// commit role, if held, is given up once they are sent, or as soon as
    /// sending would have to wait (see [`ClientSide::make_room`]).
    async fn send_upstream(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.make_room(bytes.len());
        self.upstream.write_all(bytes).await?;
        if self.turn.is_some() {
            let tried = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::pin::Pin::new(&mut self.upstream).poll_flush(cx))
            })
            .await;
            self.give_up_turn();
            if let std::task::Poll::Ready(sent) = tried {
                return sent;
            }
        }
        self.upstream.flush().await
    }

    async fn message(&mut self, f: Frame) -> Result<Option<End>, FrameError> {
        if matches!(f.tag(), b'P' | b'B' | b'E' | b'C' | b'D') {
            self.stretch_open = true;
        }
        match f.tag() {
            b'Q' => {
                if self.skip_until_sync || !self.runs_simple_query().await? {
                    // PostgreSQL is skipping to Sync: it ignores the Query.
                    return Ok(None);
                }
                let q: Query = f.decode("Query")?;
                self.simple_query(f, q.query).await?;
            }
            b'P' => {
                if self.skip_until_sync {
                    return Ok(None);
                }
                let p: Parse = f.decode("Parse")?;
                self.parse(f, p).await?;
            }
            b'B' => {
                if self.skip_until_sync {
                    return Ok(None);
                }
                let b: Bind = f.decode("Bind")?;
                self.bind(f, b).await?;
            }
            b'E' => {
                if self.skip_until_sync {
                    return Ok(None);
                }
                let e: Execute = f.decode("Execute")?;
                self.execute(f, e).await?;
            }
            b'C' => {
                if self.skip_until_sync {
                    return Ok(None);
                }
                let c: Close = f.decode("Close")?;
                let name = c.name.unwrap_or_default();
                let outcome = Outcome::new(self.stretch);
                if c.target_type == b'S' {
                    self.statements.close(&name, outcome.clone());
                } else {
                    self.portals.close(&name, outcome.clone());
                }
                self.push(Pending::Close(outcome));
                self.upstream.write_all(&f.bytes).await?;
            }
            b'D' => {
                if !self.skip_until_sync {
                    self.push(Pending::Describe(Describer::Client));
                    self.upstream.write_all(&f.bytes).await?;
                }
            }
            b'H' => {
                if !self.skip_until_sync {
                    self.send_upstream(&f.bytes).await?;
                }
            }
            b'S' => {
                if self.ctx.tracker.lock().expect("tracker").copy_in {
                    // Ignored by PostgreSQL: nothing ends here.
                    self.upstream.write_all(&f.bytes).await?;
                    self.upstream.flush().await?;
                    return Ok(None);
                }
                self.skip_until_sync = false;
                self.stretch_open = false;
                self.stretch += 1;
                self.push(Pending::Sync(self.next_denial));
                self.send_upstream(&f.bytes).await?;
            }
            b'd' => self.upstream.write_all(&f.bytes).await?,
            b'c' | b'f' => {
                {
                    let mut t = self.ctx.tracker.lock().expect("tracker");
                    t.copy_in = false;
                    t.pending.push_back(Pending::CopyDone);
                }
                self.upstream.write_all(&f.bytes).await?;
                self.upstream.flush().await?;
            }
            b'X' => {
                self.upstream.write_all(&f.bytes).await?;
                self.upstream.flush().await?;
                return Ok(Some(End::Terminated));
            }
            b'F' => {
                if self.skip_until_sync || !self.runs_simple_query().await? {
                    return Ok(None);
                }
                let error = frame::error(
                    "ERROR",
                    "0A000",
                    "Gatehouse refuses fast-path FunctionCall messages: they cannot be judged by policy; call the function from SQL instead",
                );
                warn!(session = self.ctx.info.id, "refused a FunctionCall message");
                self.deny_simple(error).await?;
            }
            other => {
                return Ok(Some(End::Fatal(format!(
                "Gatehouse refused a client message: unexpected message type {:?} after startup",
                other as char
            ))))
            }
        }
        Ok(None)
    }

    /// Whether PostgreSQL will run a simple Query (or FunctionCall) sent
    /// now. In the middle of an extended-protocol stretch it runs only if
    /// nothing since the last Sync failed; otherwise it skips it, as every
    /// message until Sync. The gateway cannot know that from the client's
    /// messages, so it asks: a Flush makes PostgreSQL answer everything
    /// forwarded so far, and the answers say whether an error came. A Query
    /// that runs ends the stretch.
    async fn runs_simple_query(&mut self) -> std::io::Result<bool> {
        if !self.stretch_open {
            return Ok(true);
        }
        if self.ctx.tracker.lock().expect("tracker").copy_in {
            // PostgreSQL fails the COPY on it; judged and recorded like any.
            return Ok(true);
        }
        self.upstream.write_all(&frame::message(b'H', &[])).await?;
        self.upstream.flush().await?;
        let skipping = loop {
            let answered = self.ctx.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            if let Some(skipping) = stretch_failed(&self.ctx.tracker.lock().expect("tracker")) {
                break skipping;
            }
            answered.await;
        };
        if !skipping {
            self.stretch_open = false;
            self.stretch += 1;
        }
        Ok(!skipping)
    }

    /// Asks upstream to describe `portal` right before a masked Execute: the
    /// answer says where each result column comes from and in which format
    /// (from Bind), whether or not the client described it itself.
    async fn describe_portal(&mut self, portal: &str) -> std::io::Result<()> {
        let mut body = BytesMut::with_capacity(portal.len() + 2);
        body.put_u8(b'P');
        body.put_slice(portal.as_bytes());
        body.put_u8(0);
        self.push(Pending::Describe(Describer::Gateway));
        self.upstream.write_all(&frame::message(b'D', &body)).await
    }

    fn push(&self, p: Pending) {
        self.ctx
            .tracker
            .lock()
            .expect("tracker")
            .pending
            .push_back(p);
    }

    fn denial_error(&self, j: &Judgement) -> BytesMut {
        let message = j
            .message
            .clone()
            .unwrap_or_else(|| "statement not permitted by Gatehouse policy".into());
        let detail = match &j.rule {
            Some(rule) => format!("denied by Gatehouse rule \"{rule}\""),
            None => "no Gatehouse rule allows it (default deny)".to_owned(),
        };
        frame::refusal_with(
            "ERROR",
            "42501",
            Refusal::PolicyDenied,
            &message,
            Some(&detail),
        )
    }

    fn marker(&mut self, error: BytesMut) -> String {
        self.next_denial += 1;
        self.ctx
            .tracker
            .lock()
            .expect("tracker")
            .denials
            .insert(self.next_denial, error);
        format!("{}_{}", self.ctx.marker, self.next_denial)
    }

    /// Denies a simple-protocol message: a failing query takes its place.
    async fn deny_simple(&mut self, error: BytesMut) -> std::io::Result<()> {
        let mut q = BytesMut::from(self.marker(error).as_bytes());
        q.put_u8(0);
        self.push(Pending::Internal(self.next_denial));
        self.upstream.write_all(&frame::message(b'Q', &q)).await?;
        self.upstream.flush().await
    }

    /// Denies an extended-protocol message: a failing Parse takes its place
    /// and everything up to Sync is dropped, as PostgreSQL does after an error.
    /// The Parse names a statement (the marker): a failing Parse of the
    /// unnamed statement would drop the client's unnamed statement.
    async fn deny_extended(&mut self, error: BytesMut) -> std::io::Result<()> {
        let marker = self.marker(error);
        let mut p = BytesMut::new();
        p.put_slice(marker.as_bytes());
        p.put_u8(0);
        p.put_slice(marker.as_bytes());
        p.put_u8(0);
        p.put_i16(0);
        self.push(Pending::Parse(Outcome::new(self.stretch)));
        self.upstream.write_all(&frame::message(b'P', &p)).await?;
        self.skip_until_sync = true;
        Ok(())
    }

    /// Records a statement (with the responses deferred until now): its
    /// record is committed before this returns, or, for a pure read (see
    /// [`reads_only`]), queued, with the outcome its results must wait for;
    /// the commit role, when this caller gets it, is then kept in
    /// [`ClientSide::turn`] until the read has been sent. On failure,
    /// returns the error to send instead.
    async fn record(
        &mut self,
        arrival: Arrival<'_>,
        j: &Judgement,
    ) -> Result<Option<AppendOutcome>, BytesMut> {
        let events = self.record_events(arrival, j);
        self.give_up_turn();
        let ctx = self.ctx;
        let (turn, outcome) = match ctx.shared.ledger().queue_pending(events) {
            Ok(queued) => queued,
            Err(e) => return Err(self.unrecorded(&e)),
        };
        if reads_only(j) {
            self.turn = turn;
            self.recorded(j);
            return Ok(Some(outcome));
        }
        drop(turn);
        match outcome.await {
            Ok(_) => {
                self.recorded(j);
                Ok(None)
            }
            Err(e) => Err(self.unrecorded(&e)),
        }
    }

    /// Commits whatever this session queued while holding the commit role
    /// (other sessions' appends wait until it does).
    fn give_up_turn(&mut self) {
        self.turn = None;
    }

    /// The statement's record (one event), with the responses deferred
    /// until now in front of it.
    fn record_events(&mut self, arrival: Arrival<'_>, j: &Judgement) -> Vec<PendingEvent> {
        let Arrival {
            sql,
            params,
            statement,
            portal,
            protocol,
        } = arrival;
        self.query += 1;
        let id = &self.ctx.info;
        let mut events = std::mem::take(&mut self.ctx.tracker.lock().expect("tracker").deferred);
        events.push(
            EventBody::from(Statement {
                session: id.id,
                identity: id.identity.clone(),
                query: self.query,
                sql: sql.to_owned(),
                params,
                statement,
                portal,
                protocol,
                action: j.action,
                rule: j.rule.clone(),
                class: j.class,
                tables: j.tables.clone(),
                columns: j.columns.clone(),
                message: j.message.clone(),
            })
            .to_pending(),
        );
        events
    }

    /// What follows a statement's record: its counters and log line.
    fn recorded(&self, j: &Judgement) {
        let id = &self.ctx.info;
        id.activity.judged();
        if j.action == Action::Deny {
            info!(
                session = id.id,
                identity = id.identity,
                rule = j.rule.as_deref().unwrap_or("-"),
                class = class_name(j.class),
                "statement denied: {}",
                j.message.as_deref().unwrap_or("no rule allows it")
            );
        }
        self.ctx.shared.observe(Observation::Statement {
            identity: &id.identity,
            target: &id.target.name,
            action: j.action,
            class: j.class,
            rule: j.rule.as_deref(),
        });
    }

    /// The refusal for a statement the ledger could not record.
    fn unrecorded(&self, e: &AppendError) -> BytesMut {
        warn!(
            session = self.ctx.info.id,
            "refusing a statement the ledger cannot record: {e}"
        );
        frame::refusal(
            "ERROR",
            "58030",
            Refusal::LedgerUnavailable,
            &format!("Gatehouse could not record this statement, so it was not run: {e}"),
        )
    }

    /// The error for a statement of a blocked identity: checked right before
    /// anything executable goes upstream, after the statement was recorded,
    /// so a block stops even statements already judged.
    fn blocked_error(&self) -> Option<BytesMut> {
        let reason = self.ctx.shared.blocked(&self.ctx.info.identity)?;
        Some(frame::refusal(
            "ERROR",
            "42501",
            Refusal::IdentityBlocked,
            &format!(
                "identity {} is blocked by Gatehouse: {reason}",
                self.ctx.info.identity
            ),
        ))
    }

    /// Holds a statement until approvers release it, deny it, or time runs
    /// out; on anything but a release, returns the error to send instead.
    /// The client's connection (and transaction) stays open meanwhile;
    /// ending the session or blocking the identity refuses the request.
    async fn hold(&mut self, sql: &str, params: Vec<Param>, j: &Judgement) -> Result<(), BytesMut> {
        let shared = &self.ctx.shared;
        let rule = j.rule.clone().unwrap_or_default();
        let settings = shared
            .policy()
            .rule(&rule)
            .and_then(|r| r.approval)
            .unwrap_or_default();
        let timeout = Duration::from_secs(settings.timeout_seconds);
        let request = ApprovalRequested {
            approval: 0,
            session: self.ctx.info.id,
            identity: self.ctx.info.identity.clone(),
            query: self.query,
            sql: sql.to_owned(),
            binding: CborBytes(binding(sql, &params).to_vec()),
            params,
            class: j.class,
            rule,
            quorum: settings.approvers,
            expires_at: now_nanos().saturating_add(timeout.as_nanos() as u64),
            fingerprint: fingerprint(sql),
        };
        let (id, outcome) = match shared.request_approval(request).await {
            Ok(held) => held,
            Err(e) => {
                warn!(
                    session = self.ctx.info.id,
                    "cannot record an approval request: {e}"
                );
                return Err(frame::refusal(
                    "ERROR",
                    "58030",
                    Refusal::LedgerUnavailable,
                    &format!("Gatehouse could not record the approval request, so the statement was not run: {e}"),
                ));
            }
        };
        info!(
            session = self.ctx.info.id,
            approval = id,
            "statement held for approval"
        );
        let _ = self.ctx.notices.send(held_notice(
            id,
            j.rule.as_deref().unwrap_or_default(),
            settings.approvers,
            timeout,
            &self.ctx.info.identity,
            shared.approvers(),
        ));
        // The statement is held for the client that asked: it is withdrawn
        // when the client cancels it or goes away, and never runs after.
        let held = self.ctx.info.held.clone();
        let cancelled = held.cancelled.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        held.holding
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let waited = {
            let client = &mut self.client;
            let gone = async {
                // Messages the client pipelined behind the held statement
                // are read ahead and kept for later, so that the end of the
                // stream, or a Terminate, behind them is seen.
                loop {
                    match client.read_ahead().await {
                        Ahead::Gone => return true,
                        Ahead::More => {}
                        Ahead::Full => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                outcome = tokio::time::timeout(timeout, outcome) => Waited::Decided(outcome),
                () = &mut cancelled => Waited::Withdrawn(Withdrawal::Cancelled),
                true = gone => Waited::Withdrawn(Withdrawal::ClientGone),
            }
        };
        held.holding
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let outcome = match waited {
            Waited::Decided(Ok(Ok(outcome))) => outcome,
            Waited::Decided(Ok(Err(_))) => {
                Approval::Withdrawn("the approval request was withdrawn".into())
            }
            Waited::Decided(Err(_)) => shared.expire_approval(id).await.unwrap_or_else(|e| {
                Approval::Withdrawn(format!("the timeout could not be recorded: {e}"))
            }),
            Waited::Withdrawn(why) => {
                let reason = match why {
                    Withdrawal::Cancelled => "withdrawn: the client cancelled the statement",
                    Withdrawal::ClientGone => "withdrawn: the client disconnected",
                };
                if let Err(e) = shared.withdraw_approval(id, reason).await {
                    // Decided meanwhile (an approval is not acted on: the
                    // client withdrew), or the withdrawal is unrecorded.
                    warn!(session = self.ctx.info.id, approval = id, "{reason}: {e}");
                }
                info!(session = self.ctx.info.id, approval = id, "{reason}");
                return Err(match why {
                    Withdrawal::Cancelled => frame::refusal(
                        "ERROR",
                        "57014",
                        Refusal::ApprovalWithdrawn,
                        &format!(
                            "canceling statement due to user request: Gatehouse withdrew approval request {id}, and the statement did not run"
                        ),
                    ),
                    Withdrawal::ClientGone => frame::refusal(
                        "ERROR",
                        "08006",
                        Refusal::ApprovalWithdrawn,
                        &format!("the client disconnected; approval request {id} was withdrawn"),
                    ),
                });
            }
        };
        match outcome {
            Approval::Approved => Ok(()),
            Approval::Refused(why) => Err(frame::refusal(
                "ERROR",
                "42501",
                Refusal::ApprovalDenied,
                &format!("Gatehouse did not run this statement (approval request {id}): {why}"),
            )),
            Approval::Withdrawn(why) => Err(frame::refusal(
                "ERROR",
                "42501",
                Refusal::ApprovalWithdrawn,
                &format!("Gatehouse did not run this statement (approval request {id}): {why}"),
            )),
            Approval::Expired => Err(frame::refusal(
                "ERROR",
                "42501",
                Refusal::ApprovalExpired,
                &format!(
                    "Gatehouse did not run this statement (approval request {id}): no approver decided in time; it may be sent again, to be held again"
                ),
            )),
        }
    }

    /// A statement about to run that prepares, deallocates, declares or
    /// closes by name (SQL shares these names with the protocol): what the
    /// relay knew under those names is forgotten, so a later Bind or
    /// Execute of one is refused rather than judged as the statement the
    /// name held before. Without it, `DEALLOCATE s1; PREPARE s1 AS DELETE
    /// ...` and a Bind of `s1` ran the DELETE recorded as `s1`'s old text.
    fn forget_renamed(&mut self, sql: &str, classification: &Classification) {
        use gatehouse_engine::classify::{namespace_changes, NAMESPACE_COMMANDS};
        if !classification
            .statements
            .iter()
            .any(|s| NAMESPACE_COMMANDS.contains(&s.command.as_str()))
        {
            return;
        }
        let changes = namespace_changes(sql);
        if changes.all_statements {
            self.statements = Names::default();
        }
        for name in &changes.statements {
            self.statements.forget(name);
        }
        if changes.all_portals {
            self.portals = Names::default();
        }
        for name in &changes.portals {
            self.portals.forget(name);
        }
    }

    /// An SQL `FETCH` or `MOVE` of a portal bound by the protocol would run that
    /// portal's statement (judged at Bind, possibly held for approval, its
    /// results unmasked) as a read of nothing: refused. Such a portal is run
    /// with Execute, where it is judged and recorded as its statement.
    fn refuse_fetch_of_protocol_portals(
        &self,
        sql: &str,
        classification: &Classification,
        j: &mut Judgement,
    ) {
        if j.action == Action::Deny
            || !self.portals.any()
            || !classification
                .statements
                .iter()
                .any(|s| matches!(s.command.as_str(), "FETCH" | "MOVE"))
        {
            return;
        }
        let cursors = gatehouse_engine::classify::fetched_cursors(sql);
        if let Some(name) = cursors.iter().find(|c| self.portals.may_hold(c)) {
            j.action = Action::Deny;
            j.rule = None;
            j.message = Some(format!(
                "portal \"{name}\" was bound by the extended protocol: Gatehouse runs it only \
                 with Execute, where it is judged as the statement it holds, not with FETCH"
            ));
        }
    }

    async fn simple_query(&mut self, f: Frame, sql: String) -> std::io::Result<()> {
        let classification = self.ctx.shared.classify(&sql);
        let mut j = decide(self.ctx, &sql, &classification).await;
        self.refuse_fetch_of_protocol_portals(&sql, &classification, &mut j);
        let arrival = Arrival {
            sql: &sql,
            params: vec![],
            statement: None,
            portal: None,
            protocol: Protocol::Simple,
        };
        let queued = match self.record(arrival, &j).await {
            Ok(queued) => queued,
            Err(error) => return self.deny_simple(error).await,
        };
        match j.action {
            Action::Allow | Action::Mask => {}
            Action::RequireApproval => {
                if let Err(error) = self.hold(&sql, vec![], &j).await {
                    return self.deny_simple(error).await;
                }
            }
            _ => {
                let error = self.denial_error(&j);
                self.deny_simple(error).await?;
                return contain_if_needed(self.ctx).await;
            }
        }
        if let Some(error) = self.blocked_error() {
            self.settle(queued).await;
            return self.deny_simple(error).await;
        }
        self.forget_renamed(&sql, &classification);
        self.ctx.info.activity.started(&sql);
        let mut exec = Exec::new(self.query, true).judged(&j);
        exec.record = queued;
        self.push(Pending::Exec(Box::new(exec)));
        // With a pure read, its record commits while it runs.
        self.send_upstream(&f.bytes).await
    }

    /// Waits for a queued record before its statement is refused, so the
    /// refusal follows the record as every other statement's does.
    async fn settle(&mut self, queued: Option<AppendOutcome>) {
        self.give_up_turn();
        if let Some(outcome) = queued {
            let _ = outcome.await;
        }
    }

    async fn parse(&mut self, f: Frame, p: Parse) -> std::io::Result<()> {
        let name = p.name.unwrap_or_default();
        let classification = self.ctx.shared.classify(&p.query);
        let j = decide(self.ctx, &p.query, &classification).await;
        // A statement needing approval is held at Execute, with its parameters.
        let denied = j.action == Action::Deny;
        let prepared = Prepared {
            sql: p.query.clone(),
            classification,
            denied,
        };
        if denied {
            // Kept under its name, so that a Bind of it is refused as
            // denied; PostgreSQL never sees it.
            let refused = Outcome::new(self.stretch);
            refused.resolve(Answer::Done);
            self.statements.set(
                &name,
                prepared,
                refused,
                OnFailure::KeepsPrevious,
                OnFailure::KeepsPrevious,
            );
            let arrival = Arrival {
                sql: &p.query,
                params: vec![],
                statement: Some(name),
                portal: None,
                protocol: Protocol::Extended,
            };
            let error = match self.record(arrival, &j).await {
                Ok(_) => self.denial_error(&j),
                Err(e) => e,
            };
            self.deny_extended(error).await?;
            return contain_if_needed(self.ctx).await;
        }
        let outcome = Outcome::new(self.stretch);
        // PostgreSQL drops the old unnamed statement before it parses a new
        // one; a named one that fails leaves an existing one in place.
        let on_failure = if name.is_empty() {
            OnFailure::LeavesNothing
        } else {
            OnFailure::KeepsPrevious
        };
        self.statements.set(
            &name,
            prepared,
            outcome.clone(),
            on_failure,
            OnFailure::KeepsPrevious,
        );
        self.push(Pending::Parse(outcome));
        self.upstream.write_all(&f.bytes).await
    }

    async fn bind(&mut self, f: Frame, b: Bind) -> std::io::Result<()> {
        let statement = b.statement_name.unwrap_or_default();
        let portal_name = b.portal_name.unwrap_or_default();
        let Some(prepared) = held(&self.statements, &statement, self.stretch).await else {
            // No statement by that name in PostgreSQL (its Parse failed, or
            // never came), or one an SQL-level PREPARE made, whose text
            // nobody judged here. Fail closed, with the error PostgreSQL
            // gives for a missing one.
            self.portals.forget(&portal_name);
            let error = frame::refusal(
                "ERROR",
                "26000",
                Refusal::UnknownName,
                &format!("prepared statement \"{statement}\" does not exist as far as Gatehouse saw it parsed (statements prepared with SQL PREPARE cannot be bound); prepare it with Parse"),
            );
            return self.deny_extended(error).await;
        };
        let (sql, classification) = (prepared.sql.clone(), prepared.classification.clone());
        if prepared.denied {
            self.portals.forget(&portal_name);
            let j = decide(self.ctx, &sql, &classification).await;
            let error = self.denial_error(&j);
            return self.deny_extended(error).await;
        }
        let formats = b.parameter_format_codes;
        let result_formats = b.result_column_format_codes;
        let params = b
            .parameters
            .into_iter()
            .enumerate()
            .map(|(i, v)| Param {
                format: match formats.len() {
                    0 => 0,
                    1 => formats[0] as u16,
                    _ => formats.get(i).copied().unwrap_or(0) as u16,
                },
                value: v.map(|v| CborBytes(v.to_vec())),
            })
            .collect();
        let outcome = Outcome::new(self.stretch);
        // An error aborts the transaction, and with it every portal.
        self.portals.set(
            &portal_name,
            Portal {
                statement,
                sql,
                classification,
                params,
                result_formats,
            },
            outcome.clone(),
            OnFailure::LeavesNothing,
            OnFailure::LeavesNothing,
        );
        self.push(Pending::Bind(outcome));
        self.upstream.write_all(&f.bytes).await
    }

    async fn execute(&mut self, f: Frame, e: Execute) -> std::io::Result<()> {
        let portal_name = e.name.unwrap_or_default();
        let Some(portal) = held(&self.portals, &portal_name, self.stretch).await else {
            // A portal the gateway did not see bound: none at all, or a
            // cursor an SQL-level DECLARE made. Fail closed, with the error
            // PostgreSQL gives for a missing one.
            let error = frame::refusal(
                "ERROR",
                "34000",
                Refusal::UnknownName,
                &format!("Gatehouse did not see portal \"{portal_name}\" bound, so it does not execute it; fetch from cursors with FETCH"),
            );
            return self.deny_extended(error).await;
        };
        let (sql, classification) = (portal.sql.clone(), portal.classification.clone());
        let params = portal.params.clone();
        let statement = portal.statement.clone();
        let result_formats = portal.result_formats.clone();
        // Policy may have changed since Parse: judge again (classification is cached).
        let mut j = decide(self.ctx, &sql, &classification).await;
        self.refuse_fetch_of_protocol_portals(&sql, &classification, &mut j);
        let arrival = Arrival {
            sql: &sql,
            params: params.clone(),
            statement: Some(statement),
            portal: Some(portal_name.clone()),
            protocol: Protocol::Extended,
        };
        let queued = match self.record(arrival, &j).await {
            Ok(queued) => queued,
            Err(error) => return self.deny_extended(error).await,
        };
        match j.action {
            Action::Allow | Action::Mask => {}
            Action::RequireApproval => {
                if let Err(error) = self.hold(&sql, params, &j).await {
                    return self.deny_extended(error).await;
                }
            }
            _ => {
                let error = self.denial_error(&j);
                self.deny_extended(error).await?;
                return contain_if_needed(self.ctx).await;
            }
        }
        if let Some(error) = self.blocked_error() {
            self.settle(queued).await;
            return self.deny_extended(error).await;
        }
        self.forget_renamed(&sql, &classification);
        if j.mask.is_some() {
            self.describe_portal(&portal_name).await?;
        }
        let mut exec = Exec::new(self.query, false).judged(&j);
        exec.result_formats = Some(result_formats);
        exec.record = queued;
        self.ctx.info.activity.started(&sql);
        self.push(Pending::Exec(Box::new(exec)));
        self.make_room(f.bytes.len());
        self.upstream.write_all(&f.bytes).await
    }
}

/// A NoticeResponse saying what Gatehouse masked in `e`'s result, then
/// `frame` (the message it goes in front of); `None` when nothing was.
fn masked_notice(e: &Exec, frame: &[u8]) -> Option<BytesMut> {
    let text = e.mask.as_ref()?.notice_text()?;
    let mut out = frame::masked_notice(&text);
    out.extend_from_slice(frame);
    Some(out)
}

/// The notice a client gets when its statement is held: which request, how
/// many approvals it needs by when, who can give them, and how to withdraw.
fn held_notice(
    id: u64,
    rule: &str,
    quorum: u64,
    timeout: Duration,
    identity: &str,
    approvers: Vec<String>,
) -> BytesMut {
    let approvers: Vec<String> = approvers
        .into_iter()
        .filter(|name| name != identity)
        .collect();
    let who = if approvers.is_empty() {
        "no operator holds the approver role yet (gatehouse operator add NAME --role approver)"
            .to_owned()
    } else {
        format!("approvers: {}", approvers.join(", "))
    };
    frame::held_notice(
        &format!(
            "Gatehouse is holding this statement for approval: request {id} (rule \"{rule}\") needs {quorum} approval{} within {} s; {who}",
            if quorum == 1 { "" } else { "s" },
            timeout.as_secs()
        ),
        &format!(
            "An approver runs `gatehouse approve {id}` or `gatehouse deny {id} --reason TEXT`; cancel the statement to withdraw the request."
        ),
    )
}

/// What PostgreSQL holds under `name` for a message sent now in stretch
/// `stretch`, waiting for answers to earlier stretches when it depends on
/// them (their Syncs have gone upstream, so the answers are coming).
async fn held<T>(names: &Names<T>, name: &str, stretch: u64) -> Option<Arc<T>> {
    loop {
        match names.lookup(name, stretch) {
            Lookup::Found(p) => return Some(p),
            Lookup::Missing => return None,
            Lookup::Unsure(outcome) => {
                outcome.wait().await;
            }
        }
    }
}

/// How the wait for an approval ended.
enum Waited<T> {
    /// A decision or the timeout.
    Decided(T),
    /// The client withdrew the statement.
    Withdrawn(Withdrawal),
}

/// Why a held statement was withdrawn.
#[derive(Clone, Copy)]
enum Withdrawal {
    /// A CancelRequest (Ctrl-C in psql, a driver's timeout).
    Cancelled,
    /// The client's connection ended.
    ClientGone,
}

/// Judges a statement for this session (see [`judge_statement`]).
async fn decide<C: Services>(
    ctx: &Context<C>,
    sql: &str,
    classification: &Classification,
) -> Judgement {
    let policy = ctx.shared.policy();
    let own = ctx
        .own_relations
        .lock()
        .map(|own| own.clone())
        .unwrap_or_default();
    judge_statement(
        ctx.shared.as_ref(),
        &policy,
        &ctx.info.identity,
        &ctx.info.target,
        sql,
        classification,
        &own,
    )
    .await
}

/// The gateway's one decision pipeline, for a session's statements and
/// for `gatehouse policy explain` alike: policy judged through the views
/// the statement names (from the target's catalog), masking (which needs
/// the catalog, hence async), grants, blocks.
pub(crate) async fn judge_statement<C: Services>(
    shared: &C,
    policy: &Policy,
    identity: &str,
    target: &Target,
    sql: &str,
    classification: &Classification,
    own: &BTreeSet<String>,
) -> Judgement {
    let subject = Subject {
        identity,
        target: &target.name,
    };
    let (mut verdict, folded) =
        decide_through_views(shared, target, policy, &subject, classification, own).await;
    let mask = masking::prepare(shared.masking(), target, sql, classification, &mut verdict).await;
    // Recorded and enforced as the catalog shows the statement: a call a
    // view makes is the statement's call.
    let judged = folded.as_ref().unwrap_or(classification);
    let mut j = judge(&verdict, judged);
    j.mask = mask;
    j.statements = verdict.statements;
    j.only_reads = all_read(judged);
    if j.action == Action::RequireApproval {
        let grant = shared.active_grant(identity, &fingerprint(sql), now_nanos());
        if let Some(g) = grant {
            j.action = Action::Allow;
            j.message = Some(format!(
                "allowed by the grant of approval {} (approved by {}) until {}",
                g.approval,
                g.approvers.join(", "),
                gatehouse_verify::report::rfc3339(g.until)
            ));
        }
    }
    if let Some(reason) = shared.blocked(identity) {
        j.action = Action::Deny;
        j.rule = None;
        j.message = Some(format!(
            "identity {identity} is blocked by Gatehouse: {reason}"
        ));
    }
    j
}

/// Policy's verdict on a statement as it reaches through the views it
/// names: deny rules also judged on the base columns they read (see
/// `Policy::decide_with_views`), and the functions they call judged as
/// calls of the statement (see `classify::with_view_calls`). The views come
/// from the target's catalog (cached); when it cannot be read, statements
/// that name relations are denied, since a view could hide either. With
/// the verdict: the classification with those calls folded in, when the
/// catalog added any.
async fn decide_through_views<C: Services>(
    shared: &C,
    target: &Target,
    policy: &Policy,
    subject: &Subject<'_>,
    classification: &Classification,
    own: &BTreeSet<String>,
) -> (Verdict, Option<Classification>) {
    let relations: Vec<String> = classification
        .statements
        .iter()
        .flat_map(|s| s.tables.iter().cloned())
        .collect();
    if relations.is_empty() {
        return (policy.decide(subject, classification), None);
    }
    let reads = match shared
        .masking()
        .catalog
        .view_reads(target, &relations)
        .await
    {
        Ok(reads) => reads,
        Err(e) => {
            warn!(target = target.name, "view lookup failed: {e}");
            let refused = StatementVerdict {
                action: Action::Deny,
                rule: None,
                message: Some(format!(
                    "Gatehouse cannot read what the views of this database read and call ({e}), \
                     so it cannot judge this statement; try again"
                )),
                mask: None,
            };
            let verdict = Verdict::from_statements(
                vec![refused; classification.statements.len()],
                &policy.settings().default_message,
            );
            return (verdict, None);
        }
    };
    let (verdict, unresolved, folded) =
        decide_with_catalog(policy, subject, classification, &reads, own);
    if !unresolved {
        return (verdict, folded);
    }
    // A name the cached catalog lacks may have been created since the
    // cache was filled: ask again before refusing.
    match shared
        .masking()
        .catalog
        .view_reads_younger_than(target, FRESH_CATALOG)
        .await
    {
        Ok(newer) if !Arc::ptr_eq(&newer, &reads) => {
            let (verdict, _, folded) =
                decide_with_catalog(policy, subject, classification, &newer, own);
            (verdict, folded)
        }
        _ => (verdict, folded),
    }
}

/// How old a catalog answer may be when a statement that names something
/// the cached answer lacks is refused (an older one is looked up again).
const FRESH_CATALOG: std::time::Duration = std::time::Duration::from_millis(50);

/// Policy's verdict with what the catalog says of the statement's names
/// folded in: what the views it names read and call, the calls its column
/// notation makes (`classify::with_column_notation_calls`), and names the
/// catalog lacks next to protected tables (`Policy::deny_unresolved`;
/// then the flag is set), and the classification with those calls folded
/// in, when there were any.
fn decide_with_catalog(
    policy: &Policy,
    subject: &Subject<'_>,
    classification: &Classification,
    reads: &ViewReads,
    own: &BTreeSet<String>,
) -> (Verdict, bool, Option<Classification>) {
    let through = |map: &HashMap<String, Vec<String>>, s: &gatehouse_engine::StatementInfo| {
        s.tables
            .iter()
            .filter_map(|t| map.get(t))
            .flatten()
            .cloned()
            .collect::<Vec<String>>()
    };
    let reached: Vec<Vec<String>> = classification
        .statements
        .iter()
        .map(|s| through(&reads.views, s))
        .collect();
    let mut changed = false;
    let judged = Classification {
        statements: classification
            .statements
            .iter()
            .map(|s| {
                let calls = through(&reads.calls, s);
                let notation = reads.names.column_notation_calls(s, own);
                if calls.is_empty() && notation.is_empty() {
                    return s.clone();
                }
                changed = true;
                let s = gatehouse_engine::classify::with_view_calls(s, &calls);
                gatehouse_engine::classify::with_column_notation_calls(&s, &notation)
            })
            .collect(),
    };
    let verdict = if changed || reached.iter().any(|r| !r.is_empty()) {
        policy.decide_with_views(subject, &judged, &reached)
    } else {
        policy.decide(subject, classification)
    };
    let refused = policy.deny_unresolved(subject, &judged, &reached, &reads.names, own, &verdict);
    let folded = changed.then_some(judged);
    match refused {
        Some(refused) => (refused, true, folded),
        None => (verdict, false, folded),
    }
}

/// Automatic containment: after a denial, blocks the identity if the
/// policy's threshold of denials within its window has been reached. The
/// block ends this session too (through its kill signal).
async fn contain_if_needed<C: Services>(ctx: &Context<C>) -> std::io::Result<()> {
    let identity = &ctx.info.identity;
    if let Some(trigger) = ctx.shared.note_denial(identity) {
        warn!(identity, "automatic containment: {trigger}");
        let reason = format!("automatic containment: {trigger}");
        if let Err(e) = ctx
            .shared
            .block(identity, "gatehouse", &reason, Some(trigger))
            .await
        {
            warn!(identity, "cannot record the automatic block: {e}");
        }
    }
    Ok(())
}

/// Unix time now, in nanoseconds.
fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What an approval is bound to: BLAKE3 over the SQL and the parameters,
/// each length-prefixed (docs/ledger-format.md, ApprovalRequested).
fn binding(sql: &str, params: &[Param]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("gatehouse approval binding v1");
    h.update(&(sql.len() as u64).to_be_bytes());
    h.update(sql.as_bytes());
    h.update(&(params.len() as u64).to_be_bytes());
    for p in params {
        h.update(&p.format.to_be_bytes());
        match &p.value {
            None => {
                h.update(&[0]);
            }
            Some(v) => {
                h.update(&[1]);
                h.update(&(v.0.len() as u64).to_be_bytes());
                h.update(&v.0);
            }
        }
    }
    *h.finalize().as_bytes()
}

/// Rows affected or returned, from a command tag such as `INSERT 0 5`.
fn tag_rows(tag: &str) -> u64 {
    let mut words = tag.split(' ');
    match words.next() {
        Some("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE") => {
            tag.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// Relays backend frames to the client, swapping denial markers for the
/// policy's errors and turning completions into Response events. Returns
/// when the database closes the connection (`None`), or reports a setting
/// that changes how it reads SQL text (`name value`), which ends the
/// session.
async fn upstream_to_client<C: Services, W: AsyncWrite + Unpin>(
    ctx: &Context<C>,
    mut upstream: tokio::io::ReadHalf<Box<dyn Stream>>,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<BytesMut>,
    client: &mut W,
) -> std::io::Result<Option<String>> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut out = BytesMut::with_capacity(64 << 10);
    loop {
        let mut completed = Vec::new();
        let mut foreign_setting = None;
        // A pure read's results wait here until its record has committed,
        // and go nowhere if it could not be.
        let mut gate = None;
        let mut unrecorded = None;
        {
            let mut t = ctx.tracker.lock().expect("tracker");
            while buf.len() >= 5 {
                if let Some(Pending::Exec(e)) = t.pending.front_mut() {
                    if let Some(mut record) = e.record.take() {
                        // Usually committed by now (the session committed
                        // it right after sending the read): then the
                        // results go out with what came before them, in
                        // one write.
                        match record.now() {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                unrecorded = Some(e);
                                break;
                            }
                            None => {
                                gate = Some(record);
                                break;
                            }
                        }
                    }
                }
                let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
                if len < 4 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "upstream sent a malformed frame",
                    ));
                }
                let total = len as usize + 1;
                if buf.len() < total {
                    buf.reserve(total - buf.len());
                    break;
                }
                let frame = buf.split_to(total);
                let tag = frame[0];
                if tag == b'S' {
                    foreign_setting =
                        crate::gateway::relay::upstream::foreign_sql_text_setting(&frame[5..]);
                    if foreign_setting.is_some() {
                        break;
                    }
                }
                let replacement = observe(ctx, &mut t, tag, &frame, &mut completed);
                match replacement {
                    Some(r) => out.put_slice(&r),
                    None => out.put_slice(&frame),
                }
            }
        }
        if !completed.is_empty() {
            ctx.tracker
                .lock()
                .expect("tracker")
                .deferred
                .extend(completed);
            ctx.flush.notify_one();
        }
        ctx.answered.notify_waiters();
        if let Some(setting) = foreign_setting {
            // Something the classifier let through (a user function calling
            // set_config, say) changed how the database reads SQL text:
            // nothing more may reach it. What came before it in this read
            // still goes to the client.
            warn!(
                session = ctx.info.id,
                "the database session switched to {setting}; ending the session"
            );
            if !out.is_empty() {
                client.write_all(&out).await?;
            }
            return Ok(Some(setting));
        }
        if !out.is_empty() {
            client.write_all(&out).await?;
            client.flush().await?;
            out.clear();
        }
        if let Some(record) = gate {
            match record.await {
                // Its results go on from what is buffered.
                Ok(_) => continue,
                Err(e) => unrecorded = Some(e),
            }
        }
        if let Some(e) = unrecorded {
            return Err(std::io::Error::other(Unrecorded(e.to_string())));
        }
        // Between reads, whole messages only have gone to the client: a
        // notice of the gateway's own fits in there.
        let read = tokio::select! {
            read = upstream.read_buf(&mut buf) => read?,
            Some(notice) = notices.recv() => {
                client.write_all(&notice).await?;
                client.flush().await?;
                continue;
            }
        };
        if read == 0 {
            return Ok(None);
        }
    }
}

/// A pure read ran whose record the ledger could not commit: its results
/// are withheld and the session ends.
#[derive(Debug, thiserror::Error)]
#[error("Gatehouse could not record a read it had sent to the database ({0}); its results are withheld and the session is ended")]
struct Unrecorded(String);

/// Whether PostgreSQL is skipping to Sync after an error in the current
/// stretch; `None` while answers to forwarded messages are still due.
fn stretch_failed(t: &Tracker) -> Option<bool> {
    let earlier_stretch_open = t.pending.iter().any(|p| match p {
        Pending::Sync(_) | Pending::Internal(_) => true,
        Pending::Exec(e) => e.simple,
        _ => false,
    });
    // A CopyDone or CopyFail outside COPY is ignored by PostgreSQL: its
    // entry gets no answer of its own.
    let awaiting = t.pending.iter().any(|p| !matches!(p, Pending::CopyDone));
    if earlier_stretch_open {
        None
    } else if t.errored {
        Some(true)
    } else if !awaiting {
        Some(false)
    } else {
        None
    }
}

/// Tracks one backend frame; returns a replacement frame if it must change.
fn observe<C: Services>(
    ctx: &Context<C>,
    t: &mut Tracker,
    tag: u8,
    frame: &[u8],
    completed: &mut Vec<PendingEvent>,
) -> Option<BytesMut> {
    let body = &frame[5..];
    let size = frame.len() as u64;
    // A COPY's end marker is spent once the execution before it is.
    while matches!(t.pending.front(), Some(Pending::CopyDone)) {
        t.pending.pop_front();
    }
    if let Some(Pending::Exec(e)) = t.pending.front_mut() {
        e.bytes += size;
    }
    match tag {
        b'G' => {
            // COPY FROM STDIN started: PostgreSQL ignores every Sync until
            // the client's CopyDone or CopyFail, so those Syncs' entries
            // will get no ReadyForQuery of their own.
            let mut i = 1;
            let mut ended = false;
            while i < t.pending.len() {
                match &t.pending[i] {
                    Pending::CopyDone => {
                        ended = true;
                        break;
                    }
                    Pending::Sync(..) => {
                        t.pending.remove(i);
                    }
                    _ => i += 1,
                }
            }
            t.copy_in = !ended;
            None
        }
        b'T' | b'n' => {
            let fields = if tag == b'T' {
                frame::row_description(body).unwrap_or_default()
            } else {
                Vec::new()
            };
            let columns: Vec<ResultColumn> = fields
                .iter()
                .map(|f| ResultColumn {
                    name: f.name.clone(),
                    type_oid: f.type_oid,
                    format: f.format as u16,
                })
                .collect();
            let describer = match t.pending.front() {
                Some(Pending::Describe(d)) => Some(*d),
                _ => None,
            };
            if describer.is_some() {
                t.pending.pop_front();
            }
            if describer == Some(Describer::Gateway) {
                // Describes the masked execution queued right behind it;
                // the client never asked for it.
                if let Some(Pending::Exec(e)) = t.pending.front_mut() {
                    if let Some(m) = &mut e.mask {
                        m.describe(&fields);
                    }
                    e.set_columns(columns);
                }
                return Some(BytesMut::new());
            }
            if tag == b'T' {
                t.last_description = columns;
                if let (None, Some(Pending::Exec(e))) = (describer, t.pending.front_mut()) {
                    e.set_columns(t.last_description.clone());
                    if let Some(m) = &mut e.mask {
                        m.describe(&fields);
                    }
                }
            }
            None
        }
        b'D' => {
            let cap = RecordCap {
                rows: ctx.shared.record_rows(),
                bytes: ctx.shared.record_bytes(),
            };
            if let Some(Pending::Exec(e)) = t.pending.front_mut() {
                if e.columns.is_empty() && e.result.is_empty() {
                    e.set_columns(t.last_description.clone());
                }
                let masked = e.mask.as_mut().and_then(|m| m.row(frame));
                e.data_row(frame, masked.as_deref().unwrap_or(frame), cap);
                return masked;
            }
            None
        }
        b'N' => match t.pending.front() {
            Some(Pending::Exec(e)) => e
                .mask
                .as_ref()
                .and_then(|m| m.message(frame))
                .map(|(f, _)| f),
            _ => None,
        },
        b'C' | b'I' | b's' => {
            let command = (tag == b'C').then(|| {
                let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                String::from_utf8_lossy(&body[..end]).into_owned()
            });
            let finished = match t.pending.front_mut() {
                Some(Pending::Exec(e)) if e.simple => {
                    if let Some(c) = &command {
                        e.rows += tag_rows(c);
                        e.tag = Some(match e.tag.take() {
                            Some(prev) => format!("{prev}; {c}"),
                            None => c.clone(),
                        });
                    }
                    false
                }
                Some(Pending::Exec(e)) => {
                    if let Some(c) = &command {
                        e.rows = tag_rows(c);
                        e.tag = Some(c.clone());
                    }
                    true
                }
                _ => false,
            };
            if finished {
                if let Some(Pending::Exec(e)) = t.pending.pop_front() {
                    let notice = masked_notice(&e, frame);
                    ctx.finish(e, None, completed);
                    return notice;
                }
            }
            None
        }
        b'1' | b'2' | b'3' => {
            match t.pending.front() {
                Some(Pending::Parse(_) | Pending::Bind(_) | Pending::Close(_)) => {
                    if let Some(Pending::Parse(o) | Pending::Bind(o) | Pending::Close(o)) =
                        t.pending.pop_front()
                    {
                        o.resolve(Answer::Done);
                    }
                }
                _ => warn!(
                    session = ctx.info.id,
                    "PostgreSQL answered a message Gatehouse did not forward ({:?})", tag as char
                ),
            }
            None
        }
        b'E' => {
            t.errored = true;
            // The message it answers, if a Parse, Bind or Close, failed.
            if let Some(Pending::Parse(_) | Pending::Bind(_) | Pending::Close(_)) =
                t.pending.front()
            {
                if let Some(Pending::Parse(o) | Pending::Bind(o) | Pending::Close(o)) =
                    t.pending.pop_front()
                {
                    o.resolve(Answer::Failed);
                }
            }
            let fields = frame::error_fields(body);
            let message = fields
                .iter()
                .find(|(c, _)| *c == b'M')
                .map(|(_, m)| m.as_str())
                .unwrap_or("");
            if let Some(at) = message.find(&ctx.marker) {
                let n = message[at + ctx.marker.len()..]
                    .trim_start_matches('_')
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse::<u64>().ok());
                if let Some(replacement) = n.and_then(|n| t.denials.remove(&n)) {
                    return Some(replacement);
                }
            }
            // Describes still waiting are skipped by PostgreSQL after an error.
            while matches!(t.pending.front(), Some(Pending::Describe(_))) {
                t.pending.pop_front();
            }
            let code = fields
                .iter()
                .find(|(c, _)| *c == b'C')
                .map(|(_, c)| c.clone())
                .unwrap_or_default();
            // A masked statement's error may echo masked values: the client
            // and the ledger get it scrubbed.
            let scrubbed = match t.pending.front() {
                Some(Pending::Exec(e)) => e.mask.as_ref().and_then(|m| m.message(frame)),
                _ => None,
            };
            let (replacement, message) = match scrubbed {
                Some((f, m)) => (Some(f), m),
                None => (None, message.to_owned()),
            };
            let error = Some((code, message));
            // An error ends an extended-protocol execution; executions
            // queued behind it up to Sync are skipped by PostgreSQL and
            // recorded as such at ReadyForQuery.
            match t.pending.front_mut() {
                Some(Pending::Exec(e)) if e.simple => e.error = error,
                Some(Pending::Exec(_)) => {
                    if let Some(Pending::Exec(mut e)) = t.pending.pop_front() {
                        e.error = error;
                        ctx.finish(e, None, completed);
                    }
                }
                _ => {}
            }
            replacement
        }
        b'Z' => {
            ctx.transaction_state(body.first().copied());
            t.errored = false;
            while let Some(p) = t.pending.pop_front() {
                match p {
                    Pending::Exec(e) if e.simple => {
                        let notice = masked_notice(&e, frame);
                        ctx.finish(e, None, completed);
                        return notice;
                    }
                    Pending::Exec(e) => {
                        ctx.finish(
                            e,
                            Some("not executed: an earlier message of the pipeline failed"),
                            completed,
                        );
                    }
                    Pending::Describe(_) => {}
                    Pending::Parse(o) | Pending::Bind(o) | Pending::Close(o) => {
                        o.resolve(Answer::Skipped);
                    }
                    Pending::Sync(upto) => {
                        // A denial whose marker PostgreSQL skipped (after an
                        // earlier error) will never come back.
                        t.denials.retain(|n, _| *n > upto);
                        break;
                    }
                    Pending::CopyDone => {}
                    Pending::Internal(upto) => {
                        t.denials.retain(|n, _| *n > upto);
                        break;
                    }
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_row_counts() {
        assert_eq!(tag_rows("SELECT 42"), 42);
        assert_eq!(tag_rows("INSERT 0 5"), 5);
        assert_eq!(tag_rows("UPDATE 3"), 3);
        assert_eq!(tag_rows("COPY 100000"), 100_000);
        assert_eq!(tag_rows("CREATE TABLE"), 0);
        assert_eq!(tag_rows("BEGIN"), 0);
    }
}
