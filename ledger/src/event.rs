//! The typed events of the ledger.
//!
//! Every event is a record `{0: seq, 1: ts, 2: kind, 3: body}`
//! (docs/ledger-format.md, section 2). The writer assigns `seq` and `ts`; the
//! rest of the system only ever builds an [`EventBody`]. Bodies are fixed
//! structs with small integer keys (no maps with arbitrary keys in hashed
//! data), so each has exactly one encoding.

use crate::cbor::{self, Bytes, Cbor, Dec, DecodeError, Enc};
use crate::{cbor_enum, cbor_struct};

/// A gateway session, unique within one ledger.
pub type SessionId = u64;

/// Unix time in nanoseconds, UTC.
pub type Nanos = u64;

cbor_enum! {
    /// How a statement reached the gateway.
    pub enum Protocol {
        /// A simple-protocol `Query` message.
        Simple = 0,
        /// An extended-protocol Parse/Bind/Execute sequence.
        Extended = 1,
        /// A `COPY` data stream.
        Copy = 2,
    }
}

cbor_enum! {
    /// What kind of statement policy judged.
    pub enum StatementClass {
        /// Reads data and changes nothing.
        Read = 0,
        /// Changes rows (INSERT, UPDATE, DELETE, MERGE, COPY FROM, ...).
        Write = 1,
        /// Changes the schema.
        Ddl = 2,
        /// Changes session state (SET ROLE, search_path, read-only overrides, ...).
        Session = 3,
        /// Calls a function that is not a known-safe builtin.
        Function = 4,
        /// Administrative (GRANT, VACUUM, server files and programs, ...).
        Admin = 5,
        /// Could not be classified; denied by default.
        Unknown = 6,
        /// Transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT).
        Transaction = 7,
    }
}

cbor_enum! {
    /// What policy decided for a statement.
    pub enum Action {
        /// Forwarded upstream.
        Allow = 0,
        /// Refused with an error; the session survives.
        Deny = 1,
        /// Held until an approver decides.
        RequireApproval = 2,
        /// Forwarded, with sensitive columns masked in the response.
        Mask = 3,
    }
}

cbor_struct! {
    /// One bind parameter exactly as the client sent it.
    pub struct Param {
        /// Format code: 0 text, 1 binary.
        0 => format: u16,
        /// The value's bytes; `None` for SQL NULL.
        1 => value: Option<Bytes>,
    }
}

cbor_struct! {
    /// A column of a result, as RowDescription announced it to the client.
    pub struct ResultColumn {
        /// The column name the client saw.
        0 => name: String,
        /// The column's type OID.
        1 => type_oid: u32,
        /// Format code of its values: 0 text, 1 binary.
        2 => format: u16,
    }
}

cbor_struct! {
    /// One result row exactly as the client received it (masked values masked).
    pub struct ResultRow {
        /// One entry per column; `None` for SQL NULL.
        0 => values: Vec<Option<Bytes>>,
    }
}

cbor_struct! {
    /// A column whose values were masked in one response.
    pub struct MaskedColumn {
        /// `schema.table.column`.
        0 => column: String,
        /// The strategy applied (`redact`, `partial`, `email`, `hash`, `null`, ...).
        1 => strategy: String,
        /// How many values were replaced.
        2 => values: u64,
    }
}

cbor_struct! {
    /// A client connected, authenticated and was bound to an upstream target.
    pub struct SessionOpened {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// The upstream target the client's startup `database` picked.
        2 => target: String,
        /// The client's address and port.
        3 => client_addr: String,
        /// The `application_name` the client sent at startup.
        4 => application_name: Option<String>,
        /// The credential the client proved.
        5 => credential: Option<String>,
        /// Whether the client connection is TLS.
        6 => tls: bool,
    }
}

cbor_struct! {
    /// A session ended, by the client or the gateway.
    pub struct SessionClosed {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// How it ended (client disconnected, terminated, shutdown, ...).
        2 => reason: String,
        /// Statements the session sent.
        3 => statements: u64,
    }
}

cbor_struct! {
    /// A login attempt failed.
    pub struct AuthenticationFailed {
        /// The identity the client claimed (may not exist).
        0 => identity: String,
        /// The client's address and port.
        1 => client_addr: String,
        /// The target the client asked for, when it named one.
        2 => target: Option<String>,
        /// Why the login failed.
        3 => reason: String,
    }
}

cbor_struct! {
    /// A statement arrived from a client. Written ahead of forwarding it.
    pub struct QueryReceived {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// The SQL text exactly as sent.
        3 => sql: String,
        /// Bind parameters as sent (extended protocol; empty for simple queries).
        4 => params: Vec<Param>,
        /// Prepared statement name (extended protocol; empty = unnamed).
        5 => statement: Option<String>,
        /// Portal name (extended protocol; empty = unnamed).
        6 => portal: Option<String>,
        /// Simple or extended query protocol.
        7 => protocol: Protocol,
    }
}

