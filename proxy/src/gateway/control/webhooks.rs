//! Webhook notifications of approval requests and decisions.
//!
//! Approvers learn of a held statement without polling: every approval event
//! is POSTed as JSON to each configured URL. Delivery happens on its own
//! thread from a bounded queue and is retried with exponential back-off; a
//! delivery that finally fails, or a notification dropped because the queue
//! was full, is recorded as an `OperatorAction` event (operator `gatehouse`,
//! action `webhook.deliver`). Nothing here ever blocks or fails the gateway.
//! At shutdown ([`Webhooks::finish`]) the queue is delivered for a short
//! grace period; whatever is left is recorded as not delivered, while the
//! ledger is still open, so no notification disappears without a trace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatehouse_ledger::event::{EventBody, OperatorAction};
use gatehouse_ledger::{Event, Ledger};
use serde_json::{json, Value};
use tracing::{info, warn};

/// Notifications waiting for delivery at most.
const QUEUE: usize = 1024;

/// The payload's `version`: bumped when a field changes meaning or goes.
pub const PAYLOAD_VERSION: u64 = 1;

/// Header carrying the request's Unix time in seconds (signed with it).
pub const TIMESTAMP_HEADER: &str = "X-Gatehouse-Timestamp";

/// Header carrying `v1=` and the hex HMAC-SHA256, keyed with the
/// webhook's secret, of the timestamp, a `.`, and the exact body bytes.
pub const SIGNATURE_HEADER: &str = "X-Gatehouse-Signature";

/// Where notifications go and how hard to try.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The URL POSTed to.
    pub url: String,
    /// Attempts per notification (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each.
    pub backoff: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Signs each request (see [`SIGNATURE_HEADER`]), if set.
    pub secret: Option<Vec<u8>>,
    /// Sends a Slack-compatible message instead of the JSON payload.
    pub slack: bool,
    /// The console's address as approvers reach it (`[admin] console_url`):
    /// each notification then links to its request in the console's inbox.
    pub console_url: Option<String>,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .field("signed", &self.secret.is_some())
            .field("slack", &self.slack)
            .finish()
    }
}

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes keys of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={tag}")
}

/// A Slack incoming-webhook message for a payload: who, what SQL with
/// which parameters, which rule, and the commands that decide it.
pub fn slack_message(payload: &Value) -> Value {
    let d = &payload["detail"];
    let id = &d["approval"];
    let text = match payload["event"].as_str() {
        Some("approval.requested") => {
            let params: Vec<String> = d["params"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| format!("${} = {}", i + 1, p.as_str().unwrap_or("NULL")))
                .collect();
            format!(
                ":lock: *Gatehouse approval {id}*: `{}` on session {} wants to run\n```{}```{}\nrule `{}`, {} approver(s) needed, expires {}\nApprove: `gatehouse approve {id}`   Deny: `gatehouse deny {id} --reason \"...\"`",
                d["identity"].as_str().unwrap_or("?"),
                d["session"],
                d["sql"].as_str().unwrap_or(""),
                if params.is_empty() {
                    String::new()
                } else {
                    format!("\nparameters: {}", params.join(", "))
                },
                d["rule"].as_str().unwrap_or("?"),
                d["approvers_required"],
                d["expires_at"].as_str().unwrap_or("?"),
            ) + &d["link"]
                .as_str()
                .map(|l| format!("\n<{l}|Open in the console>"))
                .unwrap_or_default()
        }
        Some("approval.granted") => format!(
            ":white_check_mark: Gatehouse approval {id} for `{}` approved by {}",
            d["identity"].as_str().unwrap_or("?"),
            d["operator"].as_str().unwrap_or("?")
        ),
        Some("approval.denied") => format!(
            ":no_entry: Gatehouse approval {id} for `{}` denied{}: {}",
            d["identity"].as_str().unwrap_or("?"),
            d["operator"]
                .as_str()
                .map(|o| format!(" by {o}"))
                .unwrap_or_default(),
            d["reason"].as_str().unwrap_or("")
        ),
        Some("approval.expired") => format!(
            ":hourglass: Gatehouse approval {id} for `{}` timed out; the statement was not run",
            d["identity"].as_str().unwrap_or("?")
        ),
        _ => format!("Gatehouse: {}", payload["event"]),
    };
    json!({ "text": text })
}

