//! Who may talk to the gateway: the API key, the loopback `Host` check (DNS-rebinding
//! defense), CORS, and the rule that a non-loopback bind needs a key.
//!
//! The checks are tower-http layers ([`ValidateRequestHeaderLayer::custom`], [`CorsLayer`])
//! wrapped around the router, outermost first: Host check, CORS (answers preflights), API key.
//!
//! - **API key**: with [`ApiKey`] configured every endpoint except `/health` and `/` needs
//!   `Authorization: Bearer <key>`; anything else gets 401 with an OpenAI-style error
//!   (`code: invalid_api_key`). Keys are compared in constant time (SHA-256 of both sides,
//!   compared with `subtle`), so timing reveals neither the key nor its length.
//! - **Host check**: on a loopback bind a request whose `Host` is not `localhost`, a loopback
//!   IP or `[::1]` (port optional) gets 403: a web page that rebinds its own DNS name to
//!   127.0.0.1 cannot reach the API from the victim's browser (as with Ollama's
//!   CVE-2024-28224).
//! - **CORS**: off by default (no CORS headers, browsers refuse cross-origin reads); each
//!   configured origin (or `*`) is allowed `GET`/`POST` with `Authorization` and
//!   `Content-Type`.

use super::error::ApiError;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

/// Shortest API key accepted.
pub const MIN_KEY_LEN: usize = 16;

/// The gateway's API key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    digest: [u8; 32],
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why a key or an origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The key is too short or has characters a header cannot carry.
    #[error(
        "invalid API key: {0} (use at least {MIN_KEY_LEN} printable characters without spaces, \
         e.g. `openssl rand -hex 32`)"
    )]
    BadKey(&'static str),
    /// A CORS origin is not `*` or `scheme://host[:port]`.
    #[error(
        "invalid CORS origin `{0}`: expected `*` or an origin such as `https://app.example.com`"
    )]
    BadOrigin(String),
    /// A non-loopback address without an API key.
    #[error(
        "refusing to serve on {0} without an API key: anyone on the network could use the API. \
         Give a key (--api-key-file FILE or EDGERAY_API_KEY), bind 127.0.0.1, or pass --no-auth \
         to serve without authentication"
    )]
    OpenBind(SocketAddr),
}

impl ApiKey {
    /// A key from its text (surrounding whitespace, e.g. a file's trailing newline, ignored).
    pub fn new(text: &str) -> Result<ApiKey, AccessError> {
        let key = text.trim();
        if key.len() < MIN_KEY_LEN {
            return Err(AccessError::BadKey("too short"));
        }
        if !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(AccessError::BadKey("spaces or non-printable characters"));
        }
        Ok(ApiKey {
            digest: Sha256::digest(key.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this key (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        d.ct_eq(&self.digest).into()
    }
}

/// Who may use the gateway (see the module docs). `Default`: no key, no CORS.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessConfig {
    /// Required bearer key for every endpoint but `/health` and `/`; `None` = open.
    pub api_key: Option<ApiKey>,
    /// Serve a non-loopback address without a key (`--no-auth`).
    pub allow_no_auth: bool,
    /// Origins allowed by CORS (`*` for any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
}

impl AccessConfig {
    /// Refuses a non-loopback `addr` without a key unless `allow_no_auth`.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<(), AccessError> {
        if self.api_key.is_none() && !self.allow_no_auth && !addr.ip().is_loopback() {
            return Err(AccessError::OpenBind(addr));
        }
        Ok(())
    }

    /// Checks every CORS origin.
    pub fn validate(&self) -> Result<(), AccessError> {
        self.cors().map(|_| ())
    }

    fn cors(&self) -> Result<Option<CorsLayer>, AccessError> {
        if self.cors_origins.is_empty() {
            return Ok(None);
        }
        let origin = if self.cors_origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list = self
                .cors_origins
                .iter()
                .map(|o| parse_origin(o))
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(list)
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(std::time::Duration::from_secs(600)),
        ))
    }

    /// `router` behind the access layers for a gateway bound to `local`.
    pub fn wrap(&self, router: Router, local: SocketAddr) -> Result<Router, AccessError> {
        let mut r = router;
        if let Some(key) = &self.api_key {
            r = r.layer(ValidateRequestHeaderLayer::custom(BearerKey(key.clone())));
        }
        if let Some(cors) = self.cors()? {
            r = r.layer(cors);
        }
        if local.ip().is_loopback() {
            r = r.layer(ValidateRequestHeaderLayer::custom(LoopbackHost));
        }
        Ok(r)
    }
}

