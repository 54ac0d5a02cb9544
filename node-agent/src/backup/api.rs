//! The backup API: the same queries as `tailor-agent backups`, over HTTP, for a port-forward or
//! a kubectl plugin.
//!
//! - `GET /backups?namespace=&pod=&container=&policy=&file=&since=&until=` → JSON list
//! - `GET /backups/content?...` → the selected files' content, decompressed, in order
//! - `GET /backups/grep?regex=...&max=...&...` → matching lines, `ns/pod/container/file:line:`
//!
//! Every request needs `Authorization: Bearer <token>`; the token comes from a file or the
//! `TAILOR_BACKUP_API_TOKEN` environment variable, and the server refuses to start without one.
//! Requests never carry paths: files are chosen by equality on manifest fields and names found
//! by walking the root, and opened below it without following symlinks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

use super::dest::DestRoot;
use super::error::BackupError;
use super::query::{self, Filter};

/// Environment variable that can hold the token.
pub const TOKEN_ENV: &str = "TAILOR_BACKUP_API_TOKEN";
/// Most matches one grep request returns.
const MAX_GREP_MATCHES: usize = 100_000;
/// Largest regex the API compiles.
const MAX_REGEX_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct ApiState {
    root: PathBuf,
    token: Arc<Vec<u8>>,
}

/// Reads the token: from `file` when given, else from `TAILOR_BACKUP_API_TOKEN`.
pub fn load_token(file: Option<&std::path::Path>) -> Result<Vec<u8>, BackupError> {
    let token = match file {
        Some(f) => std::fs::read(f).map_err(|e| BackupError::io("read token", f, e))?,
        None => std::env::var(TOKEN_ENV).map(String::into_bytes).unwrap_or_default(),
    };
    let token = token.trim_ascii().to_vec();
    if token.len() < 16 {
        return Err(BackupError::Api(format!(
            "the backup API needs a token of at least 16 bytes (a file or {TOKEN_ENV})"
        )));
    }
    Ok(token)
}

/// The API's routes.
pub fn router(root: PathBuf, token: Vec<u8>) -> Router {
    let state = ApiState { root, token: Arc::new(token) };
    Router::new()
        .route("/backups", get(list))
        .route("/backups/content", get(content))
        .route("/backups/grep", get(grep))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Serves the API on `addr` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    root: PathBuf,
    token: Vec<u8>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), BackupError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| BackupError::Api(format!("bind {addr}: {e}")))?;
    tracing::info!(%addr, "backup API listening");
    axum::serve(listener, router(root, token))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| BackupError::Api(e.to_string()))
}

/// Constant-time comparison, so response timing does not reveal the token.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(<[u8]>::trim_ascii);
    match presented {
        Some(t) if same_token(t, &s.token) => next.run(req).await,
        _ => (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "unauthorized\n")
            .into_response(),
    }
}

/// Query parameters: the filter, plus `regex` and `max` for grep. Unknown keys are refused.
fn parse_query(q: Option<&str>) -> Result<(Filter, Option<String>, usize), String> {
    let mut f = Filter::default();
    let mut regex = None;
    let mut max = MAX_GREP_MATCHES;
    for (k, v) in form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "namespace" => f.namespace = Some(v),
            "pod" => f.pod = Some(v),
            "container" => f.container = Some(v),
            "policy" => f.policy = Some(v),
            "file" => f.file = Some(v),
            "since" => f.since = Some(v),
            "until" => f.until = Some(v),
            "regex" => regex = Some(v),
            "max" => {
                max =
                    v.parse::<usize>().map_err(|_| "max must be a number".to_string())?.min(MAX_GREP_MATCHES)
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok((f, regex, max))
}

fn bad(msg: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, format!("{}\n", msg.into())).into_response()
}

fn failed(e: BackupError) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
}

async fn list(State(s): State<ApiState>, req: Request) -> Response {
    let (filter, _, _) = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let root = s.root.clone();
    match tokio::task::spawn_blocking(move || query::list(&root, &filter)).await {
        Ok(Ok(entries)) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            (h, serde_json::to_vec(&entries).unwrap_or_default()).into_response()
        }
        Ok(Err(e @ BackupError::Api(_))) => bad(e.to_string()),
        Ok(Err(e)) => failed(e),
        Err(e) => failed(BackupError::Api(e.to_string())),
    }
}

/// A writer that sends chunks down a bounded channel (back-pressure on a slow client).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))
    }
}

/// Streams what `produce` writes as the response body.
fn stream(produce: impl FnOnce(&mut ChannelWriter) -> Result<(), BackupError> + Send + 'static) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter { tx: tx.clone(), buf: Vec::new() };
        let r = produce(&mut w)
            .and_then(|_| std::io::Write::flush(&mut w).map_err(|e| BackupError::io("write", "response", e)));
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut resp = Body::from_stream(body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

async fn content(State(s): State<ApiState>, req: Request) -> Response {
    let (filter, _, _) = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let root = s.root.clone();
    let entries = match tokio::task::spawn_blocking({
        let root = root.clone();
        move || query::list(&root, &filter)
    })
    .await
    {
        Ok(Ok(e)) => e,
        Ok(Err(e @ BackupError::Api(_))) => return bad(e.to_string()),
        Ok(Err(e)) => return failed(e),
        Err(e) => return failed(BackupError::Api(e.to_string())),
    };
    if entries.is_empty() {
        return (StatusCode::NOT_FOUND, "no backup file matches\n").into_response();
    }
    stream(move |w| {
        let root = DestRoot::open(&root).map_err(|e| BackupError::io("open", &root, e))?;
        query::cat(&root, &entries, w).map(|_| ())
    })
}

async fn grep(State(s): State<ApiState>, req: Request) -> Response {
    let (filter, regex, max) = match parse_query(req.uri().query()) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let Some(regex) = regex else { return bad("regex is required") };
    let re = match regex::bytes::RegexBuilder::new(&regex).size_limit(MAX_REGEX_BYTES).build() {
        Ok(r) => r,
        Err(e) => return bad(format!("bad regex: {e}")),
    };
    let root = s.root.clone();
    stream(move |w| {
        let entries = query::list(&root, &filter)?;
        let root = DestRoot::open(&root).map_err(|e| BackupError::io("open", &root, e))?;
        query::grep(&root, &entries, &re, max, w).map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_tokens() {
        let (f, re, max) = parse_query(Some("namespace=ns&pod=web-1&regex=err%7Cwarn&max=5")).unwrap();
        assert_eq!(f.namespace.as_deref(), Some("ns"));
        assert_eq!(f.pod.as_deref(), Some("web-1"));
        assert_eq!(re.as_deref(), Some("err|warn"));
        assert_eq!(max, 5);
        assert!(parse_query(Some("path=/etc/passwd")).is_err());
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abc", b"abd"));
        assert!(!same_token(b"abc", b"abcd"));
    }
}
