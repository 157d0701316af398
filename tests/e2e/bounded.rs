//! The bounded server (issue 15, item 4): slow and greedy clients cannot take `herald
//! serve` down. Half a header or a trickled body is cut off after `[server]
//! header_timeout` / `body_timeout`; connections beyond `max_connections` are refused
//! with `503`; streams beyond `max_streams` / `max_streams_per_key` with `429`; an
//! oversized WebSocket frame closes the socket with 1009; a `Last-Event-ID` resume is read
//! page by page as the client takes it; and SIGTERM ends the process within
//! `shutdown_grace` however slow the connected clients are. The clients are raw TCP (and
//! tungstenite) so that a test controls exactly what a client sends and reads.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::*;
use crate::stream::{Sse, TRANSIENT, Ws, addr_of, bearer, publish, tcp};

/// A reply read off a raw connection.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// As the harness's reply, to check the documented error shape.
    fn api(&self) -> ApiReply {
        ApiReply {
            status: self.status,
            content_type: self.header("content-type").unwrap_or("").to_string(),
            text: self.body.clone(),
        }
    }
}

/// Reads one `content-length` reply (the only kind these tests expect off a raw socket).
async fn read_reply(stream: &mut TcpStream) -> Result<RawReply, String> {
    let mut bytes = Vec::new();
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut buf = [0u8; 4096];
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading a reply: {e}"))?;
        if n == 0 {
            return Err(format!(
                "closed before a whole reply head; got {:?}",
                String::from_utf8_lossy(&bytes)
            ));
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| format!("a reply without content-length: {head:?}"))?;
    let mut body = bytes[head_end + 4..].to_vec();
    while body.len() < length {
        let mut buf = [0u8; 4096];
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading a reply body: {e}"))?;
        if n == 0 {
            return Err("closed in the middle of a reply body".into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok(RawReply {
        status,
        headers,
        body: String::from_utf8_lossy(&body[..length]).into_owned(),
    })
}

/// Waits (at most [`WAIT`]) for the server to close the connection; returns what it sent
/// before closing.
async fn closed_by_server(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut seen = Vec::new();
    let read_all = async {
        loop {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(WAIT, read_all).await {
        Ok(()) => Ok(seen),
        Err(_) => Err(format!("still open after {WAIT:?}")),
    }
}

fn get_healthz(addr: SocketAddr) -> String {
    format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n")
}

#[test]
fn half_a_header_an_idle_connection_and_a_silent_one_are_cut_off() {
    let h = Herald::start(
        "bounded-header",
        &Conf::new().server_line("header_timeout = \"1s\""),
    );
    let addr = addr_of(&h);
    block_on(async {
        let mut half = tcp(addr, false).await;
        half.write_all(format!("POST /v1/events HTTP/1.1\r\nhost: {addr}\r\ncontent-").as_bytes())
            .await
            .unwrap();
        let mut silent = tcp(addr, false).await;
        // A kept-alive connection after one request: idle, it waits for a next head.
        let mut idle = tcp(addr, false).await;
        idle.write_all(get_healthz(addr).as_bytes()).await.unwrap();
        let reply = read_reply(&mut idle).await.unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");

        for (what, stream) in [
            ("half a header", &mut half),
            ("a silent connection", &mut silent),
            ("an idle kept-alive connection", &mut idle),
        ] {
            let sent = closed_by_server(stream)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                sent.is_empty(),
                "{what}: closed with a reply {:?}",
                String::from_utf8_lossy(&sent)
            );
        }
    });
    // Cutting those off did not hurt anyone else.
    assert_eq!(h.get("/v1/deliveries", ACME_KEY).status, 200);
}

#[test]
fn a_trickled_body_is_cut_off_with_408_and_nothing_is_stored() {
    let h = Herald::start(
        "bounded-body",
        &Conf::new().server_line("body_timeout = \"1s\""),
    );
    let addr = addr_of(&h);
    let body = json!({"id": "evt_trickled", "event": "host.down"}).to_string();
    let reply = block_on(async {
        let stream = tcp(addr, false).await;
        let (mut rd, mut wr) = stream.into_split();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ACME_KEY}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        wr.write_all(head.as_bytes()).await.unwrap();
        // One byte every 100 ms, never the last one: the body never completes.
        let trickle = async {
            for b in &body.as_bytes()[..body.len() - 1] {
                if wr.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            std::future::pending::<()>().await
        };
        let read = async {
            let mut bytes = Vec::new();
            let _ = rd.read_to_end(&mut bytes).await;
            bytes
        };
        tokio::select! {
            bytes = read => bytes,
            () = trickle => unreachable!(),
            () = tokio::time::sleep(WAIT) => panic!("the trickled request was not cut off within {WAIT:?}"),
        }
    });
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, json_body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP reply: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let error = ApiReply {
        status: 408,
        content_type: "application/json".into(),
        text: json_body.to_string(),
    }
    .expect_error(408, "request_timeout");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("[server] body_timeout"), "{message}");
    // Nothing of the cut-off request was accepted.
    h.get("/v1/events/evt_trickled", ACME_KEY)
        .expect_error(404, "not_found");
    // A whole body sent at once is fine.
    h.post(&json!({"id": "evt_whole", "event": "host.down"}), ACME_KEY)
        .expect(202);
}

#[test]
fn connections_over_max_connections_are_refused_with_503() {
    let h = Herald::start(
        "bounded-conns",
        &Conf::new().server_line("max_connections = 4"),
    );
    let addr = addr_of(&h);
    let mut held = block_on(async {
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = tcp(addr, false).await;
            s.write_all(get_healthz(addr).as_bytes()).await.unwrap();
            let reply = read_reply(&mut s).await.unwrap();
            assert_eq!(reply.status, 200, "{reply:?}");
            held.push(s);
        }
        held
    });
    let refused = block_on(async {
        let mut s = tcp(addr, false).await;
        s.write_all(get_healthz(addr).as_bytes()).await.unwrap();
        let reply = read_reply(&mut s).await.unwrap();
        let rest = closed_by_server(&mut s).await;
        assert!(rest.is_ok(), "the refused connection stayed open");
        reply
    });
    let error = refused.api().expect_error(503, "too_many_connections");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("[server] max_connections = 4"),
        "{message}"
    );
    assert_eq!(refused.header("retry-after"), Some("1"), "{refused:?}");

    // A held connection closes: its slot is free again once the server has seen that.
    drop(held.pop());
    wait_until("a connection accepted again", WAIT, || {
        block_on(async {
            let mut s = tcp(addr, false).await;
            s.write_all(get_healthz(addr).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let reply = read_reply(&mut s).await?;
            (reply.status == 200)
                .then_some(())
                .ok_or(format!("{reply:?}"))
        })
    });
}

#[test]
fn streams_over_their_limits_are_refused_with_429_naming_the_limit() {
    let h = Herald::start(
        "bounded-streams",
        &Conf::new()
            .server_line("max_streams = 3")
            .server_line("max_streams_per_key = 2"),
    );
    let addr = addr_of(&h);
    let acme = [bearer(ACME_KEY)];
    let (first, _ws) = block_on(async {
        (
            Sse::open(addr, "/v1/stream", &acme, false).await.unwrap(),
            Ws::open(addr, "/v1/ws", &acme, false).await.unwrap(),
        )
    });
    // acme's key has two streams open: a third is refused, SSE or WebSocket alike.
    for (kind, refused) in [
        (
            "SSE",
            block_on(Sse::open(addr, "/v1/stream", &acme, false)).unwrap_err(),
        ),
        (
            "WebSocket",
            block_on(Ws::open(addr, "/v1/ws", &acme, false)).unwrap_err(),
        ),
    ] {
        let error = refused.expect_error(429, "too_many_streams");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("[server] max_streams_per_key = 2"),
            "{kind}: {message}"
        );
        assert_no_secret(kind, &refused.text);
    }
    // Another key may, up to the total.
    let _globex = block_on(Sse::open(addr, "/v1/stream", &[bearer(GLOBEX_KEY)], false)).unwrap();
    let refused =
        block_on(Sse::open(addr, "/v1/stream", &[bearer(ADMIN_TOKEN)], false)).unwrap_err();
    let error = refused.expect_error(429, "too_many_streams");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("[server] max_streams = 3"), "{message}");

    // A stream that ends gives its slot back (the server sees the close when it next
    // writes, hence the events).
    drop(first);
    let mut n = 0;
    wait_until("acme's key may open a stream again", WAIT, || {
        n += 1;
        publish(&h, ACME_KEY, &format!("evt_nudge_{n}"), TRANSIENT);
        match block_on(Sse::open(addr, "/v1/stream", &acme, false)) {
            Ok(_) => Ok(()),
            Err(reply) => Err(format!("HTTP {}: {}", reply.status, reply.text)),
        }
    });
}

