//! Slack's Web API, the few methods the approvals integration calls.
//!
//! Slack answers HTTP 200 with `{"ok": false, "error": ...}` for refusals,
//! and 429 with `Retry-After` when rate-limited; both become a
//! [`SlackError`] naming the method. Calls run on the blocking pool (the
//! HTTP client is synchronous), never on a session's thread.

use std::time::Duration;

use serde_json::Value;

/// Attempts per call when Slack is rate-limiting or unreachable.
const ATTEMPTS: u32 = 3;

/// Longest wait a `Retry-After` is honoured for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a Web API call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack refused it (`ok: false`).
    #[error("Slack refused {method}: {error}")]
    Refused {
        /// The method called.
        method: String,
        /// Slack's error code, e.g. `channel_not_found`, `invalid_auth`.
        error: String,
    },
    /// It did not reach Slack, or Slack's answer was not understood.
    #[error("calling Slack's {method} failed: {detail}")]
    Transport {
        /// The method called.
        method: String,
        /// What went wrong.
        detail: String,
    },
}

/// Which token a call carries.
#[derive(Debug, Clone, Copy)]
pub enum Token {
    /// The bot token: messages, views.
    Bot,
    /// The app-level token: opening Socket Mode connections.
    App,
}

/// Slack's Web API with the app's two tokens.
#[derive(Clone)]
pub struct WebApi {
    base: String,
    bot: String,
    app: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for WebApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebApi").field("base", &self.base).finish()
    }
}

impl WebApi {
    /// The API at `base` (e.g. `https://slack.com/api`).
    pub fn new(base: &str, bot_token: &str, app_token: &str) -> Self {
        WebApi {
            base: base.trim_end_matches('/').to_owned(),
            bot: bot_token.to_owned(),
            app: app_token.to_owned(),
            agent: ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// Calls `method` with a JSON body; the answer when `ok` is true.
    pub async fn call(&self, method: &str, token: Token, body: Value) -> Result<Value, SlackError> {
        let api = self.clone();
        let method = method.to_owned();
        tokio::task::spawn_blocking(move || api.call_blocking(&method, token, &body))
            .await
            .unwrap_or_else(|e| {
                Err(SlackError::Transport {
                    method: "?".into(),
                    detail: e.to_string(),
                })
            })
    }

    fn call_blocking(&self, method: &str, token: Token, body: &Value) -> Result<Value, SlackError> {
        let token = match token {
            Token::Bot => &self.bot,
            Token::App => &self.app,
        };
        let url = format!("{}/{method}", self.base);
        let transport = |detail: String| SlackError::Transport {
            method: method.to_owned(),
            detail,
        };
        let mut wait = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                std::thread::sleep(wait);
                wait = wait.saturating_mul(2);
            }
            let response = self
                .agent
                .post(&url)
                .header("Authorization", &format!("Bearer {token}"))
                .header("Content-Type", "application/json; charset=utf-8")
                .send(body.to_string().as_bytes());
            let response = match response {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let status = response.status().as_u16();
            if status == 429 || status >= 500 {
                if let Some(after) = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    wait = Duration::from_secs(after).min(MAX_RETRY_AFTER);
                }
                last = format!("HTTP {status}");
                continue;
            }
            let text = response
                .into_body()
                .read_to_string()
                .map_err(|e| transport(e.to_string()))?;
            let answer: Value = serde_json::from_str(&text)
                .map_err(|e| transport(format!("HTTP {status}, not JSON: {e}")))?;
            if answer["ok"].as_bool() == Some(true) {
                return Ok(answer);
            }
            return Err(SlackError::Refused {
                method: method.to_owned(),
                error: answer["error"]
                    .as_str()
                    .unwrap_or("unknown_error")
                    .to_owned(),
            });
        }
        Err(transport(format!("{last} after {ATTEMPTS} attempts")))
    }
}
