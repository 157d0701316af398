//! A real SMTP server for tests (aiosmtpd), started per test on 127.0.0.1.
//!
//! [`SmtpServer::start`] runs `tests/support/smtp_server.py` (aiosmtpd from PyPI, installed
//! by `scripts/setup`) on an ephemeral port with its own mail directory, and kills it when
//! dropped. Every message the server accepts is read back with [`SmtpServer::messages`],
//! parsed as MIME by `mail-parser`, so tests assert what a mail client would see.
//!
//! With [`SmtpOptions::starttls`] the server requires STARTTLS, with
//! [`SmtpOptions::implicit_tls`] it speaks TLS from the first byte (SMTPS); either way with a
//! self-signed certificate for `127.0.0.1` and `localhost`, generated per server with
//! `rcgen`, which clients trust through [`SmtpServer::ca_pem`] / [`SmtpServer::ca_path`]
//! (and which [`SmtpServer::url`] names).
//!
//! A missing aiosmtpd is a failure, never a skip: the tests it serves must run in CI.
//!
//! The API is blocking (std threads and processes) so that both `#[tokio::test]`s and the
//! plain-thread end-to-end tests can use it; [`SmtpServer::wait_for`] sleeps the calling
//! thread, so call it only once the sends it waits for are running elsewhere or are done.
//!
//! Why this file is long (~670 lines): it is one fixture — starting the server, the TLS
//! certificate, and parsing what it received back into [`ParsedMessage`] — plus its own
//! tests; the parts only make sense together and no other module uses them.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders as _, PartType};

/// What the fixture says when aiosmtpd cannot be imported.
pub const NOT_INSTALLED: &str =
    "aiosmtpd is not installed: run scripts/setup (pip install aiosmtpd)";

/// How long the server may take to print its port.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which SMTP command `fail_first` answers with `451 4.3.0 try again later`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailOn {
    /// The end of DATA (the message was transferred, then refused).
    #[default]
    Data,
    /// Each RCPT TO.
    Rcpt,
}

/// How the server behaves. `SmtpOptions::default()` accepts every message in the clear.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Offer STARTTLS with a fresh self-signed certificate, and require it before MAIL.
    pub starttls: bool,
    /// Implicit TLS (SMTPS) with a fresh self-signed certificate. Excludes `starttls`.
    pub implicit_tls: bool,
    /// Answer `451 4.3.0 try again later` to the first N commands of kind `fail_on`.
    pub fail_first: u32,
    pub fail_on: FailOn,
    /// Answer `550 5.1.1 … User unknown` to recipients matching this shell-style,
    /// case-insensitive pattern (`*@rejected.example`).
    pub reject_rcpt: Option<String>,
    /// Require AUTH PLAIN/LOGIN with this user and password.
    pub auth: Option<(String, String)>,
    /// Accept messages but store nothing (benchmarks).
    pub discard: bool,
}

impl SmtpOptions {
    pub fn starttls(mut self) -> Self {
        self.starttls = true;
        self
    }

    pub fn implicit_tls(mut self) -> Self {
        self.implicit_tls = true;
        self
    }

    pub fn fail_first(mut self, n: u32, on: FailOn) -> Self {
        self.fail_first = n;
        self.fail_on = on;
        self
    }

