//! Webhook notifications of approval requests and decisions.
//!
//! Approvers learn of a held statement without polling: every approval event
//! is POSTed as JSON to each configured URL. Delivery happens on its own
//! thread from a bounded queue and is retried with exponential back-off; a
//! delivery that finally fails, or a notification dropped because the queue
//! was full, is recorded as an `OperatorAction` event (operator `gatehouse`,
//! action `webhook.deliver`). Nothing here ever blocks or fails the gateway.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use gatehouse_ledger::event::{EventBody, OperatorAction};
use gatehouse_ledger::{Event, Ledger};
use serde_json::{json, Value};
use tracing::{info, warn};

/// Notifications waiting for delivery at most.
const QUEUE: usize = 1024;

/// Where notifications go and how hard to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The URL POSTed to.
    pub url: String,
    /// Attempts per notification (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// The sending side of the delivery thread.
pub struct Webhooks {
    tx: SyncSender<Value>,
    dropped: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts the delivery thread; it records failures in `ledger`.
    pub fn start(targets: Vec<WebhookTarget>, ledger: Ledger) -> Webhooks {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = dropped.clone();
        // The thread ends when the last sender is dropped, after delivering
        // what is queued; the gateway does not wait for it at shutdown
        // (a dead receiver could hold it for minutes).
        std::thread::Builder::new()
            .name("gatehouse-webhooks".into())
            .spawn(move || deliver(rx, &targets, &ledger, &counter))
            .expect("spawning the webhook thread");
        Webhooks { tx, dropped }
    }

    /// Queues the notification of an approval event; other events are
    /// ignored. Never waits.
    pub fn notify(&self, event: &Event) {
        let Some(payload) = payload(event) else {
            return;
        };
        match self.tx.try_send(payload) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The JSON document for an approval event.
pub fn payload(event: &Event) -> Option<Value> {
    let at = gatehouse_verify::report::rfc3339(event.ts);
    let (kind, body) = match &event.body {
        EventBody::ApprovalRequested(a) => (
            "approval.requested",
            json!({
                "approval": a.approval,
                "session": a.session,
                "identity": a.identity,
                "query": a.query,
                "sql": a.sql,
                "params": a.params.iter().map(param_text).collect::<Vec<_>>(),
                "class": gatehouse_engine::policy::class_name(a.class),
                "rule": a.rule,
                "fingerprint": a.fingerprint,
                "approvers_required": a.quorum,
                "expires_at": gatehouse_verify::report::rfc3339(a.expires_at),
            }),
        ),
        EventBody::ApprovalGranted(g) => (
            "approval.granted",
            json!({
                "approval": g.approval,
                "session": g.session,
                "identity": g.identity,
                "operator": g.operator,
                "grant_until": g.grant_until.map(gatehouse_verify::report::rfc3339),
            }),
        ),
        EventBody::ApprovalDenied(d) => (
            "approval.denied",
            json!({
                "approval": d.approval,
                "session": d.session,
                "identity": d.identity,
                "operator": d.operator,
                "reason": d.reason,
            }),
        ),
        EventBody::ApprovalExpired(e) => (
            "approval.expired",
            json!({
                "approval": e.approval,
                "session": e.session,
                "identity": e.identity,
            }),
        ),
        _ => return None,
    };
    Some(json!({ "event": kind, "seq": event.seq, "at": at, "detail": body }))
}

/// A parameter as text: text-format values as sent (if UTF-8), binary ones
/// in PostgreSQL's `\\x` hex notation.
fn param_text(p: &gatehouse_ledger::event::Param) -> Option<String> {
    let v = &p.value.as_ref()?.0;
    match (p.format, std::str::from_utf8(v)) {
        (0, Ok(text)) => Some(text.to_owned()),
        _ => Some(format!(
            "\\x{}",
            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )),
    }
}

fn deliver(rx: Receiver<Value>, targets: &[WebhookTarget], ledger: &Ledger, dropped: &AtomicU64) {
    while let Ok(payload) = rx.recv() {
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            record(
                ledger,
                None,
                format!("{lost} notifications dropped: the delivery queue was full"),
            );
        }
        for target in targets {
            if let Err(e) = send(target, &payload) {
                warn!(url = %target.url, "webhook delivery failed: {e}");
                let what = payload["event"].as_str().unwrap_or("?");
                let seq = payload["seq"].as_u64().unwrap_or(0);
                record(
                    ledger,
                    Some(&target.url),
                    format!("{what} (event {seq}) not delivered: {e}"),
                );
            }
        }
    }
    info!("webhook delivery stopped");
}

fn send(target: &WebhookTarget, payload: &Value) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(target.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut wait = target.backoff;
    let mut last = String::new();
    for attempt in 1..=target.attempts.max(1) {
        if attempt > 1 {
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
        match agent
            .post(&target.url)
            .header("User-Agent", "gatehouse-webhooks")
            .send_json(payload)
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("{last} after {} attempts", target.attempts.max(1)))
}

fn record(ledger: &Ledger, url: Option<&str>, detail: String) {
    let event = OperatorAction {
        operator: "gatehouse".into(),
        action: "webhook.deliver".into(),
        target: url.map(str::to_owned),
        outcome: "failed".into(),
        detail: Some(detail),
    };
    if let Err(e) = ledger.append_blocking(&[event.into()]) {
        warn!("cannot record a webhook failure: {e}");
    }
}