cbor_struct! {
    /// Policy's verdict on a statement. Written ahead of forwarding it.
    pub struct Decision {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// What policy decided.
        3 => action: Action,
        /// The rule that decided; `None` means the default (deny).
        4 => rule: Option<String>,
        /// Class of the statement that decided (for a multi-statement query, the
        /// one whose verdict won).
        5 => class: StatementClass,
        /// Schema-qualified tables the statement touches.
        6 => tables: Vec<String>,
        /// `schema.table.column` references the statement names.
        7 => columns: Vec<String>,
        /// The message shown to the client on denial.
        8 => message: Option<String>,
    }
}

cbor_struct! {
    /// A statement arrived from a client and policy judged it: what
    /// [`QueryReceived`] and [`Decision`] say, in one event, so the record
    /// written ahead of forwarding a statement is one event, not two
    /// (docs/ledger-format.md, section 7). Writers record this kind; the
    /// pair stays readable in ledgers written before it.
    pub struct Statement {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// The SQL text exactly as sent.
        3 => sql: String,
        /// Bind parameters as sent (extended protocol; empty for simple queries).
        4 => params: Vec<Param>,
        /// Prepared statement name (extended protocol; empty = unnamed).
        5 => statement: Option<String>,
        /// Portal name (extended protocol; empty = unnamed).
        6 => portal: Option<String>,
        /// Simple or extended query protocol.
        7 => protocol: Protocol,
        /// What policy decided.
        8 => action: Action,
        /// The rule that decided; `None` means the default (deny).
        9 => rule: Option<String>,
        /// Class of the statement that decided (for a multi-statement query,
        /// the one whose verdict won).
        10 => class: StatementClass,
        /// Schema-qualified tables the statement touches.
        11 => tables: Vec<String>,
        /// `schema.table.column` references the statement names.
        12 => columns: Vec<String>,
        /// The message shown to the client on denial.
        13 => message: Option<String>,
    }
}

impl Statement {
    /// What the statement's arrival says, as a [`QueryReceived`] would.
    pub fn received(&self) -> QueryReceived {
        QueryReceived {
            session: self.session,
            identity: self.identity.clone(),
            query: self.query,
            sql: self.sql.clone(),
            params: self.params.clone(),
            statement: self.statement.clone(),
            portal: self.portal.clone(),
            protocol: self.protocol,
        }
    }

    /// Policy's verdict, as a [`Decision`] would say it.
    pub fn decision(&self) -> Decision {
        Decision {
            session: self.session,
            identity: self.identity.clone(),
            query: self.query,
            action: self.action,
            rule: self.rule.clone(),
            class: self.class,
            tables: self.tables.clone(),
            columns: self.columns.clone(),
            message: self.message.clone(),
        }
    }
}

cbor_struct! {
    /// Sensitive values were masked in a response.
    pub struct MaskApplied {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// Each masked column with its strategy and count.
        3 => columns: Vec<MaskedColumn>,
    }
}

cbor_struct! {
    /// How a forwarded statement ended.
    pub struct Response {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// The CommandComplete tag (`SELECT 1`, `INSERT 0 3`, ...); `None` on error.
        3 => command_tag: Option<String>,
        /// Rows sent to the client.
        4 => rows: u64,
        /// From forwarding the statement to its last response message, in nanoseconds.
        5 => duration_ns: u64,
        /// SQLSTATE of the error, if the statement failed.
        6 => sqlstate: Option<String>,
        /// The error message, if the statement failed.
        7 => error: Option<String>,
        /// Bytes sent to the client for this statement.
        8 => bytes: u64,
        /// The columns of the last result set, as the client saw them.
        9 => columns: Vec<ResultColumn>,
        /// The first rows the client received, up to the gateway's
        /// configured cap, after masking.
        10 => result: Vec<ResultRow>,
        /// True when more rows reached the client than `result` holds.
        11 => truncated: bool,
        /// BLAKE3 of every DataRow message exactly as the database sent it
        /// (tag, length and body, in order), before masking; `None` when
        /// no rows came back, or when `result` holds exactly those rows
        /// ([`Response::rows_digest`] then rebuilds it). Lets evidence be
        /// matched to the database without the ledger holding unmasked
        /// values.
        12 => result_digest: Option<Bytes>,
    }
}

impl Response {
    /// BLAKE3 of the DataRow messages that `result` spells (type byte `D`,
    /// length, value count, each value's length or -1 and its bytes).
    pub fn recorded_rows_digest(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        for row in &self.result {
            let len: usize = row
                .values
                .iter()
                .map(|v| 4 + v.as_ref().map_or(0, |b| b.0.len()))
                .sum();
            hasher.update(b"D");
            hasher.update(&((4 + 2 + len) as u32).to_be_bytes());
            hasher.update(&(row.values.len() as u16).to_be_bytes());
            for value in &row.values {
                match value {
                    Some(b) => {
                        hasher.update(&(b.0.len() as i32).to_be_bytes());
                        hasher.update(&b.0);
                    }
                    None => {
                        hasher.update(&(-1i32).to_be_bytes());
                    }
                }
            }
        }
        *hasher.finalize().as_bytes()
    }

    /// The digest of the rows as the database sent them: `result_digest`,
    /// or, where the writer left it out because `result` holds exactly
    /// those rows (section 7), the digest of the rows `result` spells.
    /// `None` when no rows came back.
    pub fn rows_digest(&self) -> Option<Vec<u8>> {
        match &self.result_digest {
            Some(d) => Some(d.0.clone()),
            None if !self.result.is_empty() => Some(self.recorded_rows_digest().to_vec()),
            None => None,
        }
    }
}