#[test]
fn an_oversized_websocket_frame_closes_the_socket_with_1009() {
    let h = Herald::start("bounded-ws-frame", &Conf::new());
    let addr = addr_of(&h);
    let close = block_on(async {
        let mut request = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {ACME_KEY}")).unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::client_async(request, tcp(addr, false).await)
            .await
            .expect("the WebSocket handshake");
        // Twice the documented 64 KiB limit, in one frame.
        socket
            .send(Message::Binary(vec![7u8; 128 * 1024].into()))
            .await
            .expect("send the frame");
        let read = async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(frame))) => return Ok(frame),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("no close frame, an error: {e}")),
                    None => return Err("no close frame, the socket ended".to_string()),
                }
            }
        };
        tokio::time::timeout(WAIT, read)
            .await
            .unwrap_or_else(|_| Err(format!("still open {WAIT:?} after the frame")))
    });
    let frame = close
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
}

/// Events of ~1.5 KB, so that the gap below is far larger than every buffer between
/// herald and the client (hyper's, the socket's) together.
fn filler() -> Value {
    json!({"filler": "x".repeat(1500)})
}

/// `herald_stream_replay_pages_total` from `/metrics` (0 before the first replay).
fn replay_pages(h: &Herald) -> u64 {
    let text = h.get("/metrics", ADMIN_TOKEN).text;
    text.lines()
        .find_map(|l| l.strip_prefix("herald_stream_replay_pages_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn a_resume_over_a_long_gap_is_read_page_by_page_in_order_exactly_once() {
    let h = Herald::start("bounded-replay", &Conf::new());
    let addr = addr_of(&h);
    publish(&h, ACME_KEY, "evt_gap_start", "host.down");
    // 10,500 events missed: 21 pages of 500, and more than the 10,000 the stream once
    // held in memory at most.
    let total = 10_500;
    let metadata = filler();
    for batch in 0..total / 500 {
        let events: Vec<Value> = (0..500)
            .map(|i| {
                json!({"id": format!("evt_gap_{:05}", batch * 500 + i), "event": "host.down",
                       "metadata": metadata})
            })
            .collect();
        h.post(&Value::Array(events), ACME_KEY).expect(202);
    }
    let pages_before = replay_pages(&h);

    let mut resumed = block_on(Sse::open(
        addr,
        "/v1/stream",
        &[bearer(ACME_KEY), ("last-event-id", "evt_gap_start".into())],
        true,
    ))
    .unwrap();
    let first = block_on(resumed.next()).unwrap();
    assert_eq!(first.event_id(), Some("evt_gap_00000"), "{first:?}");
    // The client has taken one event: herald has read only as many pages as the buffers
    // between it and the client hold (a few MiB at most), not the whole gap (21 pages).
    let read_so_far = replay_pages(&h) - pages_before;
    eprintln!("pages read when the client had taken one event: {read_so_far}");
    assert!(
        read_so_far <= 8,
        "{read_so_far} pages read for a client that has taken one event"
    );

    let mut ids = vec![first.event_id().unwrap().to_string()];
    block_on(async {
        while ids.len() < total {
            let live = tokio::time::timeout(WAIT, resumed.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "the replay stalled after {} events (last {:?})",
                        ids.len(),
                        ids.last()
                    )
                })
                .unwrap_or_else(|e| panic!("after {} events: {e}", ids.len()));
            match live.event_id() {
                Some(id) => ids.push(id.to_string()),
                None => panic!("unexpected message during the replay: {live:?}"),
            }
        }
    });
    let expected: Vec<String> = (0..total).map(|i| format!("evt_gap_{i:05}")).collect();
    assert!(
        ids == expected,
        "the replay is not every event once, in order"
    );
    assert!(
        replay_pages(&h) - pages_before >= (total / 500) as u64,
        "the replay was not read in pages"
    );
    // Then live, with nothing replayed twice.
    publish(&h, ACME_KEY, "evt_after_gap", "host.down");
    let next = block_on(async { tokio::time::timeout(WAIT, resumed.next()).await })
        .expect("the live event")
        .unwrap();
    assert_eq!(next.event_id(), Some("evt_after_gap"), "{next:?}");
}

