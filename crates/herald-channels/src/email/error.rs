//! Why a mailer or an email channel cannot be built: shared by the configuration
//! (`config.rs`) and the TLS set-up (`tls.rs`), so it has a module of its own.

use std::path::PathBuf;

/// Why a mailer or an email channel cannot be built. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("smtp_url is not a valid URL: {0}")]
    InvalidUrl(url::ParseError),
    #[error(
        "smtp_url scheme `{0}` is not supported; use smtp:// (plain, or ?tls=required for \
         STARTTLS) or smtps:// (implicit TLS)"
    )]
    UnsupportedScheme(String),
    #[error("smtp_url has no host")]
    MissingHost,
    #[error(
        "smtp_url must not contain credentials; set [email] username and password \
         (e.g. password = \"env:SMTP_PASSWORD\") instead"
    )]
    CredentialsInUrl,
    #[error("smtp_url: {0}")]
    Url(String),
    #[error("cannot read CA certificates from {path}: {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} contains no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate(String),
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    #[error("email username and password must be set together")]
    PartialCredentials,
    #[error(
        "refusing to send SMTP credentials unencrypted to {0}; use smtp://…?tls=required \
         or smtps://"
    )]
    PlaintextCredentials(String),
    #[error("{field} address `{value}` is not valid: {reason}")]
    Address {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("an email channel needs at least one `to` address")]
    NoRecipients,
    #[error("subject_prefix must be one line without control characters")]
    SubjectPrefix,
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}
