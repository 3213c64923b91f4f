//! Approvals in Slack: each held statement is posted to a channel with
//! "Approve once" and "Deny" buttons, and the message is updated when any
//! vote or decision lands, whichever channel it came from.
//!
//! Button presses arrive over Socket Mode: the gateway opens an outbound
//! WebSocket (`apps.connections.open` with the app-level token), so it
//! needs no public address, and what arrives on it was sent by Slack.
//! A press acts only for the operator its Slack user is linked to
//! (`ChatUserLinked`, recorded from the operator's signed-in console
//! session, see [`crate::gateway::control::chat_links`]), through the
//! same role check ([`admin::permit`]) and approval desk as the console
//! and the `/v1` API: quorum and self-approval hold whatever the channel.
//! An unlinked user is offered a link, visible only to them.
//!
//! Nothing here can hold up a statement: a Slack outage delays nobody but
//! the approvers, and a message that could not be posted or updated is
//! recorded (`OperatorAction` `slack.deliver`, outcome `failed`).

pub mod api;
pub mod blocks;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatehouse_engine::approvals::{ApprovalStatus, Vote};
use gatehouse_engine::operators::Role;
use gatehouse_ledger::event::ChatUserLinked;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tracing::{info, warn};

use crate::gateway::control::admin;
use crate::gateway::control::chat_links::{ChatLinkCodes, ChatUser, TTL};
use crate::gateway::control::shared::Shared;
use api::{Token, WebApi};
use blocks::{Interaction, SlackUser};

/// The chat service's name in `ChatUserLinked` events.
pub const SERVICE: &str = "slack";

/// Longest wait between attempts to (re)open the Socket Mode connection.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Envelope ids remembered to drop Slack's redeliveries.
const SEEN: usize = 256;

/// `[slack]`, checked, with its tokens.
#[derive(Clone)]
pub struct SlackConfig {
    /// The channel requests are posted in.
    pub channel: String,
    /// `xoxb-...`.
    pub bot_token: String,
    /// `xapp-...`.
    pub app_token: String,
    /// Slack's Web API base URL.
    pub api_url: String,
    /// The console's base URL (links to requests and for linking users).
    pub console_url: String,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("channel", &self.channel)
            .field("api_url", &self.api_url)
            .field("console_url", &self.console_url)
            .finish()
    }
}

/// Starts the integration; the task ends when the gateway shuts down.
pub fn start(
    shared: Arc<Shared>,
    config: SlackConfig,
    links: Arc<ChatLinkCodes>,
) -> tokio::task::JoinHandle<()> {
    let slack = Arc::new(Slack {
        api: WebApi::new(&config.api_url, &config.bot_token, &config.app_token),
        shared,
        config,
        links,
        seen: Mutex::new(VecDeque::new()),
    });
    tokio::spawn(async move {
        tokio::join!(slack.clone().announce(), slack.listen());
    })
}

struct Slack {
    shared: Arc<Shared>,
    config: SlackConfig,
    api: WebApi,
    links: Arc<ChatLinkCodes>,
    seen: Mutex<VecDeque<String>>,
}

/// A request's message in the channel.
struct Posted {
    channel: String,
    ts: String,
    shown: Value,
}

/// How a Socket Mode connection ended.
enum Ended {
    /// The gateway is shutting down.
    Shutdown,
    /// Slack asked for a new connection, or the connection broke;
    /// `healthy` if it got as far as Slack's `hello`.
    Reconnect { healthy: bool },
}