cbor_struct! {
    /// A statement is held for a human's approval.
    pub struct ApprovalRequested {
        /// The approval request, numbered by the gateway.
        0 => approval: u64,
        /// The session, numbered by the gateway.
        1 => session: SessionId,
        /// The identity the session authenticated as.
        2 => identity: String,
        /// Statement number within the session, from 1.
        3 => query: u64,
        /// The SQL text held.
        4 => sql: String,
        /// Its bind parameters as sent.
        5 => params: Vec<Param>,
        /// The statement class.
        6 => class: StatementClass,
        /// The `require_approval` rule that held it.
        7 => rule: String,
        /// BLAKE3 of the exact SQL and parameters the approval is bound to.
        8 => binding: Bytes,
        /// Distinct approvers required.
        9 => quorum: u64,
        /// When the request is denied if not decided.
        10 => expires_at: Nanos,
        /// The statement's fingerprint (normalized SQL, literals removed):
        /// what a time-limited grant covers.
        11 => fingerprint: String,
    }
}

cbor_struct! {
    /// An approver approved a held statement.
    pub struct ApprovalGranted {
        /// The approval request, numbered by the gateway.
        0 => approval: u64,
        /// The approver.
        1 => operator: String,
        /// When set, the identity may run this statement's fingerprint until then.
        2 => grant_until: Option<Nanos>,
        /// The session that asked (copied so indexes and bundles find it).
        3 => session: SessionId,
        /// The identity that asked.
        4 => identity: String,
    }
}

cbor_struct! {
    /// A held statement was refused (by an approver, or by the gateway on
    /// restart); for a request already granted, the grant it left is
    /// revoked (`gatehouse grant revoke`).
    pub struct ApprovalDenied {
        /// The approval request, numbered by the gateway.
        0 => approval: u64,
        /// The approver who refused; `None` when the gateway did (block, session end, restart).
        1 => operator: Option<String>,
        /// Why, in words an operator can read.
        2 => reason: String,
        /// The session that asked.
        3 => session: SessionId,
        /// The identity that asked.
        4 => identity: String,
    }
}

cbor_struct! {
    /// A held statement timed out.
    pub struct ApprovalExpired {
        /// The approval request, numbered by the gateway.
        0 => approval: u64,
        /// The session that asked.
        1 => session: SessionId,
        /// The identity that asked.
        2 => identity: String,
    }
}

cbor_struct! {
    /// An agent identity was created.
    pub struct IdentityCreated {
        /// The new identity's name.
        0 => identity: String,
        /// The operator who created it.
        1 => operator: String,
        /// A free-text note on what the identity is for.
        2 => description: Option<String>,
    }
}

cbor_struct! {
    /// An identity was blocked: its sessions end and it cannot log in.
    pub struct IdentityBlocked {
        /// The blocked identity.
        0 => identity: String,
        /// The operator who blocked it (or the gateway, for an automatic block).
        1 => operator: String,
        /// Why, in words an operator can read.
        2 => reason: String,
        /// The automatic trigger that blocked it, if no human did.
        3 => trigger: Option<String>,
    }
}

cbor_struct! {
    /// A block was lifted.
    pub struct IdentityUnblocked {
        /// The identity unblocked.
        0 => identity: String,
        /// The operator who did it.
        1 => operator: String,
        /// Why, if the operator said.
        2 => reason: Option<String>,
    }
}

cbor_struct! {
    /// A gateway credential was issued. Holds the SCRAM-SHA-256 verifier, never the secret.
    pub struct CredentialIssued {
        /// The credential's id.
        0 => credential: String,
        /// The identity it logs in as.
        1 => identity: String,
        /// The operator who issued it.
        2 => operator: String,
        /// When it stops being accepted.
        3 => expires_at: Nanos,
        /// SCRAM salt (shared by every credential of the identity).
        4 => salt: Bytes,
        /// SCRAM PBKDF2 iteration count.
        5 => iterations: u32,
        /// SCRAM StoredKey (RFC 5802).
        6 => stored_key: Bytes,
        /// SCRAM ServerKey (RFC 5802).
        7 => server_key: Bytes,
    }
}

cbor_struct! {
    /// A credential was revoked; sessions using it end.
    pub struct CredentialRevoked {
        /// The credential's id.
        0 => credential: String,
        /// The identity it belonged to.
        1 => identity: String,
        /// The operator who did it.
        2 => operator: String,
        /// Why, in words an operator can read.
        3 => reason: String,
    }
}

cbor_struct! {
    /// A new policy took effect.
    pub struct PolicyChanged {
        /// The operator who applied it.
        0 => operator: String,
        /// The policy file exactly as applied.
        1 => source: String,
        /// BLAKE3 of `source`.
        2 => digest: Bytes,
    }
}

cbor_struct! {
    /// The gateway ended a session (kill, block, revocation).
    pub struct SessionTerminated {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// The operator who ended it; `None` when the gateway did on its own.
        2 => operator: Option<String>,
        /// Why, in words an operator can read.
        3 => reason: String,
    }
}