    pub fn reject_rcpt(mut self, pattern: impl Into<String>) -> Self {
        self.reject_rcpt = Some(pattern.into());
        self
    }

    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    pub fn discard(mut self) -> Self {
        self.discard = true;
        self
    }
}

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SmtpFixtureError {
    #[error("{NOT_INSTALLED} ({detail})")]
    NotInstalled { detail: String },
    #[error("cannot generate the test certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("the SMTP server did not report its port: {reason}; its stderr:\n{stderr}")]
    NoPort { reason: String, stderr: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> SmtpFixtureError {
    let what = what.into();
    move |source| SmtpFixtureError::Io { what, source }
}

/// A running aiosmtpd on 127.0.0.1. Killed on drop.
pub struct SmtpServer {
    child: Child,
    /// Held open so the server can exit when this process dies (`--exit-on-stdin-eof`).
    _stdin: Option<ChildStdin>,
    port: u16,
    maildir: PathBuf,
    stderr_path: PathBuf,
    ca: Option<(String, PathBuf)>,
    implicit_tls: bool,
    // Last: removed after the process is gone.
    dir: tempfile::TempDir,
}

impl fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("tls", &self.ca.is_some())
            .field("implicit_tls", &self.implicit_tls)
            .finish_non_exhaustive()
    }
}

impl SmtpServer {
    /// Starts a server, panicking with the reason if it cannot (including
    /// [`NOT_INSTALLED`] when aiosmtpd is missing).
    pub fn start(options: SmtpOptions) -> SmtpServer {
        match SmtpServer::try_start(options) {
            Ok(server) => server,
            Err(e) => panic!("cannot start the test SMTP server: {e}"),
        }
    }

    pub fn try_start(options: SmtpOptions) -> Result<SmtpServer, SmtpFixtureError> {
        check_aiosmtpd()?;
        let dir = tempfile::Builder::new()
            .prefix("herald-smtp-")
            .tempdir()
            .map_err(io_error("create a temporary directory"))?;
        let maildir = dir.path().join("mail");
        fs::create_dir(&maildir).map_err(io_error("create the mail directory"))?;
        let stderr_path = dir.path().join("server.stderr");
        let stderr = File::create(&stderr_path).map_err(io_error("create the stderr file"))?;

        let mut command = Command::new("python3");
        command
            .arg(script_path())
            .arg("--maildir")
            .arg(&maildir)
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut ca = None;
        if options.starttls || options.implicit_tls {
            let (cert_pem, cert_path, key_path) = write_certificate(dir.path())?;
            let flag = if options.implicit_tls {
                "--tls"
            } else {
                "--starttls"
            };
            command.arg(flag).arg(&cert_path).arg(key_path);
            ca = Some((cert_pem, cert_path));
        }
        if options.fail_first > 0 {
            command
                .arg("--fail-first")
                .arg(options.fail_first.to_string());
            command.arg("--fail-on").arg(match options.fail_on {
                FailOn::Data => "data",
                FailOn::Rcpt => "rcpt",
            });
        }
        if let Some(pattern) = &options.reject_rcpt {
            command.arg("--reject-rcpt").arg(pattern);
        }
        if let Some((user, password)) = &options.auth {
            command.arg("--auth").arg(format!("{user}:{password}"));
        }
        if options.discard {
            command.arg("--discard");
        }

        let mut child = command
            .spawn()
            .map_err(io_error("run python3 tests/support/smtp_server.py"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let first_line = first_line(stdout, START_TIMEOUT);
        let port = first_line.as_deref().ok().and_then(|line| {
            line.trim()
                .strip_prefix("PORT ")
                .and_then(|p| p.parse::<u16>().ok())
        });
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            let reason = match first_line {
                Ok(line) => format!("its first line was {line:?}"),
                Err(reason) => reason,
            };
            return Err(SmtpFixtureError::NoPort {
                reason,
                stderr: fs::read_to_string(&stderr_path).unwrap_or_default(),
            });
        };
        Ok(SmtpServer {
            child,
            _stdin: stdin,
            port,
            maildir,
            stderr_path,
            ca,
            implicit_tls: options.implicit_tls,
            dir,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL herald's `[email] smtp_url` takes for this server: plain, STARTTLS
    /// required (`?tls=required&ca=…`) or implicit TLS (`smtps://…?ca=…`), trusting the
    /// test certificate.
    pub fn url(&self) -> String {
        match &self.ca {
            None => format!("smtp://127.0.0.1:{}", self.port),
            Some((_, path)) if self.implicit_tls => {
                format!("smtps://127.0.0.1:{}?ca={}", self.port, path.display())
            }
            Some((_, path)) => format!(
                "smtp://127.0.0.1:{}?tls=required&ca={}",
                self.port,
                path.display()
            ),
        }
    }

    /// The server's self-signed certificate (PEM), when it speaks TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(pem, _)| pem.as_str())
    }

    /// Where [`SmtpServer::ca_pem`] is written.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca.as_ref().map(|(_, path)| path.as_path())
    }

    /// What the server wrote to stderr so far (aiosmtpd's log): for failure messages.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Every message accepted so far, in order of acceptance.
    pub fn messages(&self) -> Vec<ParsedMessage> {
        let mut names: Vec<PathBuf> = match fs::read_dir(&self.maildir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|ext| ext == "eml"))
                .collect(),
            Err(e) => panic!("cannot read {}: {e}", self.maildir.display()),
        };
        names.sort();
        names.iter().map(|path| ParsedMessage::read(path)).collect()
    }

