//! A fault-injecting TCP proxy: phones sync over 2G links that drop in the
//! middle of an exchange, and the end-to-end tests need the same faults on
//! 127.0.0.1, reproducibly.
//!
//! [`CuttingProxy::start`] listens on `127.0.0.1:0` and forwards every
//! accepted connection to the upstream server. It reads HTTP/1.x exchanges
//! one at a time and, per request, rolls a seeded ChaCha RNG to decide its
//! fate:
//!
//! * **pass**: the request and its response are forwarded whole; the
//!   connection stays open for the next request (keep-alive).
//! * **cut request**: only a strict prefix of the request reaches the server
//!   (when the request has a body of 2 bytes or more, the full head plus part
//!   of the body; with no body, part of the head), then both connections are
//!   closed. The server never sees a complete request; the client gets a
//!   connection error and never a response.
//! * **cut response**: the whole request is forwarded and the server's
//!   response head is awaited (so the handler has run by the time the client
//!   sees anything), then only a strict prefix of the response reaches the
//!   client and the connection is closed. The client gets an error (truncated
//!   head, truncated body, or a reset), never a complete response.
//!
//! # Boundaries
//!
//! * Request head: bytes up to the first empty line (`\r\n\r\n`, or a bare
//!   `\n\n`). Request body: `Content-Length` bytes, or none without it.
//! * Response head: the same. Response body: none for `HEAD` requests and
//!   `1xx`/`204`/`304` statuses (`1xx` interim responses are forwarded whole
//!   and the final one follows); otherwise chunked when `Transfer-Encoding`
//!   ends in `chunked` (parsed chunk by chunk up to the last chunk and its
//!   trailers, so `0\r\n\r\n` inside chunk data is not mistaken for the end);
//!   otherwise `Content-Length`; otherwise until the server closes.
//! * To place a response cut uniformly, chunked and close-delimited responses
//!   are buffered whole first (up to 64 MiB; a close-delimited or chunked
//!   response that pauses for 200 ms is cut where it stands). Requests and
//!   `Content-Length` responses are streamed up to the cut point, not
//!   buffered.
//! * A cut of a close-delimited response (or of one the server itself broke
//!   off) ends in a TCP reset, since a clean close would look like a valid end
//!   of body; other cuts end in a clean close after the prefix.
//!
//! # Statistics
//!
//! [`ProxyStats::connections`] counts accepted client connections. The other
//! three count requests: `cut_requests` when the cut is decided;
//! `passed` and `cut_responses` once the whole request has been handed to the
//! upstream (so for an upstream that acts on every complete request, the
//! number of requests it acted on is `passed + cut_responses`). A request the
//! client itself abandons half-sent is in none of them.
//!
//! # Limits
//!
//! * HTTP/1.x only, no TLS. Connections whose request cannot be framed
//!   reliably are passed through untouched (copied both ways until either
//!   side closes) and counted once in `passed`, with no fault: requests with
//!   `Transfer-Encoding` (chunked uploads), `Expect` (100-continue),
//!   `Upgrade`/`CONNECT`, conflicting `Content-Length`s, an unparseable
//!   request line or header, or a head over 64 KiB. Later requests on such a
//!   connection are not seen, let alone cut.
//! * A `101 Switching Protocols` answer also turns the connection into a
//!   pass-through.
//! * Exchanges are handled strictly in turn. Pipelined requests work (they
//!   wait in the buffer) but a cut also loses every request behind it.
//! * If the upstream closes a kept-alive connection while it is idle, the
//!   client connection is closed too; if that races with a new request, the
//!   client sees an error that no fault roll caused (as it would against the
//!   server directly).
//! * The fate sequence is reproducible for a given seed only as far as the
//!   order in which requests reach the proxy is: sequential clients give the
//!   same fates every run, concurrent ones interleave as scheduled.
//! * Cut fractions are clamped to `[0, 1]`; when they add up to more than 1,
//!   request cuts take precedence.
//! * Nothing is logged; I/O errors end the affected connection silently.
//! * Needs tokio 1.50 or later (`TcpStream::set_zero_linger`, for the resets).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longest request or response head looked for before giving up on parsing.
const MAX_HEAD: usize = 64 * 1024;
/// Most of a chunked or close-delimited response buffered before a cut.
const MAX_BUFFERED_RESPONSE: usize = 64 * 1024 * 1024;
/// Silence after which a chunked or close-delimited response about to be cut
/// is taken as complete enough.
const RESPONSE_PAUSE: Duration = Duration::from_millis(200);
/// Room reserved for each socket read.
const READ_CHUNK: usize = 16 * 1024;

/// The fraction of requests to cut, and the seed for the dice.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultPlan {
    /// Probability that a request reaches the server truncated.
    pub cut_request: f64,
    /// Probability that a request reaches the server whole but its response
    /// reaches the client truncated.
    pub cut_response: f64,
    /// Seed of the ChaCha RNG that decides each request's fate.
    pub seed: u64,
}

impl FaultPlan {
    pub fn new(cut_request: f64, cut_response: f64, seed: u64) -> Self {
        FaultPlan {
            cut_request,
            cut_response,
            seed,
        }
    }

    /// No faults: everything passes.
    pub fn none() -> Self {
        FaultPlan::default()
    }
}

/// What the proxy has done so far; see the module documentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub passed: u64,
    pub cut_requests: u64,
    pub cut_responses: u64,
}

/// A running proxy. Dropping it stops accepting and aborts every connection
/// it is serving.
pub struct CuttingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for CuttingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CuttingProxy")
            .field("addr", &self.addr)
            .field("plan", &self.plan())
            .field("stats", &self.stats())
            .finish()
    }
}

