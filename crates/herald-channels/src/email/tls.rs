//! TLS towards the relay: lettre's parameters for STARTTLS, and a rustls client (via
//! tokio-rustls) for implicit TLS, both trusting Mozilla's roots plus the configured extra
//! roots and verifying the relay's name.
//!
//! Implicit TLS is done here rather than by lettre because herald opens the TCP connection
//! itself (to set `TCP_NODELAY`, see `send.rs`) and hands lettre a ready stream.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::{AsyncTokioStream, Certificate, TlsParameters};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::ConfigError;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://`: no encryption.
    Plain,
    /// `smtp://…?tls=required`: STARTTLS, required.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Implicit,
}

/// How connections to the relay are protected.
#[derive(Clone)]
pub(super) enum RelayTls {
    Plain,
    StartTls(TlsParameters),
    Implicit {
        connector: TlsConnector,
        name: ServerName<'static>,
    },
}

impl fmt::Debug for RelayTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayTls::Plain => "Plain",
            RelayTls::StartTls(_) => "StartTls",
            RelayTls::Implicit { .. } => "Implicit",
        })
    }
}

/// Builds the TLS set-up for `mode` towards `host`. `extra_roots` are (what, PEM) pairs,
/// `what` naming the source in errors.
pub(super) fn relay_tls(
    mode: TlsMode,
    host: &str,
    extra_roots: &[(String, Vec<u8>)],
) -> Result<RelayTls, ConfigError> {
    for (what, pem) in extra_roots {
        if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::NoCertificate(what.clone()));
        }
    }
    match mode {
        TlsMode::Plain => Ok(RelayTls::Plain),
        TlsMode::StartTls => {
            let mut builder = TlsParameters::builder(host.to_string());
            for (what, pem) in extra_roots {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| ConfigError::Tls(format!("{what}: {e}")))?;
                builder = builder.add_root_certificate(cert);
            }
            let parameters = builder
                .build_rustls()
                .map_err(|e| ConfigError::Tls(e.to_string()))?;
            Ok(RelayTls::StartTls(parameters))
        }
        TlsMode::Implicit => {
            let mut roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            for (what, pem) in extra_roots {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    let cert = cert.map_err(|e| ConfigError::Tls(format!("{what}: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| ConfigError::Tls(format!("{what}: {e}")))?;
                }
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| ConfigError::Tls(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(host.to_string()).map_err(|_| {
                ConfigError::Tls(format!("`{host}` is not a valid TLS server name"))
            })?;
            Ok(RelayTls::Implicit {
                connector: TlsConnector::from(Arc::new(config)),
                name,
            })
        }
    }
}

/// A TLS connection handed to lettre as its transport.
#[derive(Debug)]
pub(super) struct TlsTcp(pub(super) tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for TlsTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
