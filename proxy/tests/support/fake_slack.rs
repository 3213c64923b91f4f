//! A stand-in for Slack on 127.0.0.1, the way Teleport's integration tests
//! fake it: the Web API methods the gateway calls (recorded, with the
//! token each carried), and Socket Mode (`apps.connections.open` hands out
//! a local `ws://` URL; the test pushes envelopes down it and reads the
//! gateway's acknowledgements).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// One Web API call as the fake received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub token: String,
    pub body: Value,
}

#[derive(Default)]
struct Recorded {
    calls: Mutex<Vec<Call>>,
    acks: Mutex<Vec<Value>>,
    connections: AtomicUsize,
    posted: AtomicUsize,
    socket_url: Mutex<String>,
    /// Envelopes waiting to go down the open socket.
    outbox: tokio::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Value>>>,
}

/// The fake, serving until dropped with the test's runtime.
pub struct FakeSlack {
    /// What `[slack] api_url` is set to.
    pub api_url: String,
    recorded: Arc<Recorded>,
    push: tokio::sync::mpsc::UnboundedSender<Value>,
}

async fn method(
    State(recorded): State<Arc<Recorded>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    recorded.calls.lock().unwrap().push(Call {
        method: method.clone(),
        token: token.clone(),
        body: body.clone(),
    });
    let wanted = if method == "apps.connections.open" {
        "xapp-"
    } else {
        "xoxb-"
    };
    if !token.starts_with(wanted) {
        return Json(json!({"ok": false, "error": "invalid_auth"}));
    }
    Json(match method.as_str() {
        "apps.connections.open" => {
            json!({"ok": true, "url": recorded.socket_url.lock().unwrap().clone()})
        }
        "chat.postMessage" => {
            let n = recorded.posted.fetch_add(1, Ordering::SeqCst) + 1;
            json!({"ok": true, "channel": body["channel"], "ts": format!("1700000000.{n:06}")})
        }
        "chat.update" => json!({"ok": true, "channel": body["channel"], "ts": body["ts"]}),
        "chat.postEphemeral" => json!({"ok": true, "message_ts": "1700000001.000001"}),
        "views.open" => json!({"ok": true, "view": {"id": "V1"}}),
        _ => json!({"ok": false, "error": "unknown_method"}),
    })
}

