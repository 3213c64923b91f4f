//! What the Slack integration says and what it understands: messages for
//! held statements (Block Kit), the deny dialog, and the interaction
//! payloads Slack sends back. Pure functions, unit-tested without Slack.
//!
//! Everything an agent controls (SQL, parameters, identity, application
//! name) is shown as `plain_text` or escaped, so it can neither format,
//! link nor mention anyone.

use gatehouse_engine::approvals::{Approval, ApprovalStatus};
use serde_json::{json, Value};

/// The "Approve once" button's `action_id`; its `value` is the request.
pub const APPROVE: &str = "gatehouse.approve";
/// The "Deny" button's `action_id`: it opens [`deny_dialog`].
pub const DENY: &str = "gatehouse.deny";
/// The "Open in the console" link button's `action_id` (nothing to do).
pub const OPEN: &str = "gatehouse.open";
/// The deny dialog's `callback_id`.
pub const DENY_DIALOG: &str = "gatehouse.deny-reason";
/// The reason input's `block_id` and `action_id`.
pub const REASON: &str = "reason";

/// Longest SQL shown in a message (Slack's text limit is 3,000).
const SQL_SHOWN: usize = 2_800;
/// Longest field value shown (Slack's limit is 2,000).
const FIELD_SHOWN: usize = 1_500;

/// Escapes what Slack's `mrkdwn` reads as markup: `&`, `<`, `>` (links,
/// mentions, dates).
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to at most `max` bytes (on a character boundary), saying how
/// much was left out.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes: open in the console)",
        &text[..end],
        text.len() - end
    )
}

/// What a message shows about a request, beside the request itself.
pub struct Context<'a> {
    /// The request's number.
    pub approval: u64,
    /// The holding session's `application_name`, while it is connected.
    pub application: Option<&'a str>,
    /// The request in the console's inbox.
    pub link: String,
}

/// The message for a request, as it stands: its context, where it stands
/// and, while pending, the buttons. Posted when the request arrives and
/// updated at each vote and decision.
pub fn request_message(cx: &Context<'_>, a: &Approval) -> Value {
    let id = cx.approval;
    let mut fields = vec![
        field("Identity", &a.identity),
        field("Session", &a.session.to_string()),
        field("Rule", &a.rule),
        field("Fingerprint", &a.fingerprint),
    ];
    if let Some(app) = cx.application.filter(|s| !s.is_empty()) {
        fields.insert(1, field("Application", app));
    }
    if !a.params.is_empty() {
        let params: Vec<String> = a
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("${} = {}", i + 1, p.text().unwrap_or_else(|| "NULL".into())))
            .collect();
        fields.push(field("Parameters", &params.join(", ")));
    }
    let mut blocks = vec![
        json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!(
                ":lock: *Gatehouse approval {id}*: `{}` wants to run",
                escape(&a.identity)
            )},
        }),
        json!({
            "type": "section",
            "text": {"type": "plain_text", "text": cut(&a.sql, SQL_SHOWN), "emoji": false},
        }),
        json!({"type": "section", "fields": fields}),
        json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": status_line(a)}],
        }),
    ];
    let open = json!({
        "type": "button",
        "action_id": OPEN,
        "text": {"type": "plain_text", "text": "Open in the console"},
        "url": cx.link,
    });
    let actions = if a.status == ApprovalStatus::Pending {
        json!([
            {
                "type": "button",
                "action_id": APPROVE,
                "style": "primary",
                "value": id.to_string(),
                "text": {"type": "plain_text", "text": "Approve once"},
            },
            {
                "type": "button",
                "action_id": DENY,
                "style": "danger",
                "value": id.to_string(),
                "text": {"type": "plain_text", "text": "Deny…"},
            },
            open,
        ])
    } else {
        json!([open])
    };
    blocks.push(
        json!({"type": "actions", "block_id": format!("gatehouse-{id}"), "elements": actions}),
    );
    json!({
        "text": format!(
            "Gatehouse approval {id}: {} wants to run {} ({})",
            escape(&a.identity),
            escape(&cut(&a.sql, 200)),
            status_word(a)
        ),
        "blocks": blocks,
    })
}

fn field(name: &str, value: &str) -> Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", escape(&cut(value, FIELD_SHOWN)))})
}

fn status_word(a: &Approval) -> &'static str {
    match a.status {
        ApprovalStatus::Pending => "waiting for approval",
        ApprovalStatus::Granted => "approved",
        ApprovalStatus::Denied => "denied",
        ApprovalStatus::Expired => "timed out",
    }
}

