//! The daemon's HTTP API from the client's side: every endpoint of
//! [`aevis_shared::protocol`], bincode bodies via [`aevis_shared::codec`],
//! job progress by server-sent events with a polling fallback.
//!
//! Errors are `Clone` so they can ride in iced messages, and say what went
//! wrong in words ([`ApiError`]'s `Display`).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aevis_shared::codec::{self, BINARY_MIME, CodecError};
use aevis_shared::graph::LayerGraph;
use aevis_shared::protocol::{
    AttackReport, AttackRequest, CandidateList, CandidatesRequest, ContributionRequest, ContributionResult,
    CreateSession, DaemonInfo, ErrorBody, ErrorKind, ImagePage, JobCreated, JobStatus, LayerDetail, NeuronDetail,
    PROTOCOL_VERSION, SessionCreated, SessionResult, SessionSummary, VERSION_HEADER,
};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a call to the daemon failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The address is not a usable `http://` URL.
    #[error("the daemon address is not usable ({reason}): {url}")]
    BadUrl {
        /// What is wrong.
        reason: String,
        /// The address given.
        url: String,
    },
    /// No connection (daemon down, wrong port, network lost, timeout).
    #[error("cannot reach the daemon ({}) at {url}", reason(source))]
    Unreachable {
        /// The transport error.
        source: Arc<reqwest::Error>,
        /// The URL called.
        url: String,
    },
    /// The daemon answered with an aevis error body.
    #[error("{}", words(.body))]
    Daemon {
        /// HTTP status.
        status: u16,
        /// The body.
        body: ErrorBody,
    },
    /// An error status without an aevis error body (a proxy, another server).
    #[error("the server answered HTTP {status} without an aevis error ({text}) at {url}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body as text.
        text: String,
        /// The URL called.
        url: String,
    },
    /// The answer did not decode as the expected type.
    #[error(
        "the daemon's answer could not be read ({source}); is the daemon the same version as this client? at {url}"
    )]
    Decode {
        /// The decoding error.
        source: Arc<CodecError>,
        /// The URL called.
        url: String,
    },
    /// A job event was not valid JSON.
    #[error("a progress event could not be read: {0}")]
    Event(String),
}

fn reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection refused or no route".to_owned()
    } else {
        // The outermost message is generic; the source chain says what happened.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg = s.to_string();
            src = s.source();
        }
        msg
    }
}

/// An error body in words a researcher understands.
pub fn words(body: &ErrorBody) -> String {
    let what = match body.kind {
        ErrorKind::BadRequest => "the daemon rejected the request",
        ErrorKind::Unauthorized => "the daemon needs a valid token (set it on the connect screen)",
        ErrorKind::NotFound => "not found",
        ErrorKind::ProtocolVersion => {
            "this client and the daemon speak different protocol versions; update one of them"
        }
        ErrorKind::TooLarge => "the upload is larger than the daemon accepts",
        ErrorKind::UnsupportedMedia => "the file is not an image the daemon can read (PNG or JPEG)",
        ErrorKind::Unprocessable => "the daemon could not do this",
        ErrorKind::Busy => "the daemon is busy (job queue full); try again in a moment",
        ErrorKind::Internal => "the daemon hit an internal fault",
    };
    if body.message.is_empty() { what.to_owned() } else { format!("{what}: {}", body.message) }
}

impl ApiError {
    /// The daemon cannot be reached: the GUI shows its reconnect state.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ApiError::Unreachable { .. })
    }

    /// The kind of the daemon's error body, if it sent one.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ApiError::Daemon { body, .. } => Some(body.kind),
            _ => None,
        }
    }
}

/// Where the daemon is and how to authenticate.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api").field("base", &self.base).field("token", &self.token.as_ref().map(|_| "…")).finish()
    }
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Normalises a daemon address: adds `http://` when no scheme is given and
/// drops trailing slashes. `https://` is refused (this build has no TLS).
pub fn normalise_url(url: &str) -> Result<String, ApiError> {
    let url = url.trim().trim_end_matches('/');
    let bad = |reason: &str| ApiError::BadUrl { reason: reason.to_owned(), url: url.to_owned() };
    if url.is_empty() {
        return Err(bad("empty"));
    }
    let with_scheme = if url.contains("://") { url.to_owned() } else { format!("http://{url}") };
    if with_scheme.starts_with("https://") {
        return Err(bad("this client is built without TLS; use http:// or an SSH tunnel"));
    }
    if !with_scheme.starts_with("http://") {
        return Err(bad("only http:// addresses are supported"));
    }
    match reqwest::Url::parse(&with_scheme) {
        Ok(u) if u.host_str().is_some() => Ok(with_scheme),
        Ok(_) => Err(bad("no host")),
        Err(e) => Err(bad(&e.to_string())),
    }
}