cbor_struct! {
    /// Anything else an operator did, including refused attempts.
    pub struct OperatorAction {
        /// The operator who acted (or tried to).
        0 => operator: String,
        /// What was attempted (`kill`, `policy.apply`, `webhook.deliver`, ...).
        1 => action: String,
        /// What it applied to (a session, an identity, a URL), if anything.
        2 => target: Option<String>,
        /// `ok`, or why it was refused or failed.
        3 => outcome: String,
        /// Anything else worth keeping.
        4 => detail: Option<String>,
    }
}

cbor_struct! {
    /// The ledger's signing key changed; later checkpoints use `new_key`.
    pub struct KeyRotated {
        /// The operator who rotated the key.
        0 => operator: String,
        /// Verifier key string of the retired key.
        1 => old_key: String,
        /// Verifier key string of the new key.
        2 => new_key: String,
    }
}

cbor_struct! {
    /// Projection state folded over every event before `covers`.
    pub struct Snapshot {
        /// Number of events folded into `state`.
        0 => covers: u64,
        /// The encoded state (docs/ledger-format.md).
        1 => state: Bytes,
        /// BLAKE3 of `state`.
        2 => state_hash: Bytes,
    }
}

impl Snapshot {
    /// The `covers` field of an encoded snapshot body, read without decoding
    /// the state: the writer indexes snapshots by it.
    pub fn covers_of(body: &[u8]) -> Option<u64> {
        let mut dec = Dec::new(body);
        if dec.map().ok()? != Self::KEYS.len() {
            return None;
        }
        dec.key(0).ok()?;
        dec.uint().ok()
    }
}

cbor_struct! {
    /// An operator of the admin API was added, with roles and a bearer token
    /// (only its BLAKE3 hash is recorded).
    pub struct OperatorAdded {
        /// The new operator's name.
        0 => operator: String,
        /// Role names: `admin`, `approver`, `responder`, `auditor`.
        1 => roles: Vec<String>,
        /// BLAKE3 of the operator's bearer token.
        2 => token_hash: Bytes,
        /// Who added it (`gatehouse-init` for the first operator).
        3 => added_by: String,
    }
}

cbor_struct! {
    /// An identity was retired: it can no longer log in, its sessions end,
    /// and no credential can be issued to it. Final (a block is the
    /// reversible stop).
    pub struct IdentityDisabled {
        /// The identity.
        0 => identity: String,
        /// The operator who disabled it.
        1 => operator: String,
        /// Why.
        2 => reason: String,
    }
}

cbor_struct! {
    /// An operator of the admin API was removed: its token stops working.
    pub struct OperatorRemoved {
        /// The operator removed.
        0 => operator: String,
        /// Who removed it.
        1 => removed_by: String,
        /// Why.
        2 => reason: String,
    }
}

cbor_struct! {
    /// A chat user (for example a Slack user) was linked to an operator:
    /// buttons that user presses in chat act as that operator. Recorded
    /// from the operator's own signed-in console session, after the chat
    /// user opened a one-time link the chat service showed only to them.
    /// A chat user is linked to at most one operator; a new link replaces
    /// an older one.
    pub struct ChatUserLinked {
        /// The operator the chat user now acts as.
        0 => operator: String,
        /// The chat service (`slack`).
        1 => service: String,
        /// The service's workspace (Slack's team id).
        2 => workspace: String,
        /// The user's id in that workspace.
        3 => user: String,
        /// The user's name as the service showed it when linked.
        4 => display: Option<String>,
        /// Who recorded the link (the operator, from the console).
        5 => linked_by: String,
    }
}

impl ChatUserLinked {
    /// The user as people read it: the id, and the name Slack gave.
    pub fn shown_user(&self) -> String {
        match &self.display {
            Some(name) => format!("{} ({name})", self.user),
            None => self.user.clone(),
        }
    }
}

cbor_struct! {
    /// A chat user's link to an operator was removed: that user's buttons
    /// no longer act for anyone.
    pub struct ChatUserUnlinked {
        /// The operator the chat user acted as.
        0 => operator: String,
        /// The chat service (`slack`).
        1 => service: String,
        /// The service's workspace.
        2 => workspace: String,
        /// The user's id in that workspace.
        3 => user: String,
        /// Who removed the link.
        4 => unlinked_by: String,
        /// Why.
        5 => reason: String,
    }
}

cbor_struct! {
    /// This gateway applied the cluster's control log up to `through`
    /// (docs/cluster.md): policy, identities, credentials, operators and
    /// blocks from then on are those of the control log's first `through`
    /// events. Recorded in the gateway's own log each time it applies
    /// control events, so what judged a statement, and how late a change
    /// reached each gateway, is provable from the logs.
    pub struct ControlApplied {
        /// The gateway's name in the cluster.
        0 => gateway: String,
        /// Control events applied: `0..through`.
        1 => through: u64,
        /// How many of them this step applied.
        2 => applied: u64,
        /// The control log's newest signed checkpoint note when they were
        /// read (it covers them); `None` for an empty control log.
        3 => checkpoint: Option<String>,
    }
}

cbor_struct! {
    /// In a cluster's control log, with its `ApprovalRequested`: which
    /// gateway holds the statement (its session waits there), so that
    /// gateway alone withdraws it when the session ends or at a restart,
    /// and announces it.
    pub struct ApprovalHeld {
        /// The approval request.
        0 => approval: u64,
        /// The holding gateway's name in the cluster.
        1 => gateway: String,
    }
}