/// The sending side of the delivery thread.
pub struct Webhooks {
    /// Taken at [`Webhooks::finish`]; the thread ends once it is gone and
    /// the queue is empty.
    tx: Mutex<Option<SyncSender<Value>>>,
    dropped: Arc<AtomicU64>,
    /// Set at shutdown: past it, queued notifications are recorded as not
    /// delivered instead of sent, and no retry waits beyond it.
    stop_by: Arc<Mutex<Option<Instant>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Webhooks {
    /// Starts the delivery thread; it records failures in `ledger`.
    pub fn start(targets: Vec<WebhookTarget>, ledger: Ledger) -> Webhooks {
        let (tx, rx) = sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let stop_by = Arc::new(Mutex::new(None));
        let delivery = Delivery {
            targets,
            ledger,
            dropped: dropped.clone(),
            stop_by: stop_by.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("gatehouse-webhooks".into())
            .spawn(move || delivery.run(rx))
            .expect("spawning the webhook thread");
        Webhooks {
            tx: Mutex::new(Some(tx)),
            dropped,
            stop_by,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues the notification of an approval event; other events are
    /// ignored. Never waits.
    pub fn notify(&self, event: &Event) {
        let Some(payload) = payload(event) else {
            return;
        };
        let tx = self.tx.lock().expect("webhook sender");
        match tx.as_ref().map(|tx| tx.try_send(payload)) {
            Some(Ok(())) => {}
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// At shutdown, before the ledger closes: delivers what is queued for
    /// up to `grace` (plus one request's timeout), records the rest as not
    /// delivered, and waits for the delivery thread to end.
    pub fn finish(&self, grace: Duration) {
        *self.stop_by.lock().expect("webhook deadline") = Some(Instant::now() + grace);
        drop(self.tx.lock().expect("webhook sender").take());
        if let Some(thread) = self.thread.lock().expect("webhook thread").take() {
            let _ = thread.join();
        }
    }
}

/// `payload` with `detail.link`, the request's place in the console's
/// inbox, when the console's address is configured.
pub fn with_link(payload: &Value, console_url: Option<&str>) -> Value {
    let mut payload = payload.clone();
    if let (Some(base), Some(id)) = (console_url, payload["detail"]["approval"].as_u64()) {
        let link = format!("{}/console/inbox#approval-{id}", base.trim_end_matches('/'));
        if let Some(detail) = payload["detail"].as_object_mut() {
            detail.insert("link".into(), Value::String(link));
        }
    }
    payload
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
    Some(json!({
        "version": PAYLOAD_VERSION,
        "event": kind,
        "seq": event.seq,
        "at": at,
        "detail": body,
    }))
}

/// A parameter in a notification: text as sent, binary as `\x` and hex.
fn param_text(p: &gatehouse_ledger::event::Param) -> Option<String> {
    gatehouse_engine::approvals::ShownParam::of(p).text()
}

/// The delivery thread's side.
struct Delivery {
    targets: Vec<WebhookTarget>,
    ledger: Ledger,
    dropped: Arc<AtomicU64>,
    stop_by: Arc<Mutex<Option<Instant>>>,
}

impl Delivery {
    fn run(&self, rx: Receiver<Value>) {
        while let Ok(payload) = rx.recv() {
            self.record_dropped();
            for target in &self.targets {
                let what = payload["event"].as_str().unwrap_or("?");
                let seq = payload["seq"].as_u64().unwrap_or(0);
                let result = if self.past_deadline() {
                    Err("the gateway shut down before it could be sent".to_owned())
                } else {
                    self.send(target, &payload)
                };
                if let Err(e) = result {
                    warn!(url = %target.url, "webhook delivery failed: {e}");
                    record(
                        &self.ledger,
                        Some(&target.url),
                        format!("{what} (event {seq}) not delivered: {e}"),
                    );
                }
            }
        }
        self.record_dropped();
        info!("webhook delivery stopped");
    }

    fn record_dropped(&self) {
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            record(
                &self.ledger,
                None,
                format!("{lost} notifications dropped: the delivery queue was full or closed"),
            );
        }
    }

    fn deadline(&self) -> Option<Instant> {
        *self.stop_by.lock().expect("webhook deadline")
    }

    fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    fn send(&self, target: &WebhookTarget, payload: &Value) -> Result<(), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(target.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let payload = with_link(payload, target.console_url.as_deref());
        let body = if target.slack {
            slack_message(&payload)
        } else {
            payload
        }
        .to_string()
        .into_bytes();
        let mut wait = target.backoff;
        let mut last = String::new();
        let mut tried = 0;
        for attempt in 1..=target.attempts.max(1) {
            if attempt > 1 {
                // At shutdown, no retry waits past the grace period.
                if self.deadline().is_some_and(|d| Instant::now() + wait >= d) {
                    break;
                }
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
            tried = attempt;
            let mut request = agent
                .post(&target.url)
                .header("User-Agent", "gatehouse-webhooks")
                .header("Content-Type", "application/json");
            if let Some(secret) = &target.secret {
                // Signed per attempt: a receiver may refuse old timestamps.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                request = request
                    .header(TIMESTAMP_HEADER, &now.to_string())
                    .header(SIGNATURE_HEADER, &signature(secret, now, &body));
            }
            match request.send(&body[..]) {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("{last} after {tried} attempts"))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_console_links_each_notification_to_its_request() {
        let payload = json!({
            "event": "approval.requested",
            "seq": 9,
            "detail": {
                "approval": 7, "session": 3, "identity": "agent", "sql": "DELETE FROM t",
                "params": [], "rule": "hold", "approvers_required": 1, "expires_at": "later",
            },
        });
        assert_eq!(with_link(&payload, None), payload);
        let linked = with_link(&payload, Some("https://gh.internal:9443/"));
        assert_eq!(
            linked["detail"]["link"],
            "https://gh.internal:9443/console/inbox#approval-7"
        );
        let slack = slack_message(&linked)["text"].as_str().unwrap().to_owned();
        assert!(
            slack.ends_with(
                "<https://gh.internal:9443/console/inbox#approval-7|Open in the console>"
            ),
            "{slack}"
        );
        assert!(!slack_message(&payload)["text"]
            .as_str()
            .unwrap()
            .contains("console"));
    }
}