impl Slack {
    /// Posts each new request and updates its message until it is decided.
    async fn announce(self: Arc<Self>) {
        let desk = &self.shared.approvals;
        let mut changes = desk.changes();
        let mut stop = self.shared.shutdown.subscribe();
        let mut last = desk.newest();
        let mut posted: BTreeMap<u64, Posted> = BTreeMap::new();
        loop {
            for (id, a) in desk.newer_than(last) {
                last = id;
                // In a cluster, the gateway holding the statement posts it.
                if !desk.holds(id) {
                    continue;
                }
                let message = self.message(id, &a);
                let mut body = message.clone();
                body["channel"] = json!(self.config.channel);
                body["unfurl_links"] = json!(false);
                match self.api.call("chat.postMessage", Token::Bot, body).await {
                    Ok(answer) => {
                        if let (Some(channel), Some(ts)) =
                            (answer["channel"].as_str(), answer["ts"].as_str())
                        {
                            posted.insert(
                                id,
                                Posted {
                                    channel: channel.to_owned(),
                                    ts: ts.to_owned(),
                                    shown: message,
                                },
                            );
                        }
                    }
                    Err(e) => {
                        self.failed(id, format!("request {id} not posted: {e}"))
                            .await
                    }
                }
            }
            let mut done = Vec::new();
            for (id, p) in posted.iter_mut() {
                let Some(a) = desk.get(*id) else { continue };
                let message = self.message(*id, &a);
                if message != p.shown {
                    let mut body = message.clone();
                    body["channel"] = json!(p.channel);
                    body["ts"] = json!(p.ts);
                    match self.api.call("chat.update", Token::Bot, body).await {
                        Ok(_) => p.shown = message,
                        Err(e) => {
                            self.failed(*id, format!("request {id}'s message not updated: {e}"))
                                .await
                        }
                    }
                }
                if a.status != ApprovalStatus::Pending {
                    done.push(*id);
                }
            }
            for id in done {
                posted.remove(&id);
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = stopped(&mut stop) => return,
            }
        }
    }