cbor_struct! {
    /// In a cluster's control log: a gateway joined, with the key its own
    /// ledger is signed with. `gatehouse-verify --cluster` expects a
    /// ledger from every enrolled gateway, verified with this key.
    pub struct GatewayEnrolled {
        /// The gateway's name in the cluster.
        0 => gateway: String,
        /// Its ledger's verifier key, `<name>+<key id>+<base64 key>`.
        1 => key: String,
    }
}

cbor_struct! {
    /// In a cluster's control log: a gateway's newest signed checkpoint,
    /// recorded every few seconds and at its shutdown. Its ledger must
    /// still hold what the latest anchor covers: a ledger rolled back or
    /// rewritten below it fails `gatehouse-verify --cluster`.
    pub struct GatewayAnchored {
        /// The gateway's name in the cluster.
        0 => gateway: String,
        /// The checkpoint note of its ledger.
        1 => checkpoint: String,
    }
}

cbor_struct! {
    /// In a cluster's control log: a gateway left the cluster for good,
    /// stopped, its ledger ending at `checkpoint`. It may not start again
    /// under this name, and `gatehouse-verify --cluster` requires its
    /// ledger to end exactly there.
    pub struct GatewayRetired {
        /// The gateway's name in the cluster.
        0 => gateway: String,
        /// The final checkpoint note of its ledger.
        1 => checkpoint: String,
    }
}

cbor_struct! {
    /// The first record of every ledger segment after the first
    /// (docs/ledger-format.md, section 9): what a verifier of this segment
    /// alone needs from its predecessor, which was sealed before it opened.
    pub struct SegmentOpened {
        /// This segment's number: the first segment is 0.
        0 => segment: u64,
        /// The predecessor's final signed checkpoint note, which covers every
        /// event before this one.
        1 => previous_checkpoint: String,
        /// BLAKE3 of the sealed predecessor file's bytes.
        2 => previous_digest: Bytes,
        /// The Merkle frontier at the predecessor's final size:
        /// `u64be(size)` then one 32-byte hash per set bit of `size`,
        /// largest subtree first.
        3 => frontier: Bytes,
    }
}

cbor_struct! {
    /// An attempt to archive a sealed segment with the operator's
    /// `archive_command`, and how it ended; a failed attempt is retried.
    pub struct SegmentArchived {
        /// The segment's number.
        0 => segment: u64,
        /// Its file name.
        1 => file: String,
        /// The command run (the configured one, `%p` and `%f` replaced).
        2 => command: String,
        /// Attempts so far, this one included.
        3 => attempt: u64,
        /// Whether the command succeeded (exit status 0).
        4 => succeeded: bool,
        /// Its exit status and the end of its error output, when it failed.
        5 => detail: Option<String>,
    }
}

cbor_struct! {
    /// A sealed, archived segment was removed from the gateway's disk
    /// (`retain_local`); the archive holds it.
    pub struct SegmentRemoved {
        /// The segment's number.
        0 => segment: u64,
        /// Its file name.
        1 => file: String,
        /// Why it could go.
        2 => reason: String,
    }
}

cbor_struct! {
    /// What statements of one shape share (format version 3, section 7.2):
    /// their SQL with the literals cut out, and what policy made of them.
    /// Written once per segment, before the first [`ShapedStatement`] that
    /// refers to it; readers put the two back together into a
    /// [`Statement`].
    pub struct StatementShape {
        /// The SQL text between the literals: one more piece than the
        /// statement has literals.
        0 => template: Vec<String>,
        /// Class of the statement that decided.
        1 => class: StatementClass,
        /// Schema-qualified tables the statement touches.
        2 => tables: Vec<String>,
        /// `schema.table.column` references the statement names.
        3 => columns: Vec<String>,
        /// What policy decided.
        4 => action: Action,
        /// The rule that decided; `None` means the default (deny).
        5 => rule: Option<String>,
        /// The message shown to the client on denial.
        6 => message: Option<String>,
    }
}

cbor_struct! {
    /// A [`Statement`] recorded as its literals and a reference to its
    /// [`StatementShape`] (format version 3, section 7.2): the record
    /// written ahead of forwarding a statement, at a fraction of the bytes.
    pub struct ShapedStatement {
        /// The session, numbered by the gateway.
        0 => session: SessionId,
        /// The identity the session authenticated as.
        1 => identity: String,
        /// Statement number within the session, from 1.
        2 => query: u64,
        /// The literals of the SQL text, exactly as sent, in order: the
        /// text is the shape's template interleaved with them.
        3 => literals: Vec<String>,
        /// Bind parameters as sent (extended protocol; empty for simple queries).
        4 => params: Vec<Param>,
        /// Prepared statement name (extended protocol; empty = unnamed).
        5 => statement: Option<String>,
        /// Portal name (extended protocol; empty = unnamed).
        6 => portal: Option<String>,
        /// Simple or extended query protocol.
        7 => protocol: Protocol,
        /// Sequence number of the [`StatementShape`], earlier in the same segment.
        8 => shape: u64,
        /// The first 16 bytes of BLAKE3 of that shape's body encoding: the
        /// record binds the shape's content, wherever a reader found it.
        9 => shape_digest: Bytes,
    }
}

