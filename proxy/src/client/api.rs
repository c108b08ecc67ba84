//! A client for the control API, over the Unix socket or loopback TCP.
//!
//! Used by `ztproxy connect`, the benchmarks and the tests; a gateway written in Rust could
//! use it too.

use std::path::PathBuf;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use zt_api::Secret;
use zt_api::audit::AuditRecord;
use zt_api::control::{
    CandidatesRequest, CreateSessionRequest, CreateSessionResponse, CreateViewerRequest,
    EndedSession, ErrorBody, ErrorDetail, Health, IceCandidate, SessionInfo, SessionList,
    ViewerInfo, ViewerList,
};

/// Largest response body the client reads (the events stream is read line by line).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// Longest event line accepted.
pub const MAX_EVENT_LINE: usize = 64 * 1024;

/// Where the control API is.
#[derive(Debug, Clone)]
pub enum ApiAddress {
    /// A Unix socket path.
    Unix(PathBuf),
    /// `host:port` over plain HTTP on loopback.
    Tcp(String),
}

impl FromStr for ApiAddress {
    type Err = String;

    /// `unix:/path`, `/path`, or `http://host:port`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            Ok(Self::Unix(PathBuf::from(path)))
        } else if let Some(rest) = text.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') {
                Err(format!("`{text}` is not http://host:port"))
            } else {
                Ok(Self::Tcp(authority.to_owned()))
            }
        } else if text.starts_with('/') || text.starts_with('.') {
            Ok(Self::Unix(PathBuf::from(text)))
        } else {
            Err(format!(
                "`{text}` is neither unix:/path/to/socket nor http://host:port"
            ))
        }
    }
}

/// Why a control API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API could not be reached.
    #[error("cannot reach the control API at {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("control API request failed: {0}")]
    Http(String),
    /// The API answered with an error.
    #[error("{status}: {} ({}){}", .error.message, code_name(.error), field_suffix(.error))]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body.
        error: ErrorDetail,
    },
    /// The API answered with something unexpected.
    #[error("unexpected answer from the control API: {0}")]
    Decode(String),
}

