//! A small Docker Engine API client over the engine's Unix socket.
//!
//! Built on hyper 1 (already in the tree through kube) rather than a client crate: docker mode
//! needs four read-only calls (version, list, inspect, the events stream), and a one-connection-
//! per-request HTTP/1 client on a `UnixStream` does that in a page, without a second HTTP stack
//! and its transitive dependencies. Each call opens its own connection, so a restarted engine
//! or a re-created socket is simply picked up by the next call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use super::model::{ContainerInspect, ContainerSummary, EngineEvent};

/// API version of every request: the oldest that engines in the field (20.10+) speak and that
/// newer engines still accept.
pub const API_VERSION: &str = "v1.41";

/// Default `--docker-host`.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Unary calls (not the events stream) give up after this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A line of the events stream longer than this is a broken stream, not an event.
const MAX_EVENT_LINE: usize = 1 << 20;

/// Container events docker mode acts on.
pub const WATCHED_ACTIONS: [&str; 5] = ["create", "start", "die", "destroy", "rename"];

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("docker host {0:?} is not a unix:// address")]
    UnsupportedHost(String),
    #[error("cannot connect to the Docker engine at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with the Docker engine on {path}: {source}")]
    Http {
        path: String,
        #[source]
        source: hyper::Error,
    },
    #[error("cannot build the request for {path}: {source}")]
    Request {
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("the Docker engine answered {status} to {path}: {message}")]
    Status { path: String, status: u16, message: String },
    #[error("unexpected answer from the Docker engine to {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the Docker engine did not answer {path} within {0:?}", CALL_TIMEOUT)]
    Timeout { path: String },
    #[error("the events stream sent a line longer than {MAX_EVENT_LINE} bytes")]
    EventTooLong,
}

impl ClientError {
    /// Label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            ClientError::UnsupportedHost(_) => "config",
            ClientError::Connect { .. } => "connect",
            ClientError::Http { .. } | ClientError::Timeout { .. } => "http",
            ClientError::Request { .. } => "request",
            ClientError::Status { .. } => "status",
            ClientError::Decode { .. } | ClientError::EventTooLong => "decode",
        }
    }

    /// The object asked for does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Status { status: 404, .. })
    }
}

/// A client of one engine.
#[derive(Clone, Debug)]
pub struct DockerClient {
    socket: PathBuf,
}

impl DockerClient {
    /// From a `--docker-host` value: `unix:///path` or a bare absolute path.
    pub fn from_host(host: &str) -> Result<Self, ClientError> {
        let path = host.strip_prefix("unix://").unwrap_or(host);
        if !path.starts_with('/') {
            return Err(ClientError::UnsupportedHost(host.to_string()));
        }
        Ok(DockerClient { socket: PathBuf::from(path) })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /version`: proves the engine answers.
    pub async fn version(&self) -> Result<serde_json::Value, ClientError> {
        self.get_json("/version").await
    }

    /// IDs of every container, running or not.
    pub async fn list_ids(&self) -> Result<Vec<String>, ClientError> {
        let list: Vec<ContainerSummary> = self.get_json("/containers/json?all=1").await?;
        Ok(list.into_iter().map(|c| c.id).collect())
    }

    /// `GET /containers/{id}/json`.
    pub async fn inspect(&self, id: &str) -> Result<ContainerInspect, ClientError> {
        if !is_container_ref(id) {
            return Err(ClientError::Status {
                path: id.to_string(),
                status: 404,
                message: "bad container id".into(),
            });
        }
        self.get_json(&format!("/containers/{id}/json")).await
    }

    /// The container events stream, from now on.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let filters = format!(
            r#"{{"type":["container"],"event":[{}]}}"#,
            WATCHED_ACTIONS.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(",")
        );
        let path = format!("/events?filters={}", percent_encode(&filters));
        let response = self.send(&path).await?;
        let response = check_status(&path, response).await?;
        Ok(EventStream { body: response.into_body(), buf: BytesMut::new() })
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let call = async {
            let response = check_status(path, self.send(path).await?).await?;
            let body = collect(path, response).await?;
            serde_json::from_slice(&body)
                .map_err(|source| ClientError::Decode { path: path.to_string(), source })
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| ClientError::Timeout { path: path.to_string() })?
    }

    async fn send(&self, path: &str) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect { socket: self.socket.clone(), source })?;
        let http = |source| ClientError::Http { path: path.to_string(), source };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        // The connection task ends with the response body (or when it is dropped).
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "docker engine connection ended");
            }
        });
        let request = Request::get(format!("/{API_VERSION}{path}"))
            .header(hyper::header::HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(|source| ClientError::Request { path: path.to_string(), source })?;
        sender.send_request(request).await.map_err(http)
    }
}

async fn check_status(path: &str, response: Response<Incoming>) -> Result<Response<Incoming>, ClientError> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(response);
    }
    let body = collect(path, response).await.unwrap_or_default();
    // The engine explains errors as `{"message": "..."}`.
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(ClientError::Status { path: path.to_string(), status: status.as_u16(), message })
}

async fn collect(path: &str, response: Response<Incoming>) -> Result<Bytes, ClientError> {
    let body = response.into_body().collect().await;
    Ok(body.map_err(|source| ClientError::Http { path: path.to_string(), source })?.to_bytes())
}

/// The engine's newline-delimited JSON events.
pub struct EventStream {
    body: Incoming,
    buf: BytesMut,
}

impl EventStream {
    /// The next event; `None` when the engine closed the stream. Malformed lines are skipped.
    pub async fn next(&mut self) -> Result<Option<EngineEvent>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<EngineEvent>(&line[..pos]) {
                    Ok(event) => return Ok(Some(event)),
                    Err(e) => tracing::warn!(error = %e, "skipping a malformed docker event"),
                }
            }
            if self.buf.len() > MAX_EVENT_LINE {
                return Err(ClientError::EventTooLong);
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(source)) => return Err(ClientError::Http { path: "/events".into(), source }),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Container IDs and names only: nothing that could change the request path.
fn is_container_ref(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            DockerClient::from_host(DEFAULT_HOST).unwrap().socket(),
            Path::new("/var/run/docker.sock")
        );
        assert_eq!(DockerClient::from_host("/run/d.sock").unwrap().socket(), Path::new("/run/d.sock"));
        assert!(matches!(
            DockerClient::from_host("tcp://1.2.3.4:2375"),
            Err(ClientError::UnsupportedHost(_))
        ));
    }

    #[test]
    fn encodes_filters() {
        assert_eq!(percent_encode(r#"{"a":["b c"]}"#), "%7B%22a%22%3A%5B%22b%20c%22%5D%7D");
    }

    #[test]
    fn refs_cannot_escape_the_path() {
        assert!(is_container_ref("0123abcd"));
        assert!(is_container_ref("web_1.x-y"));
        assert!(!is_container_ref("../../images/json"));
        assert!(!is_container_ref("a?b"));
        assert!(!is_container_ref(""));
    }
}
