//! The machine-readable replay: one JSON document, stable in shape.
//!
//! ```text
//! {
//!   "format": "gatehouse-replay/1",
//!   "ledger": "path/to/ledger.db",
//!   "verify": "gatehouse-verify path/to/ledger.db --key path/to/verifier.pub",
//!   "checkpoint": {"size": 120, "root": "<base64>", "key": "<name>+<id>" | null} | null,
//!   "covered_by_checkpoint": true,
//!   "unsigned_not_shown": 0,          // events of the selection no checkpoint covers yet
//!   "selection": {"session": 3} | {"identity": "agent"},
//!   "window": {"from": null | {"seq": 10} | {"ts": <ns>, "time": "<RFC 3339>"}, "to": <same>},
//!   "events": {"count": 12, "first": <stamp>, "last": <stamp>} | null,
//!   "summary": {"sessions", "statements", "allowed", "denied", "held_for_approval",
//!               "masked", "errors", "terminations", "authentication_failures", "blocks"},
//!   "entries": [<entry>, ...]          // in log order
//! }
//! ```
//!
//! A `<stamp>` is `{"seq": <event number>, "ts": <Unix ns>, "time": "<RFC 3339>"}`;
//! other instants (expiries) are RFC 3339 strings. Every entry has `"kind"`
//! and `"at"` (a stamp):
//!
//! * `session_opened`: `session`, `identity`, `target`, `client_addr`,
//!   `application_name`, `credential`, `tls`.
//! * `session_closed`: `session`, `identity`, `reason`, `statements`.
//! * `session_terminated`: `session`, `identity`, `operator` (null: the
//!   gateway), `reason`.
//! * `statement`: `session`, `identity`, `query`, and, each null when its
//!   event lies outside the window (or never happened):
//!   `received` {`at`, `sql`, `params`: [{`format`: "text"|"binary", `value`}],
//!   `protocol`: "simple"|"extended"|"copy", `statement`, `portal`},
//!   `decision` {`at`, `action`: "allow"|"deny"|"require_approval"|"mask",
//!   `rule` (null: the default), `class`, `tables`, `columns`, `message`},
//!   `approvals` [{`approval`, `requested` {`at`, `rule`, `class`, `quorum`,
//!   `expires_at`, `fingerprint`, `binding` (hex)} | null, `outcomes`
//!   [{`outcome`: "granted", `at`, `operator`, `grant_until`} |
//!   {`outcome`: "denied", `at`, `operator`, `reason`} | {`outcome`: "expired", `at`}]}],
//!   `masks` [{`at`, `columns` [{`column`, `strategy`, `values`}]}],
//!   `outcome_unknown` (true: let through, but the session ended with no
//!   response recorded),
//!   `response` {`at`, `command_tag`, `rows`, `duration_ns`, `sqlstate`,
//!   `error`, `bytes`, `columns` [{`name`, `type_oid`, `type_name`,
//!   `format`}], `result` [[<value>, ...], ...], `truncated`,
//!   `result_digest` (hex BLAKE3 of the unmasked rows)}.
//! * `approval_outcome` (its request lies before the window): `approval`,
//!   `session`, `identity`, `outcome` (as above).
//! * `authentication_failed`: `identity` (as claimed), `client_addr`, `target`, `reason`.
//! * `identity_created`: `identity`, `operator`, `description`.
//! * `identity_blocked`: `identity`, `operator`, `reason`, `trigger`.
//! * `identity_unblocked`: `identity`, `operator`, `reason`.
//! * `credential_issued`: `credential`, `identity`, `operator`, `expires_at`.
//! * `credential_revoked`: `credential`, `identity`, `operator`, `reason`.
//! * `other`: `event` (the event kind's name), `detail` (who acted and what, or null).
//!
//! A `<value>` is `null` (SQL NULL), `{"text": "..."}` (a text-format value,
//! exactly), or `{"hex": "...", "decoded": "..."}` (a binary-format value,
//! or text that is not UTF-8; `decoded` only for common types). Fields are
//! only ever added to this format; a change to existing ones changes
//! `format`.

use serde::Serialize;

use super::{CheckpointInfo, Replay, Timeline};

/// The document's format name and version.
pub const FORMAT: &str = "gatehouse-replay/1";

#[derive(Serialize)]
struct Document<'a> {
    format: &'static str,
    ledger: String,
    verify: &'a str,
    checkpoint: &'a Option<CheckpointInfo>,
    covered_by_checkpoint: bool,
    unsigned_not_shown: u64,
    #[serde(flatten)]
    timeline: &'a Timeline,
}

fn shape(replay: &Replay) -> Document<'_> {
    Document {
        format: FORMAT,
        ledger: replay.ledger.display().to_string(),
        verify: &replay.verify,
        checkpoint: &replay.checkpoint,
        covered_by_checkpoint: replay.covered_by_checkpoint(),
        unsigned_not_shown: replay.unsigned_not_shown,
        timeline: &replay.timeline,
    }
}

/// The replay as a JSON value (objects' keys sorted), for programs.
pub fn document(replay: &Replay) -> serde_json::Value {
    serde_json::to_value(shape(replay)).expect("a replay is plain data and always serializes")
}

/// The replay as pretty-printed JSON, fields in the documented order.
pub fn render(replay: &Replay) -> String {
    let mut text = serde_json::to_string_pretty(&shape(replay))
        .expect("a replay is plain data and always serializes");
    text.push('\n');
    text
}