fn code_name(error: &ErrorDetail) -> String {
    serde_json::to_value(error.code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn field_suffix(error: &ErrorDetail) -> String {
    error
        .field
        .as_ref()
        .map(|f| format!(", field `{f}`"))
        .unwrap_or_default()
}

/// A control API client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    address: ApiAddress,
    token: Option<Secret<String>>,
}

impl ApiClient {
    /// A client for `address`, sending `token` as a bearer token when given.
    pub fn new(address: ApiAddress, token: Option<Secret<String>>) -> Self {
        Self { address, token }
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(
            Method::POST,
            "/v1/sessions",
            Some(body),
            StatusCode::CREATED,
        )
        .await
    }

    /// `GET /v1/sessions`.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ClientError> {
        let list: SessionList = self
            .json(Method::GET, "/v1/sessions", None, StatusCode::OK)
            .await?;
        Ok(list.sessions)
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn get_session(&self, id: &str) -> Result<SessionInfo, ClientError> {
        self.json(
            Method::GET,
            &format!("/v1/sessions/{id}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// `DELETE /v1/sessions/{id}`.
    pub async fn delete_session(&self, id: &str) -> Result<EndedSession, ClientError> {
        self.json(
            Method::DELETE,
            &format!("/v1/sessions/{id}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// `POST /v1/sessions/{id}/viewers`: a viewer of the running session `id`.
    pub async fn create_viewer(
        &self,
        id: &str,
        request: &CreateViewerRequest,
    ) -> Result<CreateSessionResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.json(
            Method::POST,
            &format!("/v1/sessions/{id}/viewers"),
            Some(body),
            StatusCode::CREATED,
        )
        .await
    }

    /// `GET /v1/sessions/{id}/viewers`.
    pub async fn list_viewers(&self, id: &str) -> Result<Vec<ViewerInfo>, ClientError> {
        let list: ViewerList = self
            .json(
                Method::GET,
                &format!("/v1/sessions/{id}/viewers"),
                None,
                StatusCode::OK,
            )
            .await?;
        Ok(list.viewers)
    }

    /// `DELETE /v1/sessions/{id}/viewers/{viewer}`.
    pub async fn delete_viewer(&self, id: &str, viewer: &str) -> Result<EndedSession, ClientError> {
        self.json(
            Method::DELETE,
            &format!("/v1/sessions/{id}/viewers/{viewer}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// `POST /v1/sessions/{id}/candidates`.
    pub async fn add_candidates(
        &self,
        id: &str,
        candidates: Vec<IceCandidate>,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&CandidatesRequest { candidates })
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let (status, bytes) = self
            .send(
                Method::POST,
                &format!("/v1/sessions/{id}/candidates"),
                Some(body),
            )
            .await?;
        expect_status(status, StatusCode::NO_CONTENT, &bytes).map(|_| ())
    }

    /// `GET /v1/health`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/v1/health", None, StatusCode::OK)
            .await
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let (status, bytes) = self.send(Method::GET, "/metrics", None).await?;
        let bytes = expect_status(status, StatusCode::OK, &bytes)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Sends any request; returns the status and body. For tests of malformed requests.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.request(method, path, content_type, body).await?;
        let status = response.status();
        let bytes = collect(response.into_body(), MAX_RESPONSE_BYTES).await?;
        Ok((status, bytes))
    }

    /// `GET /v1/events?since=N`: the audit stream.
    pub async fn events(&self, since: Option<u64>) -> Result<EventStream, ClientError> {
        let path = match since {
            Some(since) => format!("/v1/events?since={since}"),
            None => "/v1/events".to_owned(),
        };
        let response = self.request(Method::GET, &path, None, None).await?;
        if response.status() != StatusCode::OK {
            let status = response.status();
            let bytes = collect(response.into_body(), MAX_RESPONSE_BYTES).await?;
            return Err(api_error(status, &bytes));
        }
        Ok(EventStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        expected: StatusCode,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(method, path, body).await?;
        let bytes = expect_status(status, expected, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let content_type = body.as_ref().map(|_| "application/json");
        self.raw(method, path, content_type, body).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let (io, host) = match &self.address {
            ApiAddress::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|source| ClientError::Connect {
                        address: socket.display().to_string(),
                        source,
                    })?;
                (Io::Unix(TokioIo::new(stream)), "localhost".to_owned())
            }
            ApiAddress::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|source| ClientError::Connect {
                        address: authority.clone(),
                        source,
                    })?;
                (Io::Tcp(TokioIo::new(stream)), authority.clone())
            }
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, host);
        if let Some(content_type) = content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            builder = builder.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.expose_secret()),
            );
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        let response = match io {
            Io::Unix(io) => send_on(io, request).await?,
            Io::Tcp(io) => send_on(io, request).await?,
        };
        Ok(response)
    }
}

enum Io {
    Unix(TokioIo<tokio::net::UnixStream>),
    Tcp(TokioIo<tokio::net::TcpStream>),
}

async fn send_on<T>(
    io: T,
    request: Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, ClientError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}

async fn collect(body: Incoming, limit: usize) -> Result<Bytes, ClientError> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Http(e.to_string()))
}

fn expect_status(
    status: StatusCode,
    expected: StatusCode,
    bytes: &Bytes,
) -> Result<Bytes, ClientError> {
    if status == expected {
        Ok(bytes.clone())
    } else {
        Err(api_error(status, bytes))
    }
}

fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api {
            status: status.as_u16(),
            error: body.error,
        },
        Err(_) => ClientError::Decode(format!("HTTP {status} without an error body")),
    }
}

/// The audit event stream.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    buffer: BytesMut,
}

impl EventStream {
    /// The next event; `None` when the stream ends.
    pub async fn next(&mut self) -> Option<Result<AuditRecord, ClientError>> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(pos + 1);
                let line = line.get(..pos).unwrap_or_default();
                return Some(
                    serde_json::from_slice(line).map_err(|e| ClientError::Decode(e.to_string())),
                );
            }
            if self.buffer.len() > MAX_EVENT_LINE {
                return Some(Err(ClientError::Decode("event line too long".into())));
            }
            match self.body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Err(e) => return Some(Err(ClientError::Http(e.to_string()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert!(matches!(
            "unix:/run/z.sock".parse::<ApiAddress>(),
            Ok(ApiAddress::Unix(_))
        ));
        assert!(matches!(
            "/run/z.sock".parse::<ApiAddress>(),
            Ok(ApiAddress::Unix(_))
        ));
        assert!(matches!(
            "http://127.0.0.1:7780".parse::<ApiAddress>(),
            Ok(ApiAddress::Tcp(a)) if a == "127.0.0.1:7780"
        ));
        assert!("ftp://x".parse::<ApiAddress>().is_err());
        assert!("http://h/x".parse::<ApiAddress>().is_err());
    }
}