impl CuttingProxy {
    /// Listen on 127.0.0.1:0 and forward to `upstream` (host:port).
    pub async fn start(upstream: SocketAddr, plan: FaultPlan) -> io::Result<CuttingProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            dice: Mutex::new(Dice::new(plan)),
            stats: Mutex::new(ProxyStats::default()),
        });
        let task = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Ok(CuttingProxy { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> ProxyStats {
        *lock(&self.shared.stats)
    }

    pub fn plan(&self) -> FaultPlan {
        lock(&self.shared.dice).plan
    }

    /// Replace the plan for requests read from now on (requests already in
    /// flight keep their fate). The RNG is reseeded from `plan.seed`.
    pub fn set_plan(&self, plan: FaultPlan) {
        *lock(&self.shared.dice) = Dice::new(plan);
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        // The connection tasks live in a JoinSet owned by the accept loop:
        // aborting the loop drops the set, which aborts them all.
        self.task.abort();
    }
}

struct Shared {
    dice: Mutex<Dice>,
    stats: Mutex<ProxyStats>,
}

struct Dice {
    plan: FaultPlan,
    rng: ChaCha8Rng,
}

impl Dice {
    fn new(plan: FaultPlan) -> Self {
        Dice {
            plan,
            rng: ChaCha8Rng::seed_from_u64(plan.seed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pass,
    CutRequest,
    CutResponse,
}

impl Shared {
    /// The fate of the next request, and a number in `[0, 1)` placing its
    /// cut. Two draws every time, so the sequence depends only on the seed
    /// and the number of requests.
    fn roll(&self) -> (Fate, f64) {
        let mut dice = lock(&self.dice);
        let fate_draw: f64 = dice.rng.gen();
        let place: f64 = dice.rng.gen();
        let cut_request = probability(dice.plan.cut_request);
        let cut_response = probability(dice.plan.cut_response);
        let fate = if fate_draw < cut_request {
            Fate::CutRequest
        } else if fate_draw < cut_request + cut_response {
            Fate::CutResponse
        } else {
            Fate::Pass
        };
        (fate, place)
    }

    fn count(&self, f: impl FnOnce(&mut ProxyStats)) {
        f(&mut lock(&self.stats));
    }
}

fn probability(p: f64) -> f64 {
    if p.is_nan() {
        0.0
    } else {
        p.clamp(0.0, 1.0)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    shared.count(|s| s.connections += 1);
                    connections.spawn(serve_connection(client, upstream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: accept again once a
                // connection has closed and freed its own; with none open
                // nothing will free one, so the proxy stops (its clients
                // then see their connections refused, plainly).
                Err(_) => {
                    if connections.join_next().await.is_none() {
                        return;
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    // The client sees its connection closed without an answer if the upstream
    // is down, as it would without the proxy (but after connecting).
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let mut conn = Conn {
        client,
        upstream,
        cbuf: Vec::new(),
        ubuf: Vec::new(),
    };
    // Errors only end the connection; dropping `conn` closes both sockets.
    let _ = conn.run(&shared).await;
}

/// One client connection and its upstream twin.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Read from the client, not yet forwarded.
    cbuf: Vec<u8>,
    /// Read from the upstream, not yet forwarded.
    ubuf: Vec<u8>,
}

enum RequestHead {
    /// `cbuf[..n]` is a whole request head.
    Head(usize),
    /// The client is gone (or the upstream, while idle); nothing to forward.
    Closed,
    /// No head within `MAX_HEAD` bytes.
    TooLarge,
}

enum ResponseHead {
    /// `ubuf[..n]` is a whole response head.
    Head(usize),
    /// The upstream closed first; `ubuf` holds whatever it sent.
    Eof,
    /// No head within `MAX_HEAD` bytes.
    TooLarge,
}

impl Conn {
    async fn run(&mut self, shared: &Shared) -> io::Result<()> {
        loop {
            let head_len = match self.read_request_head().await? {
                RequestHead::Head(n) => n,
                RequestHead::Closed => return Ok(()),
                RequestHead::TooLarge => {
                    shared.count(|s| s.passed += 1);
                    return self.passthrough().await;
                }
            };
            let request = match parse_request_head(&self.cbuf[..head_len]) {
                Some(r) if !r.passthrough => r,
                _ => {
                    shared.count(|s| s.passed += 1);
                    return self.passthrough().await;
                }
            };
            let (fate, place) = shared.roll();
            let total = (head_len as u64).saturating_add(request.content_length);
            match fate {
                Fate::CutRequest => {
                    shared.count(|s| s.cut_requests += 1);
                    let cut = request_cut_point(head_len as u64, request.content_length, place);
                    let _ =
                        forward_exact(&mut self.client, &mut self.cbuf, &mut self.upstream, cut)
                            .await;
                    // The prefix, then a clean end of stream: the server sees
                    // a request broken off. The client socket is simply
                    // dropped (a reset if it is still sending).
                    let _ = self.upstream.shutdown().await;
                    return Ok(());
                }
                Fate::Pass => {
                    forward_exact(&mut self.client, &mut self.cbuf, &mut self.upstream, total)
                        .await?;
                    shared.count(|s| s.passed += 1);
                    let keep_alive = self.relay_response(request.is_head).await?;
                    if !keep_alive || request.close {
                        let _ = self.client.shutdown().await;
                        return Ok(());
                    }
                }
                Fate::CutResponse => {
                    forward_exact(&mut self.client, &mut self.cbuf, &mut self.upstream, total)
                        .await?;
                    shared.count(|s| s.cut_responses += 1);
                    return self.cut_response(request.is_head, place).await;
                }
            }
        }
    }

    /// Waits for the next request head in `cbuf`. Between requests, also
    /// watches the upstream: if it closes, so does the client connection.
    async fn read_request_head(&mut self) -> io::Result<RequestHead> {
        if self.cbuf.is_empty() {
            tokio::select! {
                read = read_some(&mut self.client, &mut self.cbuf) => {
                    if read? == 0 {
                        let _ = self.upstream.shutdown().await;
                        return Ok(RequestHead::Closed);
                    }
                }
                read = read_some(&mut self.upstream, &mut self.ubuf) => {
                    // Closed (or spoke out of turn) with no request in
                    // flight: hand over what it said and close.
                    if matches!(read, Ok(n) if n > 0) {
                        let _ = self.client.write_all(&self.ubuf).await;
                    }
                    self.ubuf.clear();
                    let _ = self.client.shutdown().await;
                    return Ok(RequestHead::Closed);
                }
            }
        }
        let mut scanned = 0;
        loop {
            if let Some(end) = find_head_end(&self.cbuf, scanned) {
                return Ok(RequestHead::Head(end));
            }
            if self.cbuf.len() > MAX_HEAD {
                return Ok(RequestHead::TooLarge);
            }
            scanned = self.cbuf.len().saturating_sub(2);
            if read_some(&mut self.client, &mut self.cbuf).await? == 0 {
                // Gave up half-way through a head: nothing worth forwarding.
                return Ok(RequestHead::Closed);
            }
        }
    }

    async fn read_response_head(&mut self) -> io::Result<ResponseHead> {
        let mut scanned = 0;
        loop {
            if let Some(end) = find_head_end(&self.ubuf, scanned) {
                return Ok(ResponseHead::Head(end));
            }
            if self.ubuf.len() > MAX_HEAD {
                return Ok(ResponseHead::TooLarge);
            }
            scanned = self.ubuf.len().saturating_sub(2);
            if read_some(&mut self.upstream, &mut self.ubuf).await? == 0 {
                return Ok(ResponseHead::Eof);
            }
        }
    }

    /// Forwards the whole response to the request just forwarded. `Ok(true)`:
    /// the connection can carry another exchange.
    async fn relay_response(&mut self, request_is_head: bool) -> io::Result<bool> {
        loop {
            let head_len = match self.read_response_head().await? {
                ResponseHead::Head(n) => n,
                ResponseHead::Eof => {
                    self.client.write_all(&self.ubuf).await?;
                    self.ubuf.clear();
                    return Ok(false);
                }
                ResponseHead::TooLarge => {
                    self.client.write_all(&self.ubuf).await?;
                    self.ubuf.clear();
                    tokio::io::copy(&mut self.upstream, &mut self.client).await?;
                    return Ok(false);
                }
            };
            let response = parse_response_head(&self.ubuf[..head_len], request_is_head);
            let keep_alive = !response.close;
            match response.framing {
                Framing::Interim => {
                    self.client.write_all(&self.ubuf[..head_len]).await?;
                    self.ubuf.drain(..head_len);
                }
                Framing::Switch => {
                    self.passthrough().await?;
                    return Ok(false);
                }
                Framing::Empty => {
                    self.client.write_all(&self.ubuf[..head_len]).await?;
                    self.ubuf.drain(..head_len);
                    return Ok(keep_alive);
                }
                Framing::Length(n) => {
                    let total = (head_len as u64).saturating_add(n);
                    forward_exact(&mut self.upstream, &mut self.ubuf, &mut self.client, total)
                        .await?;
                    return Ok(keep_alive);
                }
                Framing::Chunked => {
                    self.client.write_all(&self.ubuf[..head_len]).await?;
                    self.ubuf.drain(..head_len);
                    let mut tracker = ChunkedTracker::default();
                    loop {
                        if !self.ubuf.is_empty() {
                            match tracker.feed(&self.ubuf) {
                                Ok(Some(end)) => {
                                    self.client.write_all(&self.ubuf[..end]).await?;
                                    self.ubuf.drain(..end);
                                    return Ok(keep_alive);
                                }
                                Ok(None) => {
                                    self.client.write_all(&self.ubuf).await?;
                                    self.ubuf.clear();
                                }
                                Err(Malformed) => {
                                    // Lost track: relay the rest as it comes.
                                    self.client.write_all(&self.ubuf).await?;
                                    self.ubuf.clear();
                                    tokio::io::copy(&mut self.upstream, &mut self.client).await?;
                                    return Ok(false);
                                }
                            }
                        }
                        if read_some(&mut self.upstream, &mut self.ubuf).await? == 0 {
                            return Ok(false);
                        }
                    }
                }
                Framing::UntilClose => {
                    self.client.write_all(&self.ubuf).await?;
                    self.ubuf.clear();
                    tokio::io::copy(&mut self.upstream, &mut self.client).await?;
                    return Ok(false);
                }
            }
        }
    }

    /// Forwards a strict prefix of the response to the request just
    /// forwarded, then closes the client connection.
    async fn cut_response(&mut self, request_is_head: bool, place: f64) -> io::Result<()> {
        loop {
            let head_len = match self.read_response_head().await? {
                ResponseHead::Head(n) => n,
                ResponseHead::Eof => return self.send_prefix_and_reset(place).await,
                ResponseHead::TooLarge => {
                    self.buffer_until_close_or_pause().await;
                    return self.send_prefix_and_reset(place).await;
                }
            };
            let response = parse_response_head(&self.ubuf[..head_len], request_is_head);
            let total = match response.framing {
                Framing::Interim => {
                    self.client.write_all(&self.ubuf[..head_len]).await?;
                    self.ubuf.drain(..head_len);
                    continue;
                }
                Framing::Empty | Framing::Switch => head_len as u64,
                Framing::Length(n) => (head_len as u64).saturating_add(n),
                Framing::Chunked => match self.buffer_chunked(head_len).await {
                    Some(end) => end as u64,
                    // Broken off, malformed, paused or huge: what we hold is
                    // not a complete response, so any prefix of it will do.
                    None => return self.send_prefix_and_reset(place).await,
                },
                Framing::UntilClose => {
                    self.buffer_until_close_or_pause().await;
                    return self.send_prefix_and_reset(place).await;
                }
            };
            let cut = pick_cut(total, place);
            if forward_exact(&mut self.upstream, &mut self.ubuf, &mut self.client, cut)
                .await
                .is_err()
            {
                // The upstream broke off before the cut point, so the client
                // has a strict prefix anyway; make sure it reads as an error.
                let _ = self.client.set_zero_linger();
                return Ok(());
            }
            // The response is framed, so a clean close after a strict prefix
            // reads as truncated.
            let _ = self.client.shutdown().await;
            return Ok(());
        }
    }

    /// Buffers a chunked body starting at `ubuf[head_len..]`; the end offset
    /// of the response in `ubuf`, or `None` if it does not come whole.
    async fn buffer_chunked(&mut self, head_len: usize) -> Option<usize> {
        let mut tracker = ChunkedTracker::default();
        let mut fed = head_len;
        loop {
            match tracker.feed(&self.ubuf[fed..]) {
                Ok(Some(end)) => return Some(fed + end),
                Ok(None) => fed = self.ubuf.len(),
                Err(Malformed) => return None,
            }
            if self.ubuf.len() >= MAX_BUFFERED_RESPONSE {
                return None;
            }
            match tokio::time::timeout(
                RESPONSE_PAUSE,
                read_some(&mut self.upstream, &mut self.ubuf),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    async fn buffer_until_close_or_pause(&mut self) {
        while self.ubuf.len() < MAX_BUFFERED_RESPONSE {
            match tokio::time::timeout(
                RESPONSE_PAUSE,
                read_some(&mut self.upstream, &mut self.ubuf),
            )
            .await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Sends a strict prefix of `ubuf` and makes the close a reset, for
    /// responses where a clean close could pass for a complete one.
    async fn send_prefix_and_reset(&mut self, place: f64) -> io::Result<()> {
        let cut = usize::try_from(pick_cut(self.ubuf.len() as u64, place)).unwrap_or(0);
        let _ = self.client.write_all(&self.ubuf[..cut]).await;
        let _ = self.client.flush().await;
        // Dropping the socket with SO_LINGER 0 sends RST. Data already
        // delivered stays readable on loopback before the error shows.
        let _ = self.client.set_zero_linger();
        Ok(())
    }

    async fn passthrough(&mut self) -> io::Result<()> {
        if !self.cbuf.is_empty() {
            self.upstream.write_all(&self.cbuf).await?;
            self.cbuf.clear();
        }
        if !self.ubuf.is_empty() {
            self.client.write_all(&self.ubuf).await?;
            self.ubuf.clear();
        }
        tokio::io::copy_bidirectional(&mut self.client, &mut self.upstream).await?;
        Ok(())
    }
}

async fn read_some(src: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    src.read_buf(buf).await
}

/// Moves exactly `n` bytes from `src` (starting with what is already in
/// `buf`) to `dst`; bytes beyond them stay in `buf`.
async fn forward_exact(
    src: &mut TcpStream,
    buf: &mut Vec<u8>,
    dst: &mut TcpStream,
    n: u64,
) -> io::Result<()> {
    let mut left = n;
    loop {
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if take > 0 {
            dst.write_all(&buf[..take]).await?;
            buf.drain(..take);
            left -= take as u64;
        }
        if left == 0 {
            return Ok(());
        }
        if read_some(src, buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Where to cut a request of `head_len + body_len` bytes so that the server
/// never has all of it: inside the body when it has 2 bytes or more (at least
/// 1 body byte through, at least 1 held back), right after the head for a
/// 1-byte body, inside the head for no body.
fn request_cut_point(head_len: u64, body_len: u64, place: f64) -> u64 {
    match body_len {
        0 => pick_in(1, head_len.saturating_sub(1), place),
        1 => head_len,
        _ => pick_in(
            head_len + 1,
            head_len.saturating_add(body_len).saturating_sub(1),
            place,
        ),
    }
}

/// A cut in `[1, total - 1]` (0 when `total` is 1 or less).
fn pick_cut(total: u64, place: f64) -> u64 {
    if total <= 1 {
        0
    } else {
        pick_in(1, total - 1, place)
    }
}

/// Maps `place` in `[0, 1)` evenly onto `[lo, hi]` (`lo` if the range is
/// empty).
fn pick_in(lo: u64, hi: u64, place: f64) -> u64 {
    if hi <= lo {
        return lo;
    }
    let span = hi - lo;
    let offset = (probability(place) * (span as f64 + 1.0)) as u64;
    lo + offset.min(span)
}

/// The end (exclusive) of the first head in `buf`: the first empty line,
/// CRLF or bare LF. The search starts at `from`, which must not be past the
/// start of an unfinished line terminator.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match (buf.get(i + 1), buf.get(i + 2)) {
                (Some(b'\n'), _) => return Some(i + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

#[derive(Debug, Default)]
struct HeaderSummary {
    content_length: Option<u64>,
    bad_content_length: bool,
    transfer_encoding: bool,
    /// The last transfer coding listed, lower-cased.
    last_coding: String,
    close: bool,
    keep_alive: bool,
    upgrade: bool,
    expect: bool,
}

/// Reads header lines (after the start line, up to the empty line). `None`
/// for a line that is not a header.
fn summarize_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Option<HeaderSummary> {
    let mut h = HeaderSummary::default();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            return None; // obsolete line folding
        }
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let part = part.trim();
                let parsed = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse::<u64>().ok())
                    .flatten();
                match (parsed, h.content_length) {
                    (None, _) => h.bad_content_length = true,
                    (Some(n), Some(m)) if n != m => h.bad_content_length = true,
                    (Some(n), _) => h.content_length = Some(n),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.transfer_encoding = true;
            if let Some(last) = value.rsplit(',').map(str::trim).find(|c| !c.is_empty()) {
                h.last_coding = last.to_ascii_lowercase();
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    h.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    h.keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    h.upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            h.upgrade = true;
        } else if name.eq_ignore_ascii_case("expect") {
            h.expect = true;
        }
    }
    Some(h)
}

fn head_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .skip_while(|line| line.is_empty())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct RequestInfo {
    is_head: bool,
    content_length: u64,
    /// The connection ends after this exchange.
    close: bool,
    /// Not framed reliably: pass the connection through.
    passthrough: bool,
}

/// `None` if this is not an HTTP/1.x request head.
fn parse_request_head(head: &[u8]) -> Option<RequestInfo> {
    let text = String::from_utf8_lossy(head);
    let mut lines = head_lines(&text);
    let mut start = lines.next()?.split_ascii_whitespace();
    let (method, _target, version) = (start.next()?, start.next()?, start.next()?);
    if start.next().is_some() {
        return None;
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return None,
    };
    let h = summarize_headers(lines)?;
    Some(RequestInfo {
        is_head: method == "HEAD",
        content_length: h.content_length.unwrap_or(0),
        close: h.close || (http10 && !h.keep_alive),
        passthrough: h.transfer_encoding
            || h.bad_content_length
            || h.upgrade
            || h.expect
            || method == "CONNECT",
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A 1xx other than 101: a head alone, the final response follows.
    Interim,
    /// 101: the connection changes protocol.
    Switch,
    /// A head alone.
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResponseInfo {
    framing: Framing,
    /// The connection ends after this response.
    close: bool,
}

fn parse_response_head(head: &[u8], request_is_head: bool) -> ResponseInfo {
    let unframed = ResponseInfo {
        framing: Framing::UntilClose,
        close: true,
    };
    let text = String::from_utf8_lossy(head);
    let mut lines = head_lines(&text);
    let Some(start) = lines.next() else {
        return unframed;
    };
    let mut start = start.split_ascii_whitespace();
    let http10 = match start.next() {
        Some("HTTP/1.1") => false,
        Some("HTTP/1.0") => true,
        _ => return unframed,
    };
    let status = match start.next() {
        Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()) => {
            code.parse::<u16>().unwrap_or(0)
        }
        _ => return unframed,
    };
    let Some(h) = summarize_headers(lines) else {
        return unframed;
    };
    let framing = match status {
        101 => Framing::Switch,
        100..=199 => Framing::Interim,
        204 | 304 => Framing::Empty,
        _ if request_is_head => Framing::Empty,
        _ if h.transfer_encoding && h.last_coding == "chunked" => Framing::Chunked,
        _ if h.transfer_encoding || h.bad_content_length => Framing::UntilClose,
        _ => h
            .content_length
            .map_or(Framing::UntilClose, Framing::Length),
    };
    ResponseInfo {
        framing,
        close: h.close || (http10 && !h.keep_alive) || framing == Framing::UntilClose,
    }
}

#[derive(Debug)]
struct Malformed;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex chunk size.
    #[default]
    Size,
    /// After the size: extensions up to the end of the line.
    Extension,
    /// Expecting the LF ending the size line.
    SizeLf,
    /// Inside chunk data (`size` bytes left).
    Data,
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    Trailer,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

/// Finds the end of a chunked body, fed piece by piece.
#[derive(Debug, Default)]
struct ChunkedTracker {
    state: ChunkState,
    size: u64,
    digits: u32,
}

impl ChunkedTracker {
    /// Consumes `data`, the next bytes of the body. `Ok(Some(n))`: the body
    /// ends after `data[..n]`; `Ok(None)`: it goes on past `data`.
    fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, Malformed> {
        use ChunkState::*;
        let mut i = 0;
        while i < data.len() {
            if self.state == Done {
                return Ok(Some(i));
            }
            if self.state == Data {
                let take = usize::try_from(self.size)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - i);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let byte = data[i];
            i += 1;
            self.state = match (self.state, byte) {
                (Size, b) if b.is_ascii_hexdigit() => {
                    if self.digits >= 15 {
                        return Err(Malformed);
                    }
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(digit);
                    self.digits += 1;
                    Size
                }
                (Size, b';' | b' ' | b'\t') if self.digits > 0 => Extension,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Size, b'\n') if self.digits > 0 => self.end_of_size_line(),
                (Extension, b'\r') => SizeLf,
                (Extension, b'\n') | (SizeLf, b'\n') => self.end_of_size_line(),
                (Extension, _) => Extension,
                (DataCr, b'\r') => DataLf,
                (DataCr, b'\n') | (DataLf, b'\n') => {
                    self.size = 0;
                    self.digits = 0;
                    Size
                }
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart, b'\n') | (EndLf, b'\n') => {
                    self.state = Done;
                    return Ok(Some(i));
                }
                (TrailerStart, _) => Trailer,
                (Trailer, b'\n') => TrailerStart,
                (Trailer, _) => Trailer,
                _ => return Err(Malformed),
            };
        }
        Ok((self.state == Done).then_some(i))
    }

    fn end_of_size_line(&self) -> ChunkState {
        if self.size == 0 {
            ChunkState::TrailerStart
        } else {
            ChunkState::Data
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};

    const SMALL: usize = 100;
    const LARGE: usize = 200 * 1024;

    /// The upstream: POST /count counts and echoes the body length, GET /ok
    /// and GET /big answer small and large bodies.
    async fn start_app() -> (SocketAddr, Arc<AtomicU64>) {
        async fn count(State(counter): State<Arc<AtomicU64>>, body: Bytes) -> Json<Value> {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Json(json!({ "len": body.len(), "n": n }))
        }
        let counter = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/count", post(count))
            .route("/ok", get(|| async { "ok" }))
            .route("/big", get(|| async { "b".repeat(LARGE) }))
            .with_state(Arc::clone(&counter));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (addr, counter)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    fn fresh_client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    }

    /// POST /count with a body of `len` bytes; the length the server saw.
    async fn post_count(
        client: &reqwest::Client,
        base: &str,
        len: usize,
    ) -> Result<u64, reqwest::Error> {
        let response = client
            .post(format!("{base}/count"))
            .body(vec![b'a'; len])
            .send()
            .await?
            .error_for_status()?;
        let value: Value = response.json().await?;
        Ok(value["len"].as_u64().unwrap())
    }

    async fn get_text(client: &reqwest::Client, url: String) -> Result<String, reqwest::Error> {
        client
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    fn assert_cut(result: Result<impl std::fmt::Debug, reqwest::Error>) {
        match result {
            Ok(v) => panic!("expected a cut, got {v:?}"),
            Err(e) => assert!(!e.is_timeout(), "a cut must not look like a timeout: {e:?}"),
        }
    }

    #[tokio::test]
    async fn cut_requests_never_reach_the_handler() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(1.0, 0.0, 1))
            .await
            .unwrap();
        let base = proxy.base_url();
        let http = client();
        for i in 0..20 {
            let len = [SMALL, LARGE, 1, 0, 2][i % 5];
            assert_cut(post_count(&http, &base, len).await);
        }
        assert_cut(get_text(&http, format!("{base}/ok")).await);
        assert_cut(get_text(&http, format!("{base}/big")).await);
        // Every cut request was closed before its end reached the server,
        // which therefore never ran a handler.
        assert_eq!(counter.load(Ordering::SeqCst), 0);
        let stats = proxy.stats();
        assert_eq!(stats.cut_requests, 22, "{stats:?}");
        assert_eq!((stats.passed, stats.cut_responses), (0, 0), "{stats:?}");
        assert_eq!(stats.connections, 22, "{stats:?}");
    }

    /// What the server receives of a cut request: never all of it; the whole
    /// head and part of the body when there are 2 body bytes or more.
    #[tokio::test]
    async fn cut_requests_are_strict_prefixes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        // Each connection's bytes, sent when the proxy has closed it.
        let (sink, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    let _ = s.read_to_end(&mut all).await;
                    let _ = sink.send(all);
                });
            }
        });
        let lens = [0, 1, 2, 3, SMALL, LARGE];
        let mut sent = 0;
        for seed in 0..8 {
            let proxy = CuttingProxy::start(upstream, FaultPlan::new(1.0, 0.0, seed))
                .await
                .unwrap();
            let http = client();
            for len in lens {
                assert_cut(post_count(&http, &proxy.base_url(), len).await);
                sent += 1;
            }
        }
        let mut received = Vec::with_capacity(sent);
        while received.len() < sent {
            let got = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .expect("upstream saw too little")
                .expect("the upstream listener is alive");
            received.push(got);
        }
        let (mut head_cuts, mut body_cuts) = (0, 0);
        for got in received.iter() {
            let Some(head_len) = find_head_end(got, 0) else {
                // Cut inside the head: only for requests without a body.
                let line = b"POST /count HTTP/1.1\r\n";
                assert!(got.starts_with(line) || line.starts_with(got));
                head_cuts += 1;
                continue;
            };
            let request = parse_request_head(&got[..head_len]).unwrap();
            let full = head_len + request.content_length as usize;
            assert!(got.len() < full, "{} of {full}", got.len());
            match request.content_length {
                0 => panic!("a bodiless request must be cut inside its head"),
                1 => assert_eq!(got.len(), head_len),
                _ => {
                    assert!(got.len() > head_len);
                    body_cuts += 1;
                }
            }
        }
        assert_eq!((head_cuts, body_cuts), (8, 8 * 4));
    }

    #[tokio::test]
    async fn cut_responses_land_exactly_once() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.0, 1.0, 2))
            .await
            .unwrap();
        let base = proxy.base_url();
        let http = client();
        for i in 0..20u64 {
            let len = if i % 2 == 0 { SMALL } else { LARGE };
            assert_cut(post_count(&http, &base, len).await);
            assert_eq!(counter.load(Ordering::SeqCst), i + 1);
        }
        assert_cut(get_text(&http, format!("{base}/ok")).await);
        assert_cut(get_text(&http, format!("{base}/big")).await);
        let stats = proxy.stats();
        assert_eq!(stats.cut_responses, 22, "{stats:?}");
        assert_eq!((stats.passed, stats.cut_requests), (0, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn no_faults_pass_everything_over_one_connection() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::none())
            .await
            .unwrap();
        let base = proxy.base_url();
        let http = client();
        for i in 0..40 {
            let len = if i % 2 == 0 { SMALL } else { LARGE };
            assert_eq!(post_count(&http, &base, len).await.unwrap(), len as u64);
        }
        assert_eq!(get_text(&http, format!("{base}/ok")).await.unwrap(), "ok");
        assert_eq!(
            get_text(&http, format!("{base}/big")).await.unwrap().len(),
            LARGE
        );
        let head = http.head(format!("{base}/big")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.bytes().await.unwrap().len(), 0);
        assert_eq!(get_text(&http, format!("{base}/ok")).await.unwrap(), "ok");
        assert_eq!(counter.load(Ordering::SeqCst), 40);
        let stats = proxy.stats();
        assert_eq!(stats.passed, 44, "{stats:?}");
        assert_eq!((stats.cut_requests, stats.cut_responses), (0, 0));
        // Kept alive: sequential requests share connections (a new one can
        // still race a connection on its way back to the pool).
        assert!(stats.connections < 10, "{stats:?}");
    }

    /// Sends `n` POSTs alternating small and large bodies; (successes, failures).
    async fn mixed_run(proxy: &CuttingProxy, fresh: bool, n: usize) -> (u64, u64) {
        let base = proxy.base_url();
        let keep_alive = client();
        let (mut ok, mut failed) = (0, 0);
        for i in 0..n {
            let len = if i % 2 == 0 { SMALL } else { LARGE };
            let http = if fresh {
                fresh_client()
            } else {
                keep_alive.clone()
            };
            match post_count(&http, &base, len).await {
                Ok(seen) => {
                    assert_eq!(seen, len as u64);
                    ok += 1;
                }
                Err(e) => {
                    assert!(!e.is_timeout(), "{e:?}");
                    failed += 1;
                }
            }
        }
        (ok, failed)
    }

    fn check_books(stats: ProxyStats, counter: u64, ok: u64, failed: u64, n: u64) {
        assert_eq!(
            stats.passed + stats.cut_requests + stats.cut_responses,
            n,
            "{stats:?}"
        );
        assert_eq!(ok, stats.passed, "{stats:?}");
        assert_eq!(
            failed,
            stats.cut_requests + stats.cut_responses,
            "{stats:?}"
        );
        assert_eq!(counter, stats.passed + stats.cut_responses, "{stats:?}");
        assert!(
            stats.cut_requests > 20 && stats.cut_responses > 20,
            "{stats:?}"
        );
        assert!(stats.passed > 40, "{stats:?}");
    }

    #[tokio::test]
    async fn mixed_faults_keep_alive_add_up() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.3, 0.3, 42))
            .await
            .unwrap();
        let (ok, failed) = mixed_run(&proxy, false, 200).await;
        let stats = proxy.stats();
        check_books(stats, counter.load(Ordering::SeqCst), ok, failed, 200);
        // Every cut closes the connection; passes reuse it.
        assert!(stats.connections < 200, "{stats:?}");
        assert!(stats.connections > stats.cut_requests, "{stats:?}");
    }

    #[tokio::test]
    async fn mixed_faults_fresh_connections_add_up_and_repeat() {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let (upstream, counter) = start_app().await;
            let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.3, 0.3, 7))
                .await
                .unwrap();
            let (ok, failed) = mixed_run(&proxy, true, 200).await;
            let stats = proxy.stats();
            check_books(stats, counter.load(Ordering::SeqCst), ok, failed, 200);
            assert_eq!(stats.connections, 200, "{stats:?}");
            runs.push(stats);
        }
        assert_eq!(runs[0], runs[1], "same seed, same fates");
    }

    #[tokio::test]
    async fn concurrent_clients_add_up() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.3, 0.3, 9))
            .await
            .unwrap();
        let base = proxy.base_url();
        let mut tasks = JoinSet::new();
        for t in 0..4 {
            let base = base.clone();
            tasks.spawn(async move {
                let http = client();
                let (mut ok, mut failed) = (0u64, 0u64);
                for i in 0..50 {
                    let len = if (i + t) % 2 == 0 { SMALL } else { LARGE };
                    match post_count(&http, &base, len).await {
                        Ok(seen) => {
                            assert_eq!(seen, len as u64);
                            ok += 1;
                        }
                        Err(e) => {
                            assert!(!e.is_timeout(), "{e:?}");
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            });
        }
        let (mut ok, mut failed) = (0, 0);
        while let Some(result) = tasks.join_next().await {
            let (o, f) = result.unwrap();
            ok += o;
            failed += f;
        }
        check_books(
            proxy.stats(),
            counter.load(Ordering::SeqCst),
            ok,
            failed,
            200,
        );
    }

    #[tokio::test]
    async fn set_plan_lets_the_final_sync_through() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(1.0, 0.0, 3))
            .await
            .unwrap();
        let base = proxy.base_url();
        let http = client();
        assert_cut(post_count(&http, &base, SMALL).await);
        proxy.set_plan(FaultPlan::none());
        assert_eq!(proxy.plan(), FaultPlan::none());
        assert_eq!(post_count(&http, &base, SMALL).await.unwrap(), SMALL as u64);
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        proxy.set_plan(FaultPlan::new(0.0, 1.0, 3));
        assert_cut(post_count(&http, &base, LARGE).await);
        assert_eq!(counter.load(Ordering::SeqCst), 2);
        let stats = proxy.stats();
        assert_eq!(
            (stats.passed, stats.cut_requests, stats.cut_responses),
            (1, 1, 1)
        );
    }

    /// A hand-written upstream for framings axum does not produce on demand:
    /// GET /chunked answers a chunked body (with `0\r\n\r\n` inside the data
    /// and a trailer), GET /close a body delimited by closing the connection.
    async fn start_raw_upstream() -> SocketAddr {
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\
content-type: text/plain\r\n\r\n5;ext=1\r\nhello\r\n7\r\n0\r\n\r\nxx\r\n\
1000\r\n";
        async fn serve(mut s: TcpStream) {
            let mut buf = Vec::new();
            loop {
                let head_len = loop {
                    if let Some(end) = find_head_end(&buf, 0) {
                        break end;
                    }
                    match read_some(&mut s, &mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                };
                let request = parse_request_head(&buf[..head_len]).unwrap();
                let total = head_len + request.content_length as usize;
                while buf.len() < total {
                    match read_some(&mut s, &mut buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return,
                    }
                }
                let target = String::from_utf8_lossy(&buf[..head_len])
                    .split(' ')
                    .nth(1)
                    .unwrap_or("")
                    .to_string();
                buf.drain(..total);
                if target == "/close" {
                    let body = "c".repeat(LARGE);
                    let response = format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{body}");
                    let _ = s.write_all(response.as_bytes()).await;
                    return;
                }
                let mut response = CHUNKED.to_vec();
                response.extend_from_slice(&[b'z'; 0x1000]);
                response.extend_from_slice(b"\r\n0\r\nx-trailer: 1\r\n\r\n");
                // Dribble it out to exercise reassembly.
                for piece in response.chunks(7) {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                }
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(s));
            }
        });
        addr
    }

    fn expected_chunked_body() -> String {
        format!("hello0\r\n\r\nxx{}", "z".repeat(0x1000))
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_responses_pass_whole() {
        let upstream = start_raw_upstream().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::none())
            .await
            .unwrap();
        let base = proxy.base_url();
        let http = client();
        for _ in 0..5 {
            let body = get_text(&http, format!("{base}/chunked")).await.unwrap();
            assert_eq!(body, expected_chunked_body());
        }
        assert!(proxy.stats().connections < 5, "{:?}", proxy.stats());
        for _ in 0..3 {
            let body = get_text(&http, format!("{base}/close")).await.unwrap();
            assert_eq!(body.len(), LARGE);
        }
        assert_eq!(proxy.stats().passed, 8);
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_responses_cut() {
        let upstream = start_raw_upstream().await;
        for seed in 0..10 {
            let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.0, 1.0, seed))
                .await
                .unwrap();
            let base = proxy.base_url();
            let http = client();
            assert_cut(get_text(&http, format!("{base}/chunked")).await);
            assert_cut(get_text(&http, format!("{base}/close")).await);
            assert_eq!(proxy.stats().cut_responses, 2);
        }
    }

    /// Chunked uploads are passed through untouched even when every request
    /// should be cut; pipelined requests are answered in turn.
    #[tokio::test]
    async fn raw_chunked_upload_and_pipelining() {
        let (upstream, counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(1.0, 0.0, 5))
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(
            b"POST /count HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\
connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""len":3"#), "{answer}");
        assert_eq!(counter.load(Ordering::SeqCst), 1);
        assert_eq!(proxy.stats().passed, 1);

        proxy.set_plan(FaultPlan::none());
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(
            b"POST /count HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab\
GET /ok HTTP/1.1\r\nhost: x\r\n\r\n\
POST /count HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\nc",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
        assert_eq!(counter.load(Ordering::SeqCst), 3);
        assert_eq!(proxy.stats().passed, 4);
    }

    #[tokio::test]
    async fn garbage_does_not_hurt_the_proxy() {
        let (upstream, _counter) = start_app().await;
        let proxy = CuttingProxy::start(upstream, FaultPlan::new(0.5, 0.5, 11))
            .await
            .unwrap();
        for junk in [
            &b"\r\n\r\n"[..],
            b"NOT HTTP AT ALL\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: 5, 6\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\n\r\n",
            b"\xff\xfe\x00\n\n",
            b"GET / HTTP/1.1\r\ncontent-length: 99999999999999999999999\r\n\r\n",
            // Framed, so dice are rolled, but the body never comes.
            b"POST /count HTTP/1.1\r\ncontent-length: 1000000\r\n\r\nabc",
            b"POST /count HTTP/1.1\r\ncontent-length: 1000000\r\n\r\n",
            b"GET /ok HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\nGET /",
        ] {
            let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
            s.write_all(junk).await.unwrap();
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        }
        // Still serving.
        proxy.set_plan(FaultPlan::none());
        let http = client();
        let ok = get_text(&http, format!("{}/ok", proxy.base_url())).await;
        assert_eq!(ok.unwrap(), "ok");
    }

    #[test]
    fn cut_points_stay_strictly_inside() {
        for place in [0.0, 0.1, 0.5, 0.999_999, 1.0, -3.0, f64::NAN] {
            let cut = request_cut_point(50, 100, place);
            assert!((51..=149).contains(&cut), "{place} {cut}");
            assert_eq!(request_cut_point(50, 1, place), 50);
            let cut = request_cut_point(50, 0, place);
            assert!((1..=49).contains(&cut), "{place} {cut}");
            let cut = request_cut_point(50, 2, place);
            assert_eq!(cut, 51);
            let cut = pick_cut(1000, place);
            assert!((1..=999).contains(&cut), "{place} {cut}");
            assert_eq!(pick_cut(1, place), 0);
            assert_eq!(pick_cut(0, place), 0);
        }
        assert_eq!(pick_in(1, 10, 0.0), 1);
        assert_eq!(pick_in(1, 10, 0.999_999), 10);
    }

    #[test]
    fn heads_are_found_and_parsed() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nbody", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nbody", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nhost: x\r\n", 0), None);
        let r = parse_request_head(b"POST /x HTTP/1.1\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(
            (r.content_length, r.close, r.passthrough),
            (12, false, false)
        );
        let r = parse_request_head(b"GET /x HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.close);
        let r = parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(r.unwrap().passthrough);
        let r = parse_request_head(b"HEAD / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap();
        assert!(r.is_head && r.close);
        assert!(parse_request_head(b"GET / SPDY/3\r\n\r\n").is_none());

        let resp = |h: &[u8]| parse_response_head(h, false);
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").framing,
            Framing::Length(5)
        );
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            resp(b"HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            resp(b"HTTP/1.1 100 Continue\r\n\r\n").framing,
            Framing::Interim
        );
        let r = resp(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((r.framing, r.close), (Framing::UntilClose, true));
        let r = parse_response_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(r.framing, Framing::Empty);
        assert!(resp(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\n").close);
    }

    #[test]
    fn chunked_tracker_finds_the_end_at_any_split() {
        let body = b"5;a=b\r\nhello\r\n7\r\n0\r\n\r\nxx\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        let mut whole = ChunkedTracker::default();
        assert_eq!(whole.feed(body).unwrap(), Some(end));
        for split in 0..=body.len() {
            let mut t = ChunkedTracker::default();
            let found = match t.feed(&body[..split]).unwrap() {
                Some(n) => n,
                None => split + t.feed(&body[split..]).unwrap().unwrap(),
            };
            assert_eq!(found, end, "split at {split}");
        }
        // Byte by byte.
        let mut t = ChunkedTracker::default();
        let mut found = None;
        for (i, b) in body.iter().enumerate() {
            if let Some(n) = t.feed(std::slice::from_ref(b)).unwrap() {
                found = Some(i + n);
                break;
            }
        }
        assert_eq!(found, Some(end));
        assert!(ChunkedTracker::default().feed(b"zz\r\n").is_err());
        assert!(ChunkedTracker::default().feed(b"3\r\nabcX").is_err());
        assert_eq!(
            ChunkedTracker::default().feed(b"3\r\nabc\r\n").unwrap(),
            None
        );
    }
}
