//! Webhook configuration: HTTP options, the shared HTTP client, and construction errors.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::redirect::Policy;

use super::sign::SecretError;
use super::ssrf::GuardedResolver;

/// The `user-agent` herald sends unless told otherwise.
pub const DEFAULT_USER_AGENT: &str = concat!("herald/", env!("CARGO_PKG_VERSION"));

/// Options shared by every webhook of one herald process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// The whole request, connect to last body byte (the spec suggests 15–30 s).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Lets webhooks reach loopback, private and other non-public addresses. Off in
    /// production: webhook URLs are chosen by tenants (SSRF).
    pub allow_private_networks: bool,
    pub user_agent: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            allow_private_networks: false,
            user_agent: DEFAULT_USER_AGENT.to_string(),
        }
    }
}

/// Why a webhook or its client cannot be built. Never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("webhook URL scheme `{0}` is not supported; use http or https")]
    UnsupportedScheme(String),
    #[error("webhook URL has no host")]
    MissingHost,
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("user agent is not a valid header value")]
    UserAgent,
    #[error("{what} must be greater than zero")]
    ZeroTimeout { what: &'static str },
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// The one HTTP client every webhook shares: its connection pool, timeouts and SSRF guard.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    pub(super) http: reqwest::Client,
    pub(super) options: Arc<HttpOptions>,
}

impl WebhookClient {
    /// Builds the client: no redirects (a 3xx is a failure, and following it would carry the
    /// signature elsewhere), no proxy, both timeouts, and the guarded resolver.
    pub fn new(options: HttpOptions) -> Result<WebhookClient, ConfigError> {
        if options.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout { what: "timeout" });
        }
        if options.connect_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout {
                what: "connect timeout",
            });
        }
        let user_agent =
            HeaderValue::from_str(&options.user_agent).map_err(|_| ConfigError::UserAgent)?;
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .user_agent(user_agent)
            .dns_resolver(Arc::new(GuardedResolver {
                guard: !options.allow_private_networks,
            }))
            .build()
            .map_err(ConfigError::Client)?;
        Ok(WebhookClient {
            http,
            options: Arc::new(options),
        })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.options
    }
}
