//! Slow and greedy clients, for the bounded-server figures: connections that send a
//! request head one byte a second and never finish it (reconnecting whenever herald cuts
//! them off, as a sustained attack would), and SSE clients with a small receive window
//! that never read their stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the slow clients went through.
#[derive(Debug, Default)]
pub struct SlowStats {
    /// Connections made by the half-header clients (first ones and reconnections).
    pub connects: AtomicU64,
    /// Times herald closed a half-header connection.
    pub cut_off: AtomicU64,
    /// Slow SSE readers whose stream herald accepted (200).
    pub readers_open: AtomicU64,
    /// Slow SSE readers refused or failed.
    pub readers_refused: AtomicU64,
}

/// One half-header client until `stop`: a byte a second of a head that never ends.
pub async fn half_header(addr: SocketAddr, stats: Arc<SlowStats>, mut stop: watch::Receiver<bool>) {
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\nx-slow: "
    );
    while !*stop.borrow() {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let mut bytes = head.bytes().chain(std::iter::repeat(b'a'));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        let mut sink = [0u8; 512];
        let cut_off = loop {
            tokio::select! {
                _ = stop.changed() => break false,
                read = stream.read(&mut sink) => match read {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                },
                _ = ticks.tick() => {
                    let b = bytes.next().unwrap_or(b'a');
                    if stream.write_all(&[b]).await.is_err() {
                        break true;
                    }
                }
            }
        };
        if cut_off {
            stats.cut_off.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One SSE client that opens its stream with a 4 KiB receive window and never reads it.
pub async fn never_reads(
    addr: SocketAddr,
    key: &str,
    stats: Arc<SlowStats>,
    mut stop: watch::Receiver<bool>,
) {
    let opened = async {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(4096)?;
        let mut stream = socket.connect(addr).await?;
        let request = format!(
            "GET /v1/stream HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\
             authorization: Bearer {key}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>((stream, head))
    };
    match opened.await {
        Ok((stream, head)) if head.ends_with(b"200") => {
            stats.readers_open.fetch_add(1, Ordering::Relaxed);
            let _ = stop.wait_for(|s| *s).await;
            drop(stream);
        }
        _ => {
            stats.readers_refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}