#[test]
fn sigterm_ends_the_process_within_the_grace_period_despite_slow_clients() {
    let mut h = Herald::start(
        "bounded-shutdown",
        &Conf::new()
            .server_line("shutdown_grace = \"1s\"")
            // The longest read timeouts: only the grace period may end these clients.
            .server_line("header_timeout = \"5m\"")
            .server_line("body_timeout = \"1h\""),
    );
    let addr = addr_of(&h);
    let clients = block_on(async {
        // An SSE client that never reads, and a WebSocket one.
        let sse = Sse::open(addr, "/v1/stream", &[bearer(ACME_KEY)], true)
            .await
            .unwrap();
        let ws = Ws::open(addr, "/v1/ws", &[bearer(ACME_KEY)], true)
            .await
            .unwrap();
        // Half a request head.
        let mut half = tcp(addr, true).await;
        half.write_all(b"GET /healthz HTTP/1.1\r\nhost: her")
            .await
            .unwrap();
        // A body that never completes.
        let mut body = tcp(addr, true).await;
        body.write_all(
            format!(
                "POST /v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ACME_KEY}\r\n\
                 content-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"id\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        (sse, ws, half, body)
    });
    // Enough for the streams to fill every buffer between herald and the clients.
    let metadata = json!({"filler": "x".repeat(2000)});
    for batch in 0..40 {
        let events: Vec<Value> = (0..200)
            .map(|i| json!({"id": format!("evt_fill_{batch}_{i}"), "event": TRANSIENT, "metadata": metadata}))
            .collect();
        h.post(&Value::Array(events), ACME_KEY).expect(202);
    }
    // One second of grace, and a margin for the machine being busy.
    let status = h
        .terminate_within(Duration::from_secs(11))
        .unwrap_or_else(|()| {
            panic!(
                "herald was still running 11s after SIGTERM with a 1s grace period; log:\n{}",
                h.logs()
            )
        });
    assert!(status.success(), "exit status {status}");
    drop(clients);
}