impl FakeSlack {
    /// Starts the Web API and the Socket Mode endpoint.
    pub async fn start() -> FakeSlack {
        let recorded = Arc::new(Recorded::default());
        let (push, outbox) = tokio::sync::mpsc::unbounded_channel();
        *recorded.outbox.lock().await = Some(outbox);
        let sockets = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *recorded.socket_url.lock().unwrap() = format!(
            "ws://{}/link/?ticket=test-ticket",
            sockets.local_addr().unwrap()
        );
        let socket_side = recorded.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = sockets.accept().await {
                let recorded = socket_side.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    serve_socket(recorded, ws).await;
                });
            }
        });
        let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}/api", web.local_addr().unwrap());
        let app = Router::new()
            .route("/api/{method}", post(method))
            .with_state(recorded.clone());
        tokio::spawn(async move {
            let _ = axum::serve(web, app).await;
        });
        FakeSlack {
            api_url,
            recorded,
            push,
        }
    }

    /// Every call of `method` so far, oldest first.
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.recorded
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Waits (up to 10 s) for the `n`th call (counting from 1) of `method`.
    pub async fn nth_call(&self, method: &str, n: usize) -> Call {
        self.nth_call_where(method, |_| true, n).await
    }

    /// Waits (up to 10 s) for the `n`th call (counting from 1) of `method`
    /// that `which` picks.
    pub async fn nth_call_where(
        &self,
        method: &str,
        which: impl Fn(&Call) -> bool,
        n: usize,
    ) -> Call {
        within_10s(
            || {
                self.calls(method)
                    .into_iter()
                    .filter(|c| which(c))
                    .nth(n - 1)
            },
            || {
                format!(
                    "no call {n} of {method} of that kind; calls: {:#?}",
                    self.calls(method)
                )
            },
        )
        .await
    }

    /// Waits (up to 10 s) for a call of `method` whose body's text shows
    /// `needle`.
    pub async fn call_showing(&self, method: &str, needle: &str) -> Call {
        self.nth_call_where(method, |c| c.body.to_string().contains(needle), 1)
            .await
    }

    /// How many Socket Mode connections the gateway has opened.
    pub fn connections(&self) -> usize {
        self.recorded.connections.load(Ordering::SeqCst)
    }

    /// Waits (up to 10 s) until the gateway has opened `n` connections.
    pub async fn connected(&self, n: usize) {
        within_10s(
            || (self.connections() >= n).then_some(()),
            || {
                format!(
                    "the gateway opened {} Socket Mode connections, not {n}",
                    self.connections()
                )
            },
        )
        .await
    }

    /// Sends an envelope down the open socket.
    pub fn push(&self, envelope: Value) {
        self.push.send(envelope).unwrap();
    }

    /// Pushes an `interactive` payload; returns the gateway's
    /// acknowledgement of it (waiting up to 10 s).
    pub async fn interact(&self, payload: Value) -> Value {
        self.deliver(payload, 1).await
    }

    /// Pushes the same envelope `times` times, as Slack redelivers one it
    /// thinks was not acknowledged; returns the last acknowledgement.
    pub async fn deliver(&self, payload: Value, times: usize) -> Value {
        let id = format!("env-{}", rand_id());
        for _ in 0..times {
            self.push(json!({
                "envelope_id": id,
                "type": "interactive",
                "accepts_response_payload": true,
                "retry_attempt": 0,
                "payload": payload,
            }));
        }
        within_10s(
            || {
                let acks = self.recorded.acks.lock().unwrap();
                let mine: Vec<&Value> = acks
                    .iter()
                    .filter(|a| a["envelope_id"] == id.as_str())
                    .collect();
                (mine.len() >= times).then(|| mine[times - 1].clone())
            },
            || format!("envelope {id} was not acknowledged {times} times"),
        )
        .await
    }
}

/// `found()` once it finds something, polling for up to 10 s; then fails
/// saying `missing()`.
async fn within_10s<T>(mut found: impl FnMut() -> Option<T>, missing: impl Fn() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(t) = found() {
            return t;
        }
        assert!(Instant::now() < deadline, "{}", missing());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn rand_id() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::SeqCst) as u64
}

/// A Slack user pressing a button of a Gatehouse message.
pub fn press(action_id: &str, approval: u64, user: &str) -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
        "channel": {"id": "C1"},
        "container": {"type": "message", "channel_id": "C1", "message_ts": "1700000000.000001"},
        "trigger_id": format!("trigger-{user}-{approval}"),
        "actions": [{"action_id": action_id, "value": approval.to_string(), "type": "button"}],
    })
}

/// A Slack user submitting the dialog `view` (as `views.open` got it).
pub fn submit(view: &Value, user: &str, reason: &str) -> Value {
    json!({
        "type": "view_submission",
        "team": {"id": "T1"},
        "user": {"id": user, "username": user.to_lowercase(), "team_id": "T1"},
        "view": {
            "id": "V1",
            "callback_id": view["callback_id"],
            "private_metadata": view["private_metadata"],
            "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}},
        },
    })
}

async fn serve_socket(
    recorded: Arc<Recorded>,
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    // One connection owns the outbox at a time; a reconnection takes over.
    let mut outbox = loop {
        if let Some(rx) = recorded.outbox.lock().await.take() {
            break rx;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    recorded.connections.fetch_add(1, Ordering::SeqCst);
    let (mut sink, mut stream) = ws.split();
    let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}});
    let _ = sink.send(Message::text(hello.to_string())).await;
    loop {
        tokio::select! {
            envelope = outbox.recv() => {
                let Some(envelope) = envelope else { break };
                let disconnect = envelope["type"] == "disconnect";
                if sink.send(Message::text(envelope.to_string())).await.is_err() {
                    break;
                }
                if disconnect {
                    let _ = sink.close().await;
                    break;
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(ack) = serde_json::from_str::<Value>(text.as_str()) {
                        recorded.acks.lock().unwrap().push(ack);
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    *recorded.outbox.lock().await = Some(outbox);
}