macro_rules! event_kinds {
    ($( $code:literal => $variant:ident, )*) => {
        /// The kind of an event, as stored in its record's key 2.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind { $( #[doc = stringify!($variant)] $variant, )* }

        impl EventKind {
            /// Every kind, in code order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant),*];

            /// The integer stored in records.
            pub fn code(self) -> u64 {
                match self { $(EventKind::$variant => $code,)* }
            }

            /// The kind stored as `code`.
            pub fn from_code(code: u64) -> Option<Self> {
                match code { $($code => Some(EventKind::$variant),)* _ => None }
            }

            /// The kind's name, as shown to people.
            pub fn name(self) -> &'static str {
                match self { $(EventKind::$variant => stringify!($variant),)* }
            }

            /// The body's map keys, in encoding order.
            pub fn keys(self) -> &'static [u64] {
                match self { $(EventKind::$variant => $variant::KEYS,)* }
            }

            /// The body's fields (key, name, type), for the format documentation.
            pub fn fields(self) -> &'static [(u64, &'static str, &'static str)] {
                match self { $(EventKind::$variant => $variant::FIELDS,)* }
            }
        }

        /// The kind-specific content of an event.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum EventBody { $( #[doc = stringify!($variant)] $variant($variant), )* }

        impl EventBody {
            /// This body's kind.
            pub fn kind(&self) -> EventKind {
                match self { $(EventBody::$variant(_) => EventKind::$variant,)* }
            }

            /// Appends the canonical encoding of the body (without envelope).
            pub fn encode(&self, enc: &mut Enc) {
                match self { $(EventBody::$variant(b) => b.encode(enc),)* }
            }

            /// Decodes a body of the given kind.
            pub fn decode(kind: EventKind, dec: &mut Dec<'_>) -> Result<Self, DecodeError> {
                Ok(match kind { $(EventKind::$variant => EventBody::$variant($variant::decode(dec)?),)* })
            }
        }

        $(
            impl From<$variant> for EventBody {
                fn from(body: $variant) -> Self { EventBody::$variant(body) }
            }
        )*
    };
}

event_kinds! {
    1 => SessionOpened,
    2 => SessionClosed,
    3 => AuthenticationFailed,
    4 => QueryReceived,
    5 => Decision,
    6 => MaskApplied,
    7 => Response,
    8 => ApprovalRequested,
    9 => ApprovalGranted,
    10 => ApprovalDenied,
    11 => ApprovalExpired,
    12 => IdentityCreated,
    13 => IdentityBlocked,
    14 => IdentityUnblocked,
    15 => CredentialIssued,
    16 => CredentialRevoked,
    17 => PolicyChanged,
    18 => SessionTerminated,
    19 => OperatorAction,
    20 => KeyRotated,
    21 => Snapshot,
    22 => OperatorAdded,
    23 => IdentityDisabled,
    24 => OperatorRemoved,
    25 => Statement,
    26 => SegmentOpened,
    27 => SegmentArchived,
    28 => SegmentRemoved,
    29 => StatementShape,
    30 => ShapedStatement,
    31 => ChatUserLinked,
    32 => ChatUserUnlinked,
    33 => ControlApplied,
    34 => ApprovalHeld,
    35 => GatewayEnrolled,
    36 => GatewayAnchored,
    37 => GatewayRetired,
}

impl EventBody {
    /// The session this event belongs to, for the ledger's session index.
    pub fn session(&self) -> Option<SessionId> {
        use EventBody::*;
        match self {
            SessionOpened(b) => Some(b.session),
            SessionClosed(b) => Some(b.session),
            QueryReceived(b) => Some(b.session),
            Decision(b) => Some(b.session),
            Statement(b) => Some(b.session),
            ShapedStatement(b) => Some(b.session),
            MaskApplied(b) => Some(b.session),
            Response(b) => Some(b.session),
            ApprovalRequested(b) => Some(b.session),
            ApprovalGranted(b) => Some(b.session),
            ApprovalDenied(b) => Some(b.session),
            ApprovalExpired(b) => Some(b.session),
            SessionTerminated(b) => Some(b.session),
            _ => None,
        }
    }

