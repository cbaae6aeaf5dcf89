//! The gateway over streamable HTTP, locked down:
//! - it listens on loopback unless told otherwise, and a non-loopback
//!   address needs a bearer token (it refuses to start without one);
//! - with a token, every request must carry `Authorization: Bearer TOKEN`
//!   (else 401, compared in constant time);
//! - `Host` must be a loopback name, the bound address, or one allowed
//!   with `--allow-host`, and a browser's `Origin` must be a loopback
//!   origin or one allowed with `--allow-origin` (else 403), against DNS
//!   rebinding;
//! - request bodies above the limit are refused (413);
//! - each session may have only so many calls in flight (see
//!   [`super::GatewayOptions::max_calls`]).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::Gateway;

/// The path the MCP endpoint is served at.
pub const PATH: &str = "/mcp";

/// How the HTTP endpoint is exposed.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// Bearer token every request must carry; required off loopback.
    pub token: Option<String>,
    /// Host names (or host:port) accepted besides loopback and the bound
    /// address.
    pub allow_hosts: Vec<String>,
    /// Browser origins accepted besides loopback ones
    /// (`https://app.example.com`, `http://host:*`).
    pub allow_origins: Vec<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
}

/// A gateway listening: its address and the sessions it holds.
#[derive(Debug)]
pub struct Listening {
    pub addr: SocketAddr,
    pub sessions: Arc<LocalSessionManager>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

/// Refuses options that would expose the gateway: off loopback without a
/// token, or with a token too short to resist guessing.
pub fn check(options: &HttpOptions) -> anyhow::Result<()> {
    let ip = options.addr.ip();
    if let Some(t) = &options.token
        && t.trim().len() < 16
    {
        bail!(
            "the bearer token is too short: use at least 16 random characters (e.g. `openssl rand -hex 32`)"
        );
    }
    if !ip.is_loopback() && options.token.is_none() {
        bail!(
            "refusing to listen on {}: off loopback every client needs a bearer token; set one with --token or TRIAGE_TOKEN (or listen on 127.0.0.1)",
            options.addr
        );
    }
    if options.max_body < 1024 {
        bail!(
            "the request body limit ({} bytes) is too small for any MCP request; give at least 1024",
            options.max_body
        );
    }
    Ok(())
}

/// Checks the options and binds the address (port 0 picks a free one).
pub async fn bind(
    gateway: Gateway,
    options: &HttpOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<Listening> {
    check(options)?;
    let ip = options.addr.ip();
    let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !ip.is_loopback() && !ip.is_unspecified() {
        hosts.push(ip.to_string());
    }
    hosts.extend(options.allow_hosts.iter().cloned());
    let mut origins: Vec<String> = vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
    ];
    origins.extend(options.allow_origins.iter().cloned());
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(options.max_body)
        .with_cancellation_token(shutdown.child_token());
    let sessions = Arc::new(LocalSessionManager::default());
    let service = StreamableHttpService::new(move || Ok(gateway.session()), sessions.clone(), config);
    let mut router = axum::Router::new().nest_service(PATH, service);
    if let Some(token) = &options.token {
        let expected: Arc<str> = format!("Bearer {}", token.trim()).into();
        router = router.layer(axum::middleware::from_fn_with_state(expected, require_token));
    }
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}", options.addr))?;
    let addr = listener.local_addr()?;
    Ok(Listening {
        addr,
        sessions,
        listener,
        router,
    })
}

impl Listening {
    /// Serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("serving HTTP")
    }

    /// Sessions open now.
    pub async fn open_sessions(sessions: &LocalSessionManager) -> usize {
        sessions.sessions.read().await.len()
    }
}

/// Lets a request through only with the bearer token.
async fn require_token(State(expected): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if constant_time_eq(given, expected.as_bytes()) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token the gateway was started with\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"triage\""),
    );
    response
}

/// Equal, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
        assert!(!constant_time_eq(b"", b"Bearer abc"));
    }
}
