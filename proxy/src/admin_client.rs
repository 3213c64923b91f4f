//! The `gatehouse` commands that drive a running gateway's admin API.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Where the admin API is, as the gateway's own config file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL: `http://` or, when the config serves TLS, `https://`.
    pub url: String,
    /// The admin certificate the config serves, to trust for `url`.
    pub ca: Option<PathBuf>,
    /// The operator token: `operator.token` here, else beside the config.
    pub token_file: PathBuf,
}

/// The admin address when no config file says otherwise.
const DEFAULT_ADMIN: &str = "http://127.0.0.1:6433";

impl Endpoint {
    /// From `config` (an explicit file, which must load), else from
    /// `gatehouse.toml` in the current directory if there is one, else the
    /// defaults. A wildcard listen address is reached on loopback.
    pub fn find(config: Option<PathBuf>) -> Result<Endpoint> {
        let token_here = PathBuf::from(crate::init::OPERATOR_TOKEN);
        let path = match config {
            Some(p) => Some(p),
            None => Some(PathBuf::from(crate::init::CONFIG)).filter(|p| p.exists()),
        };
        let Some(path) = path else {
            return Ok(Endpoint {
                url: DEFAULT_ADMIN.to_owned(),
                ca: None,
                token_file: token_here,
            });
        };
        let config = crate::config::Config::load(&path)
            .with_context(|| format!("reading the admin address from {}", path.display()))?;
        let address = config.admin.address.as_str();
        let address = if let Some(port) = address.strip_prefix("0.0.0.0:") {
            format!("127.0.0.1:{port}")
        } else if let Some(port) = address.strip_prefix("[::]:") {
            format!("[::1]:{port}")
        } else {
            address.to_owned()
        };
        let scheme = if config.admin.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let beside = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(crate::init::OPERATOR_TOKEN);
        Ok(Endpoint {
            url: format!("{scheme}://{address}"),
            ca: config.admin.tls_cert.clone(),
            token_file: if token_here.exists() || !beside.exists() {
                token_here
            } else {
                beside
            },
        })
    }
}