    /// The agent identity this event concerns, for the ledger's identity index.
    pub fn identity(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            SessionOpened(b) => Some(&b.identity),
            SessionClosed(b) => Some(&b.identity),
            AuthenticationFailed(b) => Some(&b.identity),
            QueryReceived(b) => Some(&b.identity),
            Decision(b) => Some(&b.identity),
            Statement(b) => Some(&b.identity),
            ShapedStatement(b) => Some(&b.identity),
            MaskApplied(b) => Some(&b.identity),
            Response(b) => Some(&b.identity),
            ApprovalRequested(b) => Some(&b.identity),
            ApprovalGranted(b) => Some(&b.identity),
            ApprovalDenied(b) => Some(&b.identity),
            ApprovalExpired(b) => Some(&b.identity),
            IdentityCreated(b) => Some(&b.identity),
            IdentityBlocked(b) => Some(&b.identity),
            IdentityUnblocked(b) => Some(&b.identity),
            CredentialIssued(b) => Some(&b.identity),
            CredentialRevoked(b) => Some(&b.identity),
            SessionTerminated(b) => Some(&b.identity),
            IdentityDisabled(b) => Some(&b.identity),
            _ => None,
        }
    }

    /// The operator who acted, for events an operator caused (`None` for
    /// the gateway's own actions and for events no operator caused). Not a
    /// subject in the sense of section 8.3: replay uses it to show what an
    /// operator did.
    pub fn operator(&self) -> Option<&str> {
        use EventBody::*;
        match self {
            ApprovalGranted(b) => Some(&b.operator),
            ApprovalDenied(b) => b.operator.as_deref(),
            IdentityCreated(b) => Some(&b.operator),
            IdentityBlocked(b) => Some(&b.operator),
            IdentityUnblocked(b) => Some(&b.operator),
            CredentialIssued(b) => Some(&b.operator),
            CredentialRevoked(b) => Some(&b.operator),
            PolicyChanged(b) => Some(&b.operator),
            SessionTerminated(b) => b.operator.as_deref(),
            OperatorAction(b) => Some(&b.operator),
            KeyRotated(b) => Some(&b.operator),
            OperatorAdded(b) => Some(&b.added_by),
            IdentityDisabled(b) => Some(&b.operator),
            OperatorRemoved(b) => Some(&b.removed_by),
            ChatUserLinked(b) => Some(&b.linked_by),
            ChatUserUnlinked(b) => Some(&b.unlinked_by),
            _ => None,
        }
    }

    /// Encodes the body for [`crate::Ledger::append`]. Callers encode in their
    /// own task, so the single writer only frames and hashes.
    /// A [`Statement`] is recorded compactly, as a [`ShapedStatement`] and
    /// its shape (section 7.2).
    pub fn to_pending(&self) -> PendingEvent {
        if let EventBody::Statement(statement) = self {
            return statement.to_shaped_pending();
        }
        let mut enc = Enc::default();
        self.encode(&mut enc);
        PendingEvent {
            kind: self.kind(),
            session: self.session(),
            identity: self.identity().map(str::to_owned),
            body: enc.into_bytes(),
            shape: None,
        }
    }
}

/// An encoded body waiting for the writer to give it a sequence number and time.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    /// The body's kind.
    pub kind: EventKind,
    /// Session index value.
    pub session: Option<SessionId>,
    /// Identity index value.
    pub identity: Option<String>,
    /// The body's canonical CBOR; for a [`ShapedStatement`], without its
    /// last two entries, the reference to its shape, which the writer
    /// appends ([`crate::shape::reference`]).
    pub body: Vec<u8>,
    /// For a [`ShapedStatement`]: its shape, which the writer records
    /// first unless the segment has it already.
    pub shape: Option<crate::shape::PendingShape>,
}

/// A whole event: envelope and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, from 0.
    pub seq: u64,
    /// When the writer recorded it, Unix nanoseconds; never decreases along the log.
    pub ts: Nanos,
    /// The typed content.
    pub body: EventBody,
}

impl Event {
    /// The canonical record bytes: what the ledger stores and hashes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut enc = Enc::default();
        self.body.encode(&mut enc);
        record_bytes(self.seq, self.ts, self.body.kind(), &enc.into_bytes())
    }

    /// Decodes a record, rejecting bytes that are not its canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Event, DecodeError> {
        let mut dec = Dec::new(bytes);
        let offset = dec.offset();
        if dec.map()? != 4 {
            return Err(DecodeError::Unexpected {
                offset,
                expected: "a record map of four entries",
            });
        }
        dec.key(0)?;
        let seq = dec.uint()?;
        dec.key(1)?;
        let ts = dec.uint()?;
        dec.key(2)?;
        let offset = dec.offset();
        let kind = EventKind::from_code(dec.uint()?).ok_or(DecodeError::Unexpected {
            offset,
            expected: "a known event kind",
        })?;
        dec.key(3)?;
        let body = EventBody::decode(kind, &mut dec)?;
        dec.finish()?;
        let event = Event { seq, ts, body };
        if event.to_bytes() != bytes {
            return Err(DecodeError::NotCanonical);
        }
        Ok(event)
    }
}

/// A record's envelope, and its session when that is the body's first
/// field, read without decoding the body. Folds use it to skip decoding
/// events that only move counters; it checks nothing beyond the fields it
/// reads, so it is for records this process's own writer committed, never
/// for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp.
    pub ts: Nanos,
    /// Kind.
    pub kind: EventKind,
    /// The body's `session`, for kinds whose first field (key 0) it is.
    pub session: Option<SessionId>,
}

impl RecordHead {
    /// Reads the head of a record.
    pub fn parse(bytes: &[u8]) -> Result<RecordHead, DecodeError> {
        let mut dec = Dec::new(bytes);
        let offset = dec.offset();
        if dec.map()? != 4 {
            return Err(DecodeError::Unexpected {
                offset,
                expected: "a record map of four entries",
            });
        }
        dec.key(0)?;
        let seq = dec.uint()?;
        dec.key(1)?;
        let ts = dec.uint()?;
        dec.key(2)?;
        let offset = dec.offset();
        let kind = EventKind::from_code(dec.uint()?).ok_or(DecodeError::Unexpected {
            offset,
            expected: "a known event kind",
        })?;
        dec.key(3)?;
        let session = if kind.fields().first().is_some_and(|f| f.1 == "session") {
            dec.map()?;
            dec.key(0)?;
            Some(dec.uint()?)
        } else {
            None
        };
        Ok(RecordHead {
            seq,
            ts,
            kind,
            session,
        })
    }
}