    /// Waits until at least `n` messages were accepted and returns them all; panics after
    /// `timeout` saying how many arrived. Sleeps the calling thread between looks.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ParsedMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if Instant::now() >= deadline {
                panic!(
                    "expected {n} messages within {timeout:?}, the SMTP server accepted {}; \
                     its stderr:\n{}",
                    messages.len(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tests/support/smtp_server.py` of this workspace.
pub fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/smtp_server.py")
}

/// Checks once per process that `python3 -c "import aiosmtpd"` works.
fn check_aiosmtpd() -> Result<(), SmtpFixtureError> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        match Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("import failed")
                .to_string()),
            Err(e) => Err(format!("cannot run python3: {e}")),
        }
    });
    result
        .clone()
        .map_err(|detail| SmtpFixtureError::NotInstalled { detail })
}

/// Reads the first stdout line of the server, giving up after `timeout`.
fn first_line(
    stdout: Option<std::process::ChildStdout>,
    timeout: Duration,
) -> Result<String, String> {
    let stdout = stdout.ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let result = reader.read_line(&mut line).map(|_| line);
        let _ = tx.send(result);
        // Keep draining so the server never blocks on a full pipe.
        let _ = io::copy(&mut reader, &mut io::sink());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(line)) if line.is_empty() => Err("it exited before printing anything".into()),
        Ok(Ok(line)) => Ok(line),
        Ok(Err(e)) => Err(format!("reading its stdout failed: {e}")),
        Err(_) => Err(format!("it printed nothing within {timeout:?}")),
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost: (cert PEM, cert path, key path).
fn write_certificate(dir: &Path) -> Result<(String, PathBuf, PathBuf), SmtpFixtureError> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let cert_pem = certified.cert.pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    fs::write(&cert_path, &cert_pem).map_err(io_error("write the test certificate"))?;
    fs::write(&key_path, certified.signing_key.serialize_pem())
        .map_err(io_error("write the test key"))?;
    Ok((cert_pem, cert_path, key_path))
}

/// One message as the SMTP server received it, parsed.
#[derive(Debug, Clone)]
pub struct ParsedMessage {
    /// The DATA bytes exactly as received.
    pub raw: Vec<u8>,
    /// `MAIL FROM` and `RCPT TO` addresses (the SMTP envelope, not the headers).
    pub envelope_from: String,
    pub envelope_to: Vec<String>,
    /// Top-level header fields in order: name as written, raw value (still encoded and
    /// folded, without the trailing line break).
    pub headers: Vec<(String, String)>,
    /// Decoded (RFC 2047).
    pub subject: Option<String>,
    /// Addresses only, without display names.
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// Without the angle brackets.
    pub message_id: Option<String>,
    /// The parsed `Date`, as RFC 3339.
    pub date: Option<String>,
    /// The top-level `type/subtype`, lowercase (`text/plain` when absent).
    pub content_type: String,
    /// The leaf (non-multipart) parts in order.
    pub parts: Vec<ParsedPart>,
}

/// One leaf MIME part, decoded.
#[derive(Debug, Clone)]
pub struct ParsedPart {
    /// `type/subtype`, lowercase.
    pub content_type: String,
    pub charset: Option<String>,
    pub transfer_encoding: Option<String>,
    /// Decoded body (transfer encoding and charset undone); binary parts lossily.
    pub body: String,
}

impl ParsedMessage {
    /// Parses a message and its envelope file; panics on unreadable files, since the
    /// server wrote them.
    fn read(eml: &Path) -> ParsedMessage {
        let raw = fs::read(eml).unwrap_or_else(|e| panic!("read {}: {e}", eml.display()));
        let envelope = fs::read_to_string(eml.with_extension("envelope")).unwrap_or_default();
        let mut parsed = ParsedMessage::parse(&raw);
        for line in envelope.lines() {
            if let Some(addr) = line.strip_prefix("MAIL FROM:") {
                parsed.envelope_from = unbracket(addr).to_string();
            } else if let Some(addr) = line.strip_prefix("RCPT TO:") {
                parsed.envelope_to.push(unbracket(addr).to_string());
            }
        }
        parsed
    }

    /// Parses raw message bytes (the envelope fields stay empty).
    pub fn parse(raw: &[u8]) -> ParsedMessage {
        let message = MessageParser::default()
            .parse(raw)
            .unwrap_or_else(|| panic!("not a parsable message: {}", String::from_utf8_lossy(raw)));
        let addresses = |addr: Option<&mail_parser::Address<'_>>| -> Vec<String> {
            addr.map(|a| {
                a.iter()
                    .filter_map(|a| a.address.as_deref().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
        };
        let content_type = |part: &mail_parser::MessagePart<'_>| {
            part.content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_string(),
                })
                .unwrap_or_else(|| "text/plain".to_string())
                .to_ascii_lowercase()
        };
        let parts = message
            .parts
            .iter()
            .filter_map(|part| {
                let body = match &part.body {
                    PartType::Text(text) | PartType::Html(text) => text.to_string(),
                    PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                        String::from_utf8_lossy(bytes).into_owned()
                    }
                    PartType::Message(_) | PartType::Multipart(_) => return None,
                };
                Some(ParsedPart {
                    content_type: content_type(part),
                    charset: part
                        .content_type()
                        .and_then(|ct| ct.attribute("charset"))
                        .map(str::to_string),
                    transfer_encoding: part.content_transfer_encoding().map(str::to_string),
                    body,
                })
            })
            .collect();
        ParsedMessage {
            raw: raw.to_vec(),
            envelope_from: String::new(),
            envelope_to: Vec::new(),
            headers: message
                .headers_raw()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        value
                            .trim_end_matches(['\r', '\n'])
                            .trim_start()
                            .to_string(),
                    )
                })
                .collect(),
            subject: message.subject().map(str::to_string),
            from: addresses(message.from()),
            to: addresses(message.to()),
            cc: addresses(message.cc()),
            bcc: addresses(message.bcc()),
            message_id: message.message_id().map(str::to_string),
            date: message.date().map(|d| d.to_rfc3339()),
            content_type: content_type(message.root_part()),
            parts,
        }
    }

    /// The raw values of every top-level header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first `text/plain` leaf part.
    pub fn text(&self) -> Option<&str> {
        self.part("text/plain")
    }

    /// The first `text/html` leaf part.
    pub fn html(&self) -> Option<&str> {
        self.part("text/html")
    }

    fn part(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.body.as_str())
    }
}

fn unbracket(addr: &str) -> &str {
    let addr = addr.trim();
    addr.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(addr)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    use super::*;

    /// A minimal SMTP client: the reply code to each step, stopping at the first failure.
    fn dialogue(port: u16, rcpt: &str, message: &str) -> Vec<u16> {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut read_reply = || -> u16 {
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line[..3].parse().unwrap();
                }
            }
        };
        let mut codes = vec![read_reply()];
        let data = format!("{}\r\n.\r\n", message.replace('\n', "\r\n"));
        for command in [
            "EHLO test\r\n".to_string(),
            "MAIL FROM:<herald@example.com>\r\n".to_string(),
            format!("RCPT TO:<{rcpt}>\r\n"),
            "DATA\r\n".to_string(),
            data,
        ] {
            writer.write_all(command.as_bytes()).unwrap();
            let code = read_reply();
            codes.push(code);
            if code >= 400 {
                break;
            }
        }
        codes
    }

    const MESSAGE: &str = "From: Herald <herald@example.com>
To: Ops <ops@acme.example>
Cc: boss@acme.example
Subject: =?utf-8?b?W8OcbsOvY8O2ZGVdIGjDqWxsbw==?=
Message-ID: <dlv_1@example.com>
Date: Wed, 25 Nov 2026 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=\"b1\"

--b1
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

caf=C3=A9
--b1
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: base64

PHA+Y2Fmw6k8L3A+
--b1--";

    #[test]
    fn stores_and_parses_what_it_accepts() {
        let server = SmtpServer::start(SmtpOptions::default());
        assert_eq!(
            dialogue(server.port(), "ops@acme.example", MESSAGE),
            [220, 250, 250, 250, 354, 250]
        );
        let messages = server.wait_for(1, Duration::from_secs(10));
        let m = &messages[0];
        assert_eq!(m.envelope_from, "herald@example.com");
        assert_eq!(m.envelope_to, ["ops@acme.example"]);
        assert_eq!(m.subject.as_deref(), Some("[Ünïcöde] héllo"));
        assert_eq!(m.from, ["herald@example.com"]);
        assert_eq!(m.to, ["ops@acme.example"]);
        assert_eq!(m.cc, ["boss@acme.example"]);
        assert_eq!(m.message_id.as_deref(), Some("dlv_1@example.com"));
        assert_eq!(m.date.as_deref(), Some("2026-11-25T12:00:00Z"));
        assert_eq!(m.content_type, "multipart/alternative");
        assert_eq!(m.text().map(str::trim_end), Some("café"));
        assert_eq!(m.html().map(str::trim_end), Some("<p>café</p>"));
        assert_eq!(m.parts[1].transfer_encoding.as_deref(), Some("base64"));
        assert_eq!(m.header("message-id"), ["<dlv_1@example.com>"]);
    }

    #[test]
    fn fails_and_rejects_on_request() {
        let server = SmtpServer::start(
            SmtpOptions::default()
                .fail_first(1, FailOn::Data)
                .reject_rcpt("*@rejected.example"),
        );
        let port = server.port();
        assert_eq!(
            dialogue(port, "ops@acme.example", MESSAGE),
            [220, 250, 250, 250, 354, 451]
        );
        assert_eq!(
            dialogue(port, "Nobody@Rejected.Example", MESSAGE),
            [220, 250, 250, 550]
        );
        assert_eq!(
            dialogue(port, "ops@acme.example", MESSAGE),
            [220, 250, 250, 250, 354, 250]
        );
        assert_eq!(server.wait_for(1, Duration::from_secs(10)).len(), 1);
    }

    #[test]
    fn tls_servers_come_with_their_certificate() {
        let server = SmtpServer::start(SmtpOptions::default().starttls());
        let pem = server.ca_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        assert_eq!(fs::read_to_string(server.ca_path().unwrap()).unwrap(), pem);
        assert!(server.url().contains("?tls=required&ca="));
        // MAIL before STARTTLS is refused.
        assert_eq!(
            dialogue(server.port(), "ops@acme.example", MESSAGE),
            [220, 250, 530]
        );
    }
}
