//! The console driven over HTTP the way a browser drives it: a session
//! cookie from sign-in, forms posted from the console's own origin.

use super::Env;

/// Agent reads run; its deletes of orders need one approver, its updates
/// of orders two.
pub const POLICY: &str = r#"
[[rule]]
name = "agent-reads"
identity = "agent"
classes = ["read", "transaction"]
action = "allow"

[[rule]]
name = "delete-orders"
identity = "agent"
classes = ["write"]
commands = ["DELETE"]
tables = ["public.orders"]
action = "require_approval"
message = "deletes need a human"
approval_timeout_seconds = 60

[[rule]]
name = "update-orders-two"
identity = "agent"
classes = ["write"]
commands = ["UPDATE"]
tables = ["public.orders"]
action = "require_approval"
approvers = 2
approval_timeout_seconds = 60
"#;

/// What a browser keeps for one console: its session cookie.
pub struct Browser {
    pub base: String,
    pub origin: String,
    pub cookie: Option<String>,
}

/// A response: status, the headers asked about, and the body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub csp: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(env: &Env) -> Browser {
        Browser {
            base: format!("http://{}", env.admin),
            origin: format!("http://{}", env.admin),
            cookie: None,
        }
    }

    pub fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into()
    }

    fn page(r: ureq::http::Response<ureq::Body>) -> Page {
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (status, location, set_cookie, csp) = (
            r.status().as_u16(),
            header("location"),
            header("set-cookie"),
            header("content-security-policy"),
        );
        let body = r.into_body().read_to_string().unwrap_or_default();
        Page {
            status,
            location,
            set_cookie,
            csp,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        let url = format!("{}{path}", self.base);
        let cookie = self.cookie.clone();
        tokio::task::spawn_blocking(move || {
            let mut req = Self::agent().get(&url);
            if let Some(c) = &cookie {
                req = req.header("Cookie", c);
            }
            Self::page(req.call().unwrap())
        })
        .await
        .unwrap()
    }

    /// A form POST as the browser sends it from the console's own page
    /// (`origin` set to another site to play a cross-site form).
    pub async fn post_from(&self, origin: &str, path: &str, form: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.base);
        let cookie = self.cookie.clone();
        let same = origin == self.origin;
        let origin = origin.to_owned();
        let form: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut req = Self::agent().post(&url).header("Origin", &origin).header(
                "Sec-Fetch-Site",
                if same { "same-origin" } else { "cross-site" },
            );
            if let Some(c) = &cookie {
                req = req.header("Cookie", c);
            }
            Self::page(req.send_form(form).unwrap())
        })
        .await
        .unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.origin.clone();
        self.post_from(&origin, path, form).await
    }

    /// Signs in with an operator's token; keeps the session cookie.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self.post("/console/signin", &[("token", token)]).await;
        if let Some(c) = &page.set_cookie {
            self.cookie = Some(c.split(';').next().unwrap().to_owned());
        }
        page
    }

    /// The form token of the page at `path`.
    pub async fn form_token(&self, path: &str) -> String {
        let page = self.get(path).await;
        let at = page
            .body
            .find("name=\"form_token\" value=\"")
            .unwrap_or_else(|| panic!("no form on {path}: {}", page.body));
        let rest = &page.body[at + "name=\"form_token\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

pub fn token(env: &Env, who: &str) -> String {
    if who == "admin" {
        env.admin_token()
    } else {
        env.secret(&format!("operator:{who}")).to_owned()
    }
}

pub async fn signed_in(env: &Env, who: &str) -> Browser {
    let mut b = Browser::new(env);
    let page = b.sign_in(&token(env, who)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    b
}