/// Frames an encoded body into a record (docs/ledger-format.md, section 2).
pub fn record_bytes(seq: u64, ts: Nanos, kind: EventKind, body: &[u8]) -> Vec<u8> {
    record_bytes_of(seq, ts, kind, &[body])
}

/// [`record_bytes`] of a body given in pieces, concatenated.
pub fn record_bytes_of(seq: u64, ts: Nanos, kind: EventKind, body: &[&[u8]]) -> Vec<u8> {
    let len: usize = body.iter().map(|b| b.len()).sum();
    let mut enc = Enc::with_buffer(Vec::with_capacity(len + 24));
    enc.map(4);
    enc.uint(0);
    enc.uint(seq);
    enc.uint(1);
    enc.uint(ts);
    enc.uint(2);
    enc.uint(kind.code());
    enc.uint(3);
    for piece in body {
        enc.raw(piece);
    }
    enc.into_bytes()
}

/// Decodes one body struct on its own (used by tests and tools).
pub fn decode_body<T: Cbor>(bytes: &[u8]) -> Result<T, DecodeError> {
    cbor::decode_canonical(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_are_unique_and_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_code(kind.code()), Some(*kind));
        }
        assert_eq!(EventKind::from_code(0), None);
    }

    #[test]
    fn every_body_has_strictly_increasing_keys() {
        for kind in EventKind::ALL {
            let keys = kind.keys();
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "{} has keys {keys:?}",
                kind.name()
            );
            assert_eq!(keys.first(), Some(&0), "{} keys start at 0", kind.name());
        }
    }

    #[test]
    fn record_heads_match_the_decoded_events() {
        let opened = Event {
            seq: 3,
            ts: 9,
            body: SessionOpened {
                session: 77,
                identity: "a".into(),
                target: "t".into(),
                client_addr: "c".into(),
                application_name: None,
                credential: None,
                tls: false,
            }
            .into(),
        };
        let head = RecordHead::parse(&opened.to_bytes()).unwrap();
        assert_eq!(
            head,
            RecordHead {
                seq: 3,
                ts: 9,
                kind: EventKind::SessionOpened,
                session: Some(77)
            }
        );
        for kind in EventKind::ALL {
            let session_first = kind.fields().first().map(|f| f.1) == Some("session");
            assert!(
                !session_first || kind.fields()[0].2 == "SessionId",
                "{}",
                kind.name()
            );
        }
        let created = Event {
            seq: 4,
            ts: 10,
            body: IdentityCreated {
                identity: "a".into(),
                operator: "o".into(),
                description: None,
            }
            .into(),
        };
        assert_eq!(
            RecordHead::parse(&created.to_bytes()).unwrap().session,
            None
        );
    }

    #[test]
    fn the_rows_digest_is_rebuilt_from_the_recorded_rows() {
        // DataRow of ("42", NULL) as PostgreSQL frames it.
        let mut row = b"D".to_vec();
        row.extend(16u32.to_be_bytes());
        row.extend(2u16.to_be_bytes());
        row.extend(2i32.to_be_bytes());
        row.extend(b"42");
        row.extend((-1i32).to_be_bytes());
        let mut response = Response {
            session: 1,
            identity: "a".into(),
            query: 1,
            command_tag: Some("SELECT 2".into()),
            rows: 2,
            duration_ns: 5,
            sqlstate: None,
            error: None,
            bytes: 60,
            columns: vec![],
            result: vec![
                ResultRow {
                    values: vec![Some(Bytes(b"42".to_vec())), None],
                };
                2
            ],
            truncated: false,
            result_digest: None,
        };
        let both = [row.clone(), row].concat();
        let expected = blake3::hash(&both).as_bytes().to_vec();
        assert_eq!(response.recorded_rows_digest().to_vec(), expected);
        assert_eq!(response.rows_digest(), Some(expected));
        response.result_digest = Some(Bytes(vec![7; 32]));
        assert_eq!(response.rows_digest(), Some(vec![7; 32]));
        response.result_digest = None;
        response.result.clear();
        assert_eq!(response.rows_digest(), None);
    }

    #[test]
    fn record_round_trips() {
        let event = Event {
            seq: 7,
            ts: 1_700_000_000_123_456_789,
            body: EventBody::Decision(Decision {
                session: 3,
                identity: "agent-7".into(),
                query: 1,
                action: Action::Deny,
                rule: Some("no-ssn".into()),
                class: StatementClass::Read,
                tables: vec!["public.customers".into()],
                columns: vec!["public.customers.ssn".into()],
                message: Some("SSNs are off limits".into()),
            }),
        };
        let bytes = event.to_bytes();
        assert_eq!(Event::from_bytes(&bytes).unwrap(), event);
        assert_eq!(bytes[0], 0xa4);
    }
}