/// Parses a server-sent event stream incrementally: feed bytes, get the
/// `data:` payloads of complete events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: String,
    data: Vec<String>,
}

impl SseParser {
    /// Adds bytes; returns the payloads of the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        while let Some(nl) = self.buf.find('\n') {
            let line: String = self.buf.drain(..=nl).collect();
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(self.data.join("\n"));
                    self.data.clear();
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                self.data.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            }
            // Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing we need.
        }
        out
    }
}

impl Api {
    /// A client of the daemon at `url` (`host:port` or `http://host:port`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ApiError> {
        let base = normalise_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ApiError::BadUrl { reason: e.to_string(), url: base.clone() })?;
        Ok(Self { base, token: token.filter(|t| !t.is_empty()), http })
    }

    /// The normalised daemon address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The bearer token, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method, url)
            .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
            .header(reqwest::header::ACCEPT, BINARY_MIME);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t);
        }
        rb
    }

    async fn send(&self, rb: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, ApiError> {
        let unreachable = |e: reqwest::Error| ApiError::Unreachable { source: Arc::new(e), url: url.to_owned() };
        let resp = rb.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?.to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(error_from(status.as_u16(), &bytes, url))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        let url = self.url(path);
        let bytes = self.send(self.request(reqwest::Method::GET, &url), &url).await?;
        decode(&bytes, &url)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: Option<&B>) -> Result<T, ApiError> {
        let url = self.url(path);
        let mut rb = self.request(reqwest::Method::POST, &url).header(reqwest::header::CONTENT_TYPE, BINARY_MIME);
        if let Some(b) = body {
            let bytes = codec::encode(b).map_err(|e| ApiError::Decode { source: Arc::new(e), url: url.clone() })?;
            rb = rb.body(bytes);
        }
        let bytes = self.send(rb, &url).await?;
        decode(&bytes, &url)
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<DaemonInfo, ApiError> {
        self.get("/info").await
    }

    /// `GET /v1/models/{model}/graph`.
    pub async fn graph(&self, model: &str) -> Result<LayerGraph, ApiError> {
        self.get(&format!("/models/{}/graph", segment(model))).await
    }

    /// `GET /v1/models/{model}/images?split=&offset=&limit=&class=`.
    pub async fn images(
        &self,
        model: &str,
        split: &str,
        offset: usize,
        limit: usize,
        class: Option<usize>,
    ) -> Result<ImagePage, ApiError> {
        let class = class.map(|c| format!("&class={c}")).unwrap_or_default();
        self.get(&format!(
            "/models/{}/images?split={}&offset={offset}&limit={limit}{class}",
            segment(model),
            segment(split)
        ))
        .await
    }

    /// `GET /v1/models/{model}/images/{split}/{index}/png`: PNG bytes.
    pub async fn image_png(&self, model: &str, split: &str, index: usize) -> Result<Vec<u8>, ApiError> {
        let url = self.url(&format!("/models/{}/images/{}/{index}/png", segment(model), segment(split)));
        self.send(self.request(reqwest::Method::GET, &url).header(reqwest::header::ACCEPT, "image/png"), &url).await
    }

    /// `POST /v1/models/{model}/attack`.
    pub async fn attack(&self, model: &str, req: &AttackRequest) -> Result<AttackReport, ApiError> {
        self.post(&format!("/models/{}/attack", segment(model)), Some(req)).await
    }

    /// `POST /v1/models/{model}/candidates`: starts a candidate job.
    pub async fn start_candidates(&self, model: &str, req: &CandidatesRequest) -> Result<JobCreated, ApiError> {
        self.post(&format!("/models/{}/candidates", segment(model)), Some(req)).await
    }

    /// `GET /v1/models/{model}/candidates`: the latest finished list.
    pub async fn candidates(&self, model: &str) -> Result<CandidateList, ApiError> {
        self.get(&format!("/models/{}/candidates", segment(model))).await
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(&self, req: &CreateSession) -> Result<SessionCreated, ApiError> {
        self.post("/sessions", Some(req)).await
    }

    /// `GET /v1/sessions`.
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>, ApiError> {
        self.get("/sessions").await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session(&self, id: &str) -> Result<SessionResult, ApiError> {
        self.get(&format!("/sessions/{}", segment(id))).await
    }

    /// `GET /v1/sessions/{id}/layers/{layer}`.
    pub async fn layer(&self, id: &str, layer: usize) -> Result<LayerDetail, ApiError> {
        self.get(&format!("/sessions/{}/layers/{layer}", segment(id))).await
    }

    /// `GET /v1/sessions/{id}/layers/{layer}/channels/{channel}`.
    pub async fn neuron(&self, id: &str, layer: usize, channel: usize) -> Result<NeuronDetail, ApiError> {
        self.get(&format!("/sessions/{}/layers/{layer}/channels/{channel}", segment(id))).await
    }

    /// `POST /v1/sessions/{id}/contribution`.
    pub async fn contribution(&self, id: &str, req: &ContributionRequest) -> Result<ContributionResult, ApiError> {
        self.post(&format!("/sessions/{}/contribution", segment(id)), Some(req)).await
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobStatus, ApiError> {
        self.get(&format!("/jobs/{}", segment(id))).await
    }

    /// `POST /v1/jobs/{id}/cancel`.
    pub async fn cancel_job(&self, id: &str) -> Result<JobStatus, ApiError> {
        self.post::<(), _>(&format!("/jobs/{}/cancel", segment(id)), None).await
    }

    /// `GET /v1/jobs/{id}/events`: each status as it changes, ending after a
    /// final state (or when the daemon closes the stream).
    pub fn job_events(&self, id: &str) -> impl Stream<Item = Result<JobStatus, ApiError>> + Send + 'static {
        let url = self.url(&format!("/jobs/{}/events", segment(id)));
        let rb = self.request(reqwest::Method::GET, &url).header(reqwest::header::ACCEPT, "text/event-stream");
        enum State {
            Start(reqwest::RequestBuilder, String),
            Reading(BoxStream<'static, reqwest::Result<Vec<u8>>>, SseParser, VecDeque<JobStatus>, String),
            Done,
        }
        futures_util::stream::unfold(State::Start(rb, url), |state| async move {
            let mut state = state;
            loop {
                match state {
                    State::Done => return None,
                    State::Start(rb, url) => match rb.send().await {
                        Err(e) => return Some((Err(ApiError::Unreachable { source: Arc::new(e), url }), State::Done)),
                        Ok(resp) if !resp.status().is_success() => {
                            let status = resp.status().as_u16();
                            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                            return Some((Err(error_from(status, &body, &url)), State::Done));
                        }
                        Ok(resp) => {
                            let body = resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed();
                            state = State::Reading(body, SseParser::default(), VecDeque::new(), url)
                        }
                    },
                    State::Reading(mut body, mut parser, mut queue, url) => {
                        if let Some(status) = queue.pop_front() {
                            let next = if status.state.is_final() {
                                State::Done
                            } else {
                                State::Reading(body, parser, queue, url)
                            };
                            return Some((Ok(status), next));
                        }
                        match body.next().await {
                            None => return None,
                            Some(Err(e)) => {
                                return Some((Err(ApiError::Unreachable { source: Arc::new(e), url }), State::Done));
                            }
                            Some(Ok(bytes)) => {
                                for payload in parser.feed(&bytes) {
                                    match serde_json::from_str::<JobStatus>(&payload) {
                                        Ok(s) => queue.push_back(s),
                                        Err(e) => return Some((Err(ApiError::Event(e.to_string())), State::Done)),
                                    }
                                }
                                state = State::Reading(body, parser, queue, url);
                            }
                        }
                    }
                }
            }
        })
    }

    /// Polls `GET /v1/jobs/{id}` every `every` until a final state.
    pub fn poll_job(
        &self,
        id: &str,
        every: Duration,
    ) -> impl Stream<Item = Result<JobStatus, ApiError>> + Send + 'static {
        let api = self.clone();
        let id = id.to_owned();
        futures_util::stream::unfold((api, id, true, false), move |(api, id, first, done)| async move {
            if done {
                return None;
            }
            if !first {
                tokio::time::sleep(every).await;
            }
            let r = api.job(&id).await;
            let stop = match &r {
                Ok(s) => s.state.is_final(),
                Err(_) => true,
            };
            Some((r, (api, id, false, stop)))
        })
    }

    /// Job progress: the event stream, continued by polling when the daemon
    /// offers no events (an error answer, a broken or unreadable stream) or
    /// closes the stream before the job is final. A lost connection ends it
    /// with that error.
    pub fn job_progress(&self, id: &str) -> BoxStream<'static, Result<JobStatus, ApiError>> {
        let finished = Arc::new(AtomicBool::new(false));
        let seen = finished.clone();
        let events = self.job_events(id).filter_map(move |r| {
            let keep = match &r {
                Ok(s) => {
                    if s.state.is_final() {
                        seen.store(true, Ordering::SeqCst);
                    }
                    Some(r)
                }
                Err(e) if e.is_unreachable() => {
                    seen.store(true, Ordering::SeqCst);
                    Some(r)
                }
                Err(_) => None,
            };
            std::future::ready(keep)
        });
        let api = self.clone();
        let id = id.to_owned();
        let tail = futures_util::stream::once(async move {
            if finished.load(Ordering::SeqCst) {
                futures_util::stream::empty().boxed()
            } else {
                api.poll_job(&id, Duration::from_millis(500)).boxed()
            }
        })
        .flatten();
        events.chain(tail).boxed()
    }
}

fn error_from(status: u16, bytes: &[u8], url: &str) -> ApiError {
    if let Ok(body) = codec::decode::<ErrorBody>(bytes) {
        return ApiError::Daemon { status, body };
    }
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return ApiError::Daemon { status, body };
    }
    let text: String = String::from_utf8_lossy(bytes).chars().take(200).collect();
    ApiError::Http {
        status,
        text: if text.trim().is_empty() { "empty body".into() } else { text },
        url: url.to_owned(),
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], url: &str) -> Result<T, ApiError> {
    codec::decode(bytes).map_err(|e| ApiError::Decode { source: Arc::new(e), url: url.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aevis_shared::protocol::{JobState, Progress};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// Serves `answers` in order, one request each, recording request heads.
    fn server(answers: Vec<(u16, &'static str, Vec<u8>)>) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, ctype, body) in answers {
                let Ok((mut sock, _)) = listener.accept() else { return };
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    head.push_str(&line);
                }
                let mut body_in = vec![0; len];
                let _ = reader.read_exact(&mut body_in);
                let _ = tx.send(head);
                let _ = write!(
                    sock,
                    "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(&body);
            }
        });
        (format!("127.0.0.1:{}", addr.port()), rx)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn status(state: JobState, fraction: f32) -> JobStatus {
        JobStatus {
            id: "j1".into(),
            kind: "session".into(),
            session: Some("s1".into()),
            state,
            progress: Progress { stage: "adversarial datapath".into(), fraction, ..Progress::default() },
            error: None,
        }
    }

    #[test]
    fn decodes_answers_and_sends_headers() {
        let info = crate::sample::info();
        let (url, heads) = server(vec![(200, BINARY_MIME, codec::encode(&info).unwrap())]);
        let api = Api::new(&url, Some("secret".into())).unwrap();
        let got = rt().block_on(api.info()).unwrap();
        assert_eq!(got, info);
        let head = heads.recv().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /v1/info http/1.1"), "{head}");
        assert!(head.contains(&format!("{VERSION_HEADER}: {PROTOCOL_VERSION}")));
        assert!(head.contains("authorization: bearer secret"));
        assert!(head.contains("accept: application/octet-stream"));
    }

    #[test]
    fn error_bodies_in_words() {
        let body = ErrorBody { kind: ErrorKind::NotFound, message: "no session s9".into() };
        let (url, heads) = server(vec![
            (404, BINARY_MIME, codec::encode(&body).unwrap()),
            (502, "text/plain", b"Bad Gateway".to_vec()),
            (200, BINARY_MIME, vec![1, 2, 3]),
        ]);
        let api = Api::new(&format!("http://{url}/"), None).unwrap();
        let rt = rt();
        let e = rt.block_on(api.session("s 9")).unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::NotFound));
        assert_eq!(e.to_string(), "not found: no session s9");
        assert!(heads.recv().unwrap().starts_with("GET /v1/sessions/s%209 "));
        let e = rt.block_on(api.sessions()).unwrap_err();
        assert!(matches!(e, ApiError::Http { status: 502, .. }), "{e}");
        assert!(e.to_string().contains("Bad Gateway"));
        let e = rt.block_on(api.info()).unwrap_err();
        assert!(matches!(e, ApiError::Decode { .. }));
        // Clone for iced messages.
        let e2 = e.clone();
        assert_eq!(e2.to_string(), e.to_string());
    }

    #[test]
    fn unreachable_daemon() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let api = Api::new(&format!("127.0.0.1:{port}"), None).unwrap();
        let e = rt().block_on(api.info()).unwrap_err();
        assert!(e.is_unreachable(), "{e}");
        assert!(e.to_string().starts_with("cannot reach the daemon"));
    }

    #[test]
    fn posts_bincode_bodies() {
        let created = SessionCreated { session: "s1".into(), job: Some("j1".into()), cached: false };
        let (url, heads) = server(vec![(200, BINARY_MIME, codec::encode(&created).unwrap())]);
        let api = Api::new(&url, None).unwrap();
        let req = crate::sample::session().request;
        assert_eq!(rt().block_on(api.create_session(&req)).unwrap(), created);
        let head = heads.recv().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /v1/sessions "));
        assert!(head.contains("content-type: application/octet-stream"));
        assert!(!head.contains("authorization"));
    }

    #[test]
    fn sse_parser_splits_events() {
        let mut p = SseParser::default();
        assert!(p.feed(b": hello\n\ndata: {\"a\"").is_empty());
        assert_eq!(p.feed(b":1}\n\ndata: x\r\ndata: y\r\n\r\n"), vec!["{\"a\":1}".to_owned(), "x\ny".to_owned()]);
        assert!(p.feed(b"data: partial\n").is_empty());
    }

    #[test]
    fn job_events_stream_until_final() {
        let events: String =
            [status(JobState::Running, 0.5), status(JobState::Done, 1.0), status(JobState::Running, 0.1)]
                .iter()
                .map(|s| format!("data: {}\n\n", serde_json::to_string(s).unwrap()))
                .collect();
        let (url, heads) = server(vec![(200, "text/event-stream", events.into_bytes())]);
        let api = Api::new(&url, None).unwrap();
        let got: Vec<_> = rt().block_on(api.job_progress("j1").collect::<Vec<_>>());
        let states: Vec<JobState> = got.into_iter().map(|r| r.unwrap().state).collect();
        assert_eq!(states, vec![JobState::Running, JobState::Done], "stops at the final state");
        assert!(heads.recv().unwrap().to_ascii_lowercase().contains("accept: text/event-stream"));
    }

    #[test]
    fn job_progress_falls_back_to_polling() {
        let nf = ErrorBody { kind: ErrorKind::NotFound, message: "no events".into() };
        let (url, heads) = server(vec![
            (404, BINARY_MIME, codec::encode(&nf).unwrap()),
            (200, BINARY_MIME, codec::encode(&status(JobState::Running, 0.3)).unwrap()),
            (200, BINARY_MIME, codec::encode(&status(JobState::Cancelled, 0.3)).unwrap()),
        ]);
        let api = Api::new(&url, None).unwrap();
        let got: Vec<_> = rt().block_on(api.job_progress("j1").collect::<Vec<_>>());
        let states: Vec<JobState> = got.into_iter().map(|r| r.unwrap().state).collect();
        assert_eq!(states, vec![JobState::Running, JobState::Cancelled]);
        assert!(heads.recv().unwrap().contains("/v1/jobs/j1/events"));
        assert!(heads.recv().unwrap().starts_with("GET /v1/jobs/j1 "));
    }

    #[test]
    fn urls() {
        assert_eq!(normalise_url(" localhost:8080/ ").unwrap(), "http://localhost:8080");
        assert!(matches!(normalise_url("https://x"), Err(ApiError::BadUrl { .. })));
        assert!(normalise_url("").is_err());
        assert!(normalise_url("ftp://x").is_err());
        assert_eq!(segment("layer2.3.out"), "layer2.3.out");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