    fn message(&self, id: u64, a: &gatehouse_engine::approvals::Approval) -> Value {
        let application = self
            .shared
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&a.session)
            .and_then(|s| s.application_name.clone());
        blocks::request_message(
            &blocks::Context {
                approval: id,
                application: application.as_deref(),
                link: format!("{}/console/inbox#approval-{id}", self.config.console_url),
            },
            a,
        )
    }

    async fn failed(&self, approval: u64, detail: String) {
        warn!(approval, "Slack: {detail}");
        admin::record(
            &self.shared,
            "gatehouse",
            "slack.deliver",
            Some(&approval.to_string()),
            "failed",
            Some(detail),
        )
        .await;
    }

    /// Keeps a Socket Mode connection open until shutdown, reconnecting
    /// with back-off.
    async fn listen(self: Arc<Self>) {
        let mut stop = self.shared.shutdown.subscribe();
        let mut backoff = Duration::from_secs(1);
        loop {
            let stopping = *stop.borrow();
            if stopping {
                return;
            }
            let ended = match self.connect().await {
                Ok(ws) => {
                    info!("Slack: Socket Mode connected");
                    self.clone().serve(ws, &mut stop).await
                }
                Err(e) => {
                    warn!(
                        "Slack: cannot open a Socket Mode connection: {e}; retrying in {backoff:?}"
                    );
                    Ended::Reconnect { healthy: false }
                }
            };
            match ended {
                Ended::Shutdown => return,
                Ended::Reconnect { healthy: true } => backoff = Duration::from_secs(1),
                Ended::Reconnect { healthy: false } => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stopped(&mut stop) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connect(
        &self,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        String,
    > {
        let answer = self
            .api
            .call("apps.connections.open", Token::App, json!({}))
            .await
            .map_err(|e| e.to_string())?;
        let url = answer["url"]
            .as_str()
            .ok_or("apps.connections.open gave no url")?;
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connecting to the Socket Mode URL failed: {e}"))?;
        Ok(ws)
    }

    /// Reads envelopes until the connection ends; each is handled on its
    /// own task and acknowledged through this loop.
    async fn serve(
        self: Arc<Self>,
        ws: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Ended {
        let (mut sink, mut stream) = ws.split();
        let (acks, mut to_ack) = tokio::sync::mpsc::channel::<Value>(64);
        let mut healthy = false;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let text = match message {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | None => return Ended::Reconnect { healthy },
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            warn!("Slack: the Socket Mode connection failed: {e}");
                            return Ended::Reconnect { healthy };
                        }
                    };
                    let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else {
                        warn!("Slack: an envelope that is not JSON was ignored");
                        continue;
                    };
                    match envelope["type"].as_str() {
                        Some("hello") => healthy = true,
                        Some("disconnect") => {
                            info!(reason = envelope["reason"].as_str().unwrap_or("?"), "Slack asked to reconnect");
                            let _ = sink.close().await;
                            return Ended::Reconnect { healthy: true };
                        }
                        _ => {
                            if let Some(id) = envelope["envelope_id"].as_str() {
                                if self.first_delivery(id) {
                                    tokio::spawn(self.clone().envelope(envelope, acks.clone()));
                                } else {
                                    let _ = acks.send(json!({"envelope_id": id})).await;
                                }
                            }
                        }
                    }
                }
                Some(ack) = to_ack.recv() => {
                    if let Err(e) = sink.send(Message::text(ack.to_string())).await {
                        warn!("Slack: an acknowledgement was not sent: {e}");
                        return Ended::Reconnect { healthy };
                    }
                }
                _ = stopped(stop) => {
                    let _ = sink.close().await;
                    return Ended::Shutdown;
                }
            }
        }
    }

    fn first_delivery(&self, envelope: &str) -> bool {
        let mut seen = self.seen.lock().expect("seen envelopes");
        if seen.iter().any(|s| s == envelope) {
            return false;
        }
        if seen.len() == SEEN {
            seen.pop_front();
        }
        seen.push_back(envelope.to_owned());
        true
    }

    /// Handles one envelope: a button press is acknowledged at once (Slack
    /// wants an answer within 3 s) and then acted on; a dialog submission
    /// is acted on first, as the acknowledgement carries its outcome.
    async fn envelope(self: Arc<Self>, envelope: Value, acks: tokio::sync::mpsc::Sender<Value>) {
        let id = envelope["envelope_id"].clone();
        let interaction = if envelope["type"] == "interactive" {
            blocks::interaction(&envelope["payload"])
        } else {
            Interaction::Other
        };
        if let Interaction::Deny {
            approval,
            user,
            channel,
            reason,
        } = interaction
        {
            let answer = self
                .deny(approval, &user, channel.as_deref(), &reason)
                .await;
            let mut ack = json!({"envelope_id": id});
            if let Some(payload) = answer {
                ack["payload"] = payload;
            }
            let _ = acks.send(ack).await;
            return;
        }
        let _ = acks.send(json!({"envelope_id": id})).await;
        match interaction {
            Interaction::Approve {
                approval,
                user,
                channel,
            } => self.approve(approval, &user, channel.as_deref()).await,
            Interaction::AskReason {
                approval,
                user,
                channel,
                trigger_id,
            } => {
                self.ask_reason(approval, &user, channel.as_deref(), &trigger_id)
                    .await
            }
            Interaction::Deny { .. } | Interaction::Other => {}
        }
    }

    /// The operator `user` is linked to.
    fn operator_of(&self, user: &SlackUser) -> Option<String> {
        self.shared
            .operators
            .read()
            .expect("operators lock")
            .chat_operator(SERVICE, &user.workspace, &user.id)
            .map(|o| o.name.clone())
    }

    /// Tells `user`, and only them, something in `channel`.
    async fn tell(&self, user: &SlackUser, channel: Option<&str>, text: String) {
        let Some(channel) = channel else {
            warn!(user = user.id, "Slack: no channel to answer in: {text}");
            return;
        };
        let body = json!({"channel": channel, "user": user.id, "text": text});
        if let Err(e) = self.api.call("chat.postEphemeral", Token::Bot, body).await {
            warn!(user = user.id, "Slack: an answer was not delivered: {e}");
        }
    }

    /// An unlinked user pressed a button: recorded, and offered a link.
    async fn offer_link(
        &self,
        user: &SlackUser,
        channel: Option<&str>,
        action: &str,
        approval: u64,
    ) {
        admin::record(
            &self.shared,
            &format!("(slack user {} in {})", user.id, user.workspace),
            action,
            Some(&approval.to_string()),
            "unlinked",
            Some("the Slack user is linked to no operator; a link was offered".into()),
        )
        .await;
        let code = self.links.issue(ChatUser {
            service: SERVICE.into(),
            workspace: user.workspace.clone(),
            user: user.id.clone(),
            display: user.name.clone(),
        });
        let url = format!("{}/console/link/{code}", self.config.console_url);
        self.tell(
            user,
            channel,
            format!(
                "Your Slack user is not linked to a Gatehouse operator, so nothing was done. \
                 Open <{url}|this link> and sign in to the console as yourself to link it \
                 (the link works once, within {} minutes), then press the button again.",
                TTL.as_secs() / 60
            ),
        )
        .await;
    }

    async fn approve(&self, approval: u64, user: &SlackUser, channel: Option<&str>) {
        let Some(operator) = self.operator_of(user) else {
            return self
                .offer_link(user, channel, "approval.approve", approval)
                .await;
        };
        let target = approval.to_string();
        let outcome = match admin::permit(
            &self.shared,
            Some(&operator),
            "approval.approve",
            Some(&target),
            &[Role::Approver],
        )
        .await
        {
            Err(refusal) => Err(refusal.1),
            Ok(operator) => self
                .shared
                .approve_request(approval, &operator, None)
                .await
                .map_err(|e| admin::desk_refusal(e).1),
        };
        let text = match outcome {
            Ok(Vote::Released { .. }) => {
                format!("You approved request {approval} as {operator}: the statement runs.")
            }
            Ok(Vote::Counted { have, need }) => format!(
                "You approved request {approval} as {operator}: {have} of {need} approvals."
            ),
            Err(why) => format!("Request {approval} was not approved: {why}"),
        };
        self.tell(user, channel, text).await;
    }

    async fn ask_reason(
        &self,
        approval: u64,
        user: &SlackUser,
        channel: Option<&str>,
        trigger_id: &str,
    ) {
        if self.operator_of(user).is_none() {
            return self
                .offer_link(user, channel, "approval.deny", approval)
                .await;
        }
        let body =
            json!({"trigger_id": trigger_id, "view": blocks::deny_dialog(approval, channel)});
        if let Err(e) = self.api.call("views.open", Token::Bot, body).await {
            self.tell(
                user,
                channel,
                format!("The reason dialog did not open ({e}); deny request {approval} in the console instead."),
            )
            .await;
        }
    }

    /// A submitted denial: `None` closes the dialog (denied); otherwise
    /// the dialog stays open showing why not.
    async fn deny(
        &self,
        approval: u64,
        user: &SlackUser,
        channel: Option<&str>,
        reason: &str,
    ) -> Option<Value> {
        if reason.is_empty() {
            return Some(blocks::dialog_error(
                "A reason is required: it is recorded and sent to the client.",
            ));
        }
        let Some(operator) = self.operator_of(user) else {
            self.offer_link(user, channel, "approval.deny", approval)
                .await;
            return Some(blocks::dialog_error(
                "Your Slack user is not linked to an operator: see the link sent to you.",
            ));
        };
        let target = approval.to_string();
        let operator = match admin::permit(
            &self.shared,
            Some(&operator),
            "approval.deny",
            Some(&target),
            &[Role::Approver],
        )
        .await
        {
            Ok(operator) => operator,
            Err(refusal) => return Some(blocks::dialog_error(&refusal.1)),
        };
        match self
            .shared
            .deny_request(approval, Some(&operator), reason)
            .await
        {
            Ok(()) => None,
            Err(e) => Some(blocks::dialog_error(&admin::desk_refusal(e).1)),
        }
    }
}

/// Resolves once the gateway is shutting down.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// The event recording that the signed-in `operator` linked `user`.
pub fn link_event(operator: &str, user: ChatUser) -> ChatUserLinked {
    ChatUserLinked {
        operator: operator.to_owned(),
        service: user.service,
        workspace: user.workspace,
        user: user.user,
        display: user.display,
        linked_by: operator.to_owned(),
    }
}
