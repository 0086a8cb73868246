//! An HTTP/1.1 load generator over keep-alive loopback connections: open
//! loop at a fixed rate (latency counted from when each request was *due*,
//! so a slow server cannot hide its queue: no coordinated omission) and
//! closed loop as fast as the router answers (saturation).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, mpsc};

/// One keep-alive connection.
pub struct Conn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    line: String,
    body: Vec<u8>,
    /// The request being sent: head and body go out in one write (one
    /// segment, one wake-up of the server), as real clients send them.
    out: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            r: BufReader::new(r),
            w,
            line: String::new(),
            body: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Sends `method path` with `body`; the status and the response body.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<(u16, &[u8])> {
        use std::io::Write as _;
        self.out.clear();
        write!(
            self.out,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        self.out.extend_from_slice(body);
        self.w.write_all(&self.out).await?;
        self.line.clear();
        self.r.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {:?}", self.line))?;
        let mut len = 0usize;
        loop {
            self.line.clear();
            if self.r.read_line(&mut self.line).await? == 0 {
                bail!("connection closed in headers");
            }
            let l = self.line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse()?;
            }
        }
        self.body.resize(len, 0);
        self.r.read_exact(&mut self.body).await?;
        Ok((status, &self.body))
    }

    pub async fn post(&mut self, body: &[u8]) -> Result<(u16, &[u8])> {
        self.request("POST", "/v1/events", body).await
    }

    /// Posts `body`, which must be accepted, as a request due at `due`.
    async fn post_sample(&mut self, body: &[u8], due: Instant) -> Result<Sample> {
        let (status, answer) = self.post(body).await?;
        anyhow::ensure!(
            status == 202,
            "status {status}: {}",
            String::from_utf8_lossy(answer)
        );
        let max_offset = max_offset(answer).context("answer without offset")?;
        Ok(Sample {
            due,
            acked: Instant::now(),
            max_offset,
        })
    }
}

/// The largest `"offset":N` in an ingest answer.
pub fn max_offset(answer: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(answer).ok()?;
    text.match_indices("\"offset\":")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .max()
}

/// One request of a run.
#[derive(Clone, Copy)]
pub struct Sample {
    /// When it was due (open loop) or sent (closed loop).
    pub due: Instant,
    pub acked: Instant,
    pub max_offset: u64,
}

/// Request bodies: single events, or JSON arrays of `batch` events.
pub fn bodies(events: &[String], batch: usize) -> Vec<Vec<u8>> {
    if batch <= 1 {
        return events.iter().map(|e| e.as_bytes().to_vec()).collect();
    }
    events
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|c| format!("[{}]", c.join(",")).into_bytes())
        .collect()
}

/// Runs the load generator `f` makes on a thread and runtime of its own, as
/// a separate client process would: its tasks then never queue behind the
/// router's on the router's workers, nor the router's behind them. Returns
/// its result and the CPU time the generator's thread used.
pub async fn apart<F, Fut, T>(f: F) -> Result<(T, Duration)>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("load-generator".into())
        .spawn(move || {
            let cpu = crate::util::thread_cpu_time();
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(f()));
            let _ = tx.send(out.map(|t| (t, crate::util::thread_cpu_time() - cpu)));
        })?;
    rx.await
        .context("load generator thread ended without an answer")?
}

/// Sends `bodies` (cycling) at `per_second` requests for `duration` over
/// `conns` connections; every request must be answered 202.
pub async fn open_loop(
    addr: SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    per_second: f64,
    duration: Duration,
    conns: usize,
) -> Result<Vec<Sample>> {
    let total = (per_second * duration.as_secs_f64()) as usize;
    let (tx, rx) = mpsc::channel::<(usize, Instant)>(total.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (rx, bodies) = (rx.clone(), bodies.clone());
        let mut conn = Conn::open(addr).await?;
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = rx.lock().await.recv().await;
                let Some((i, due)) = next else { break };
                out.push(conn.post_sample(&bodies[i % bodies.len()], due).await?);
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    // The schedule runs on its own thread: tokio's timer fires on whole
    // milliseconds, which at 10k requests/s would release them in bursts of
    // ten and count up to 1 ms of the generator's own lateness as latency.
    let start = Instant::now() + Duration::from_millis(5);
    let period = Duration::from_secs_f64(1.0 / per_second);
    let schedule = std::thread::spawn(move || {
        for i in 0..total {
            let due = start + period * i as u32;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.blocking_send((i, due)).is_err() {
                return false;
            }
        }
        true
    });
    let mut all = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    let sent_all = schedule
        .join()
        .map_err(|_| anyhow::anyhow!("schedule thread panicked"))?;
    anyhow::ensure!(sent_all, "connections ended early");
    Ok(all)
}

/// As fast as the router answers, `conns` requests in flight, for `duration`.
pub async fn closed_loop(
    addr: SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    duration: Duration,
    conns: usize,
) -> Result<Vec<Sample>> {
    let end = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..conns {
        let bodies = bodies.clone();
        let mut conn = Conn::open(addr).await?;
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut i = c;
            while Instant::now() < end {
                let due = Instant::now();
                out.push(conn.post_sample(&bodies[i % bodies.len()], due).await?);
                i += conns;
            }
            Ok::<_, anyhow::Error>(out)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}