/// Where a request stands, in one line.
pub fn status_line(a: &Approval) -> String {
    let names = |v: &[String]| escape(&v.join(", "));
    match a.status {
        ApprovalStatus::Pending => {
            let secs = a.expires_at / 1_000_000_000;
            let fallback = gatehouse_verify::report::rfc3339(a.expires_at);
            format!(
                ":hourglass_flowing_sand: {} of {} approvals{}; expires <!date^{secs}^{{time_secs}}|{fallback}>",
                a.approvers.len(),
                a.quorum,
                if a.approvers.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", names(&a.approvers))
                }
            )
        }
        ApprovalStatus::Granted => {
            let grant = a
                .grant_untils
                .iter()
                .flatten()
                .min()
                .map(|until| {
                    format!(
                        "; the fingerprint is granted until {}",
                        gatehouse_verify::report::rfc3339(*until)
                    )
                })
                .unwrap_or_default();
            format!(
                ":white_check_mark: *Approved* by {}: the statement ran{grant}",
                names(&a.approvers)
            )
        }
        ApprovalStatus::Denied => match &a.denied_by {
            Some(by) => format!(
                ":no_entry: *Denied* by {}: {}",
                escape(by),
                escape(a.reason.as_deref().unwrap_or(""))
            ),
            None => format!(
                ":no_entry: *Withdrawn* by the gateway: {}",
                escape(a.reason.as_deref().unwrap_or(""))
            ),
        },
        ApprovalStatus::Expired => ":hourglass: *Timed out*: the statement was not run".to_owned(),
    }
}

/// The dialog asking for a denial's reason (Slack's modal view).
/// `private_metadata` carries the request and the channel to answer in.
pub fn deny_dialog(approval: u64, channel: Option<&str>) -> Value {
    json!({
        "type": "modal",
        "callback_id": DENY_DIALOG,
        "private_metadata": json!({"approval": approval, "channel": channel}).to_string(),
        "title": {"type": "plain_text", "text": format!("Deny request {approval}")},
        "submit": {"type": "plain_text", "text": "Deny"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input",
            "block_id": REASON,
            "label": {"type": "plain_text", "text": "Reason (recorded, and sent to the client)"},
            "element": {"type": "plain_text_input", "action_id": REASON, "multiline": true},
        }],
    })
}

/// The answer to a dialog submission that shows `message` under the
/// reason field and keeps the dialog open.
pub fn dialog_error(message: &str) -> Value {
    json!({"response_action": "errors", "errors": {REASON: message}})
}

/// A Slack user, as an interaction names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// The workspace (team id).
    pub workspace: String,
    /// The user's id.
    pub id: String,
    /// Their user name, if given.
    pub name: Option<String>,
}

/// What a user did in Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// Pressed "Approve once" on request `approval`.
    Approve {
        /// The request.
        approval: u64,
        /// Who pressed it.
        user: SlackUser,
        /// Where (for answers only they see).
        channel: Option<String>,
    },
    /// Pressed "Deny": the reason dialog opens.
    AskReason {
        /// The request.
        approval: u64,
        /// Who pressed it.
        user: SlackUser,
        /// Where.
        channel: Option<String>,
        /// Lets the dialog open (valid for 3 seconds).
        trigger_id: String,
    },
    /// Submitted the reason dialog.
    Deny {
        /// The request.
        approval: u64,
        /// Who submitted it.
        user: SlackUser,
        /// Where the button was.
        channel: Option<String>,
        /// The reason as typed.
        reason: String,
    },
    /// Anything else (the console link, other apps' payloads).
    Other,
}