/// Where the admin API is and how to authenticate to it.
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// Reads the operator token from `token_file`; `ca` (PEM) is the
    /// certificate authority to trust for an `https://` API instead of the
    /// public roots.
    pub fn new(base: &str, token_file: &Path, ca: Option<&Path>) -> Result<AdminClient> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read the admin API's CA {}", ca.display()))?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("{} is not a PEM certificate file", ca.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", ca.display());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            );
        }
        let agent: ureq::Agent = config.build().into();
        let token = std::fs::read_to_string(token_file)
            .with_context(|| {
                format!(
                    "cannot read the operator token {}; pass --token-file (gatehouse init writes operator.token)",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned();
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let agent = &self.agent;
        let response = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
            (_, Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
            (_, None) => agent.post(&url).header("Authorization", &auth).send_empty(),
        }
        .with_context(|| {
            format!(
                "cannot reach the admin API at {}; is the gateway running?",
                self.base
            )
        })?;
        let status = response.status();
        let value: Value = response.into_body().read_json().unwrap_or(Value::Null);
        if !status.is_success() {
            let why = value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no explanation given");
            bail!("{} {path}: {} ({why})", method, status.as_u16());
        }
        Ok(value)
    }

    /// `gatehouse block`.
    pub fn block(&self, identity: &str, reason: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/identities/{identity}/block"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse unblock`.
    pub fn unblock(&self, identity: &str, reason: Option<&str>) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/identities/{identity}/unblock"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse kill`.
    pub fn kill(&self, session: u64, reason: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/sessions/{session}/kill"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse sessions`.
    pub fn sessions(&self) -> Result<Value> {
        self.call("GET", "/v1/sessions", None)
    }

    /// `gatehouse policy apply`.
    /// Returns the gateway's warnings (see `PolicyView::warnings`).
    pub fn policy_apply(&self, source: &str, allow_missing: bool) -> Result<Vec<String>> {
        let v = self.call(
            "POST",
            "/v1/policy",
            Some(serde_json::json!({ "source": source, "allow_missing": allow_missing })),
        )?;
        Ok(v["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|w| w.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `gatehouse policy explain`: the running gateway's decision for `sql`.
    pub fn policy_explain(
        &self,
        identity: &str,
        target: Option<&str>,
        sql: &str,
        policy: Option<&str>,
    ) -> Result<crate::commands::Explanation> {
        let v = self.call(
            "POST",
            "/v1/policy/explain",
            Some(serde_json::json!({
                "identity": identity,
                "target": target,
                "sql": sql,
                "policy": policy,
            })),
        )?;
        serde_json::from_value(v).context("the gateway's explanation is not in the expected shape")
    }

    /// `gatehouse policy show`: the policy file in force.
    pub fn policy_show(&self) -> Result<String> {
        let v = self.call("GET", "/v1/policy", None)?;
        Ok(v["source"].as_str().unwrap_or_default().to_owned())
    }

    /// `gatehouse credential revoke`.
    pub fn revoke(&self, credential: &str, reason: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/credentials/{credential}/revoke"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse identity create`.
    pub fn identity_create(&self, identity: &str, description: Option<&str>) -> Result<()> {
        self.call(
            "POST",
            "/v1/identities",
            Some(serde_json::json!({ "identity": identity, "description": description })),
        )
        .map(drop)
    }

    /// `gatehouse credential issue`: (id, secret, expiry).
    pub fn credential_issue(&self, identity: &str, ttl: &str) -> Result<(String, String, String)> {
        let v = self.call(
            "POST",
            &format!("/v1/identities/{identity}/credentials"),
            Some(serde_json::json!({ "ttl": ttl })),
        )?;
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok((text("credential"), text("secret"), text("expires_at")))
    }

    /// `gatehouse identities`.
    pub fn identities(&self) -> Result<Value> {
        self.call("GET", "/v1/identities", None)
    }

    /// `gatehouse identity disable`.
    pub fn identity_disable(&self, identity: &str, reason: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/identities/{identity}/disable"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse credentials [IDENTITY]`.
    pub fn credentials(&self, identity: Option<&str>) -> Result<Value> {
        match identity {
            Some(i) => self.call("GET", &format!("/v1/credentials?identity={i}"), None),
            None => self.call("GET", "/v1/credentials", None),
        }
    }

    /// `gatehouse operators`.
    pub fn operators(&self) -> Result<Value> {
        self.call("GET", "/v1/operators", None)
    }

    /// `gatehouse operator remove`.
    pub fn operator_remove(&self, operator: &str, reason: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/v1/operators/{operator}/remove"),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(drop)
    }

    /// `gatehouse operator add`: the new token.
    pub fn operator_add(&self, operator: &str, roles: &[String]) -> Result<String> {
        let v = self.call(
            "POST",
            "/v1/operators",
            Some(serde_json::json!({ "operator": operator, "roles": roles })),
        )?;
        Ok(v["token"].as_str().unwrap_or_default().to_owned())
    }

    /// `gatehouse approvals`: pending requests, or all with `all`.
    pub fn approvals(&self, all: bool) -> Result<Value> {
        self.call("GET", &format!("/v1/approvals?all={all}"), None)
    }

    /// `gatehouse approve`.
    pub fn approve(&self, approval: u64, duration: Option<&str>) -> Result<Value> {
        self.call(
            "POST",
            &format!("/v1/approvals/{approval}/approve"),
            Some(serde_json::json!({ "for": duration })),
        )
    }

    /// `gatehouse deny`.
    pub fn deny(&self, approval: u64, reason: &str) -> Result<Value> {
        self.call(
            "POST",
            &format!("/v1/approvals/{approval}/deny"),
            Some(serde_json::json!({ "reason": reason })),
        )
    }

    /// `gatehouse grants`.
    pub fn grants(&self) -> Result<Value> {
        self.call("GET", "/v1/grants", None)
    }

    /// `gatehouse grant revoke`.
    pub fn grant_revoke(&self, approval: u64, reason: &str) -> Result<Value> {
        self.call(
            "POST",
            &format!("/v1/grants/{approval}/revoke"),
            Some(serde_json::json!({ "reason": reason })),
        )
    }
}