fn parse_origin(o: &str) -> Result<HeaderValue, AccessError> {
    let bad = || AccessError::BadOrigin(o.to_string());
    let (scheme, rest) = o.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https")
        || rest.is_empty()
        || rest.contains('/')
        || !rest.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(bad());
    }
    HeaderValue::from_str(o).map_err(|_| bad())
}

/// The 401 every unauthenticated request gets.
fn unauthorized() -> Response<Body> {
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        message: "missing or incorrect API key: send `Authorization: Bearer <key>`".into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
        retry_after: None,
    }
    .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The API key check (tower-http `ValidateRequest`).
#[derive(Clone)]
struct BearerKey(ApiKey);

impl<B> ValidateRequest<B> for BearerKey {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response<Body>> {
        // `/health` for load balancers; `/` is the dashboard's static page (no data: what it
        // shows comes from the keyed API, the page asks for the key).
        if matches!(req.uri().path(), "/health" | "/") {
            return Ok(());
        }
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, key) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
            });
        match presented {
            Some(k) if self.0.matches(k) => Ok(()),
            _ => Err(unauthorized()),
        }
    }
}

/// The DNS-rebinding check of a loopback bind (tower-http `ValidateRequest`).
#[derive(Clone, Copy)]
struct LoopbackHost;

impl<B> ValidateRequest<B> for LoopbackHost {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<B>) -> Result<(), Response<Body>> {
        // HTTP/1.1 clients always send Host; browsers (the rebinding vector) always do.
        let Some(host) = req.headers().get(header::HOST) else {
            return Ok(());
        };
        let host = host.to_str().unwrap_or("");
        if is_loopback_host(host) {
            return Ok(());
        }
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            message: format!(
                "Host `{}` is not a loopback name: this server listens on loopback only and \
                 answers requests for localhost, 127.0.0.1 or [::1] (DNS-rebinding protection)",
                host.chars().take(100).collect::<String>()
            ),
            kind: "invalid_request_error",
            param: None,
            code: Some("forbidden_host"),
            retry_after: None,
        }
        .into_response())
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, each with an optional `:port`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6] or [v6]:port
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return ip
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|a| a.is_loopback());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name == "localhost."
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8080",
            "localhost.",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "10.0.0.2:8080",
            "[::2]:80",
            "[::1]x",
            "localhost:80:80",
            "localhost:abc",
            "",
            "::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn keys() {
        assert!(ApiKey::new("short").is_err());
        assert!(ApiKey::new("has a space in it 123").is_err());
        let k = ApiKey::new("  0123456789abcdef0123\n").unwrap();
        assert!(k.matches("0123456789abcdef0123"));
        assert!(!k.matches("0123456789abcdef012"));
        assert!(!k.matches(""));
        assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn binds_and_origins() {
        let open = AccessConfig::default();
        assert!(open.check_bind("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(open.check_bind("[::1]:8080".parse().unwrap()).is_ok());
        let e = open
            .check_bind("0.0.0.0:8080".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("--no-auth"), "{e}");
        let no_auth = AccessConfig {
            allow_no_auth: true,
            ..Default::default()
        };
        assert!(no_auth.check_bind("0.0.0.0:8080".parse().unwrap()).is_ok());
        let keyed = AccessConfig {
            api_key: Some(ApiKey::new("0123456789abcdef").unwrap()),
            ..Default::default()
        };
        assert!(keyed.check_bind("0.0.0.0:8080".parse().unwrap()).is_ok());
        for good in ["*", "https://app.example.com", "http://localhost:3000"] {
            let c = AccessConfig {
                cors_origins: vec![good.into()],
                ..Default::default()
            };
            assert!(c.validate().is_ok(), "{good}");
        }
        for bad in ["app.example.com", "ftp://x", "https://x/path", "https://"] {
            let c = AccessConfig {
                cors_origins: vec![bad.into()],
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