/// Reads an `interactive` payload of Socket Mode.
pub fn interaction(payload: &Value) -> Interaction {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let user = || -> Option<SlackUser> {
        let u = &payload["user"];
        Some(SlackUser {
            workspace: text(&payload["team"]["id"]).or_else(|| text(&u["team_id"]))?,
            id: text(&u["id"])?,
            name: text(&u["username"]).or_else(|| text(&u["name"])),
        })
    };
    match payload["type"].as_str() {
        Some("block_actions") => {
            let Some(action) = payload["actions"].as_array().and_then(|a| a.first()) else {
                return Interaction::Other;
            };
            let (Some(user), Some(approval)) = (
                user(),
                action["value"].as_str().and_then(|v| v.parse::<u64>().ok()),
            ) else {
                return Interaction::Other;
            };
            let channel = text(&payload["channel"]["id"])
                .or_else(|| text(&payload["container"]["channel_id"]));
            match action["action_id"].as_str() {
                Some(APPROVE) => Interaction::Approve {
                    approval,
                    user,
                    channel,
                },
                Some(DENY) => match text(&payload["trigger_id"]) {
                    Some(trigger_id) => Interaction::AskReason {
                        approval,
                        user,
                        channel,
                        trigger_id,
                    },
                    None => Interaction::Other,
                },
                _ => Interaction::Other,
            }
        }
        Some("view_submission") if payload["view"]["callback_id"] == DENY_DIALOG => {
            let meta: Value = payload["view"]["private_metadata"]
                .as_str()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            let (Some(user), Some(approval)) = (user(), meta["approval"].as_u64()) else {
                return Interaction::Other;
            };
            Interaction::Deny {
                approval,
                user,
                channel: text(&meta["channel"]),
                reason: payload["view"]["state"]["values"][REASON][REASON]["value"]
                    .as_str()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            }
        }
        _ => Interaction::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_engine::approvals::ShownParam;

    fn pending() -> Approval {
        Approval {
            session: 3,
            identity: "agent<@U999>".into(),
            query: 2,
            sql: "DELETE FROM t WHERE note = '<!channel> & <script>'".into(),
            params: vec![ShownParam {
                binary: false,
                value: Some("<b>".into()),
            }],
            rule: "deletes".into(),
            fingerprint: "delete from t where note=?".into(),
            quorum: 2,
            status: ApprovalStatus::Pending,
            approvers: vec!["alice".into()],
            grant_untils: vec![None],
            requested_at: 1_000_000_000_000_000_000,
            expires_at: 1_000_000_060_000_000_000,
            denied_by: None,
            reason: None,
            holder: None,
        }
    }

    fn cx() -> Context<'static> {
        Context {
            approval: 7,
            application: Some("report-bot"),
            link: "https://gh.internal/console/inbox#approval-7".into(),
        }
    }

    #[test]
    fn a_pending_request_shows_its_context_and_both_buttons_and_nothing_it_says_is_markup() {
        let m = request_message(&cx(), &pending());
        // Outside the plain_text SQL block, nothing the agent wrote is markup.
        let mut marked = m.clone();
        marked["blocks"][1] = Value::Null;
        let text = marked.to_string();
        assert!(!text.contains("<@U999>") && !text.contains("<!channel>") && !text.contains("<b>"));
        assert!(text.contains("agent&lt;@U999&gt;"));
        let sql = &m["blocks"][1]["text"];
        assert_eq!(sql["type"], "plain_text", "SQL is never mrkdwn");
        assert_eq!(
            sql["text"],
            "DELETE FROM t WHERE note = '<!channel> & <script>'"
        );
        assert!(text.contains("1 of 2 approvals (alice)"), "{text}");
        assert!(text.contains("<!date^1000000060^{time_secs}|"));
        assert!(text.contains("report-bot") && text.contains("$1 = &lt;b&gt;"));
        let buttons: Vec<&str> = m["blocks"][4]["elements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["action_id"].as_str().unwrap())
            .collect();
        assert_eq!(buttons, [APPROVE, DENY, OPEN]);
        assert_eq!(m["blocks"][4]["elements"][0]["value"], "7");
    }

    #[test]
    fn a_decided_request_keeps_only_the_console_link() {
        let mut a = pending();
        a.status = ApprovalStatus::Denied;
        a.denied_by = Some("carol".into());
        a.reason = Some("not on a Friday".into());
        let m = request_message(&cx(), &a);
        assert_eq!(m["blocks"][4]["elements"].as_array().unwrap().len(), 1);
        assert!(m.to_string().contains("*Denied* by carol: not on a Friday"));
        a.status = ApprovalStatus::Granted;
        a.approvers = vec!["alice".into(), "bob".into()];
        assert!(status_line(&a).contains("*Approved* by alice, bob"));
        a.status = ApprovalStatus::Expired;
        assert!(status_line(&a).contains("Timed out"));
    }

    #[test]
    fn long_sql_is_cut_on_a_character_boundary() {
        let mut a = pending();
        a.sql = "é".repeat(3_000);
        let m = request_message(&cx(), &a);
        let shown = m["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(shown.len() < 3_000 && shown.contains("more bytes"));
    }

    #[test]
    fn button_presses_and_dialog_submissions_are_read() {
        let press = |action: &str| {
            json!({
                "type": "block_actions",
                "team": {"id": "T1"},
                "user": {"id": "U1", "username": "alice", "team_id": "T1"},
                "channel": {"id": "C1"},
                "trigger_id": "trig",
                "actions": [{"action_id": action, "value": "7"}],
            })
        };
        let user = SlackUser {
            workspace: "T1".into(),
            id: "U1".into(),
            name: Some("alice".into()),
        };
        assert_eq!(
            interaction(&press(APPROVE)),
            Interaction::Approve {
                approval: 7,
                user: user.clone(),
                channel: Some("C1".into())
            }
        );
        assert_eq!(
            interaction(&press(DENY)),
            Interaction::AskReason {
                approval: 7,
                user: user.clone(),
                channel: Some("C1".into()),
                trigger_id: "trig".into()
            }
        );
        assert_eq!(interaction(&press(OPEN)), Interaction::Other);
        let dialog = deny_dialog(7, Some("C1"));
        let submitted = json!({
            "type": "view_submission",
            "team": {"id": "T1"},
            "user": {"id": "U1", "username": "alice", "team_id": "T1"},
            "view": {
                "callback_id": dialog["callback_id"],
                "private_metadata": dialog["private_metadata"],
                "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": "  too wide  "}}}},
            },
        });
        assert_eq!(
            interaction(&submitted),
            Interaction::Deny {
                approval: 7,
                user,
                channel: Some("C1".into()),
                reason: "too wide".into()
            }
        );
        assert_eq!(
            interaction(&json!({"type": "shortcut"})),
            Interaction::Other
        );
        assert_eq!(
            dialog_error("needed")["errors"]["reason"],
            "needed",
            "errors name the reason block"
        );
    }
}
