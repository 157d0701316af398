//! One SSE client of the benchmark: a raw HTTP/1.1 request, the chunked body decoded as it
//! arrives, and for each event the publish→receive latency from its `sent_ns` metadata.
//! Raw and allocation-light, so that the clients take as little of the machine as they can
//! from the server they measure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use memchr::memmem;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What one client saw.
#[derive(Debug)]
pub struct Report {
    pub events: u64,
    pub lagged: u64,
    pub missed: u64,
    /// Publish→receive, microseconds.
    pub latency_us: Histogram<u64>,
    pub error: Option<String>,
}

/// Totals over every client, updated as messages arrive (to tell when all have caught up).
#[derive(Debug, Default)]
pub struct Progress {
    pub events: AtomicU64,
    pub missed: AtomicU64,
}

/// A connection whose response head said 200; the body follows.
#[derive(Debug)]
pub struct Connected {
    stream: TcpStream,
    /// Body bytes read together with the head.
    raw: Vec<u8>,
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub async fn connect(addr: SocketAddr, key: &str) -> anyhow::Result<Connected> {
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    let request = format!(
        "GET /v1/stream HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\
         authorization: Bearer {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::with_capacity(4096);
    let end = loop {
        if let Some(end) = memmem::find(&raw, b"\r\n\r\n") {
            break end;
        }
        if stream.read_buf(&mut raw).await? == 0 {
            bail!("closed before the response head");
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        bail!("refused: {head}");
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("not a chunked stream: {head}");
    }
    raw.drain(..end + 4);
    Ok(Connected { stream, raw })
}

/// Reads until `stop` turns true or the stream fails.
pub async fn run(
    connected: Connected,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Report {
    let Connected { mut stream, raw } = connected;
    let mut client = Client {
        raw,
        chunk_left: 0,
        crlf_left: 0,
        text: Vec::with_capacity(16 * 1024),
        report: Report {
            events: 0,
            lagged: 0,
            missed: 0,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 2).expect("histogram bounds"),
            error: None,
        },
        sent: memmem::Finder::new(b"\"sent_ns\":\""),
        missed_field: memmem::Finder::new(b"\"missed\":"),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut result = client.consume(&progress, now_ns());
    while result.is_ok() {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            read = stream.read(&mut buf) => {
                result = match read {
                    Ok(0) => Err("the server closed the stream".to_string()),
                    Ok(n) => {
                        client.raw.extend_from_slice(&buf[..n]);
                        client.consume(&progress, now_ns())
                    }
                    Err(e) => Err(e.to_string()),
                };
            }
        }
    }
    client.report.error = result.err();
    client.report
}

struct Client {
    /// Received bytes not yet de-chunked.
    raw: Vec<u8>,
    /// Data bytes, then CRLF bytes, left in the current chunk.
    chunk_left: usize,
    crlf_left: usize,
    /// De-chunked body not yet split into messages.
    text: Vec<u8>,
    report: Report,
    sent: memmem::Finder<'static>,
    missed_field: memmem::Finder<'static>,
}

impl Client {
    /// De-chunks what arrived and accounts for every complete message; `now` is when it
    /// arrived (one clock read per socket read).
    fn consume(&mut self, progress: &Progress, now: u128) -> Result<(), String> {
        let mut pos = 0;
        while pos < self.raw.len() {
            if self.chunk_left > 0 {
                let n = self.chunk_left.min(self.raw.len() - pos);
                self.text.extend_from_slice(&self.raw[pos..pos + n]);
                self.chunk_left -= n;
                pos += n;
            } else if self.crlf_left > 0 {
                let n = self.crlf_left.min(self.raw.len() - pos);
                self.crlf_left -= n;
                pos += n;
            } else {
                let Some(eol) = memmem::find(&self.raw[pos..], b"\r\n") else {
                    break;
                };
                let line = std::str::from_utf8(&self.raw[pos..pos + eol]).unwrap_or("");
                let size = usize::from_str_radix(line.split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                if size == 0 {
                    return Err("the server ended the stream".into());
                }
                pos += eol + 2;
                self.chunk_left = size;
                self.crlf_left = 2;
            }
        }
        self.raw.drain(..pos);

        let mut start = 0;
        let (mut events, mut missed) = (0, 0);
        while let Some(end) = memmem::find(&self.text[start..], b"\n\n") {
            let block = &self.text[start..start + end];
            start += end + 2;
            if block.starts_with(b"event: event\n") {
                events += 1;
                if let Some(sent) = self.sent_ns(block) {
                    let micros = now.saturating_sub(sent) / 1000;
                    self.report.latency_us.saturating_record(micros as u64);
                }
            } else if block.starts_with(b"event: lagged\n") {
                self.report.lagged += 1;
                let n = self
                    .missed_field
                    .find(block)
                    .map(|i| digits(&block[i + b"\"missed\":".len()..]))
                    .unwrap_or(0);
                missed += n as u64;
            }
        }
        self.text.drain(..start);
        self.report.events += events;
        self.report.missed += missed;
        if events > 0 {
            progress.events.fetch_add(events, Ordering::Relaxed);
        }
        if missed > 0 {
            progress.missed.fetch_add(missed, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sent_ns(&self, block: &[u8]) -> Option<u128> {
        let at = self.sent.find(block)? + b"\"sent_ns\":\"".len();
        Some(digits(&block[at..]))
    }
}

/// The decimal number at the start of `bytes`.
fn digits(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0, |n, b| n * 10 + u128::from(b - b'0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(raw: &[u8]) -> Client {
        Client {
            raw: raw.to_vec(),
            chunk_left: 0,
            crlf_left: 0,
            text: Vec::new(),
            report: Report {
                events: 0,
                lagged: 0,
                missed: 0,
                latency_us: Histogram::new_with_bounds(1, 120_000_000, 2).unwrap(),
                error: None,
            },
            sent: memmem::Finder::new(b"\"sent_ns\":\""),
            missed_field: memmem::Finder::new(b"\"missed\":"),
        }
    }

    fn chunk(s: &str) -> String {
        format!("{:x}\r\n{s}\r\n", s.len())
    }

    #[test]
    fn messages_split_across_reads_and_chunks_are_counted_once() {
        let event =
            "event: event\ndata: {\"event\":{\"metadata\":{\"sent_ns\":\"1000000\"}}}\nid: e1\n\n";
        let lagged = "event: lagged\ndata: {\"kind\":\"lagged\",\"missed\":7}\n\n";
        let body = format!(
            "{}{}{}{}",
            chunk(event),
            chunk(":heartbeat\n\n"),
            chunk(&lagged[..10]),
            chunk(&lagged[10..])
        );
        let progress = Progress::default();
        let mut c = client(b"");
        for piece in body.as_bytes().chunks(7) {
            c.raw.extend_from_slice(piece);
            c.consume(&progress, 3_000_000).unwrap();
        }
        assert_eq!(
            (c.report.events, c.report.lagged, c.report.missed),
            (1, 1, 7)
        );
        assert!(
            c.report
                .latency_us
                .equivalent(c.report.latency_us.max(), 2000)
        );
        assert_eq!(progress.events.load(Ordering::Relaxed), 1);
        assert!(c.raw.is_empty() && c.text.is_empty());

        let mut end = client(b"0\r\n\r\n");
        assert!(end.consume(&progress, 0).is_err());
    }
}
