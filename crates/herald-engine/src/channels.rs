//! Building the channel adapters a configuration declares, and the Telegram bot they
//! share.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herald_channels::telegram::{BotState, ParseMode as TelegramParseMode, TelegramOptions};
use herald_channels::webhook::DEFAULT_USER_AGENT;
use herald_channels::{
    Channel, EmailChannel, FileChannel, HttpOptions, Mailer, TelegramBot, TelegramChannel,
    WebhookChannel, WebhookClient,
};
use herald_config::{ChannelConfig, Config, ParseMode};
use herald_core::TeamId;

/// Every channel of every team, keyed by (team, channel name).
pub type Channels = HashMap<(TeamId, String), Arc<dyn Channel>>;

/// The options of the bot `[telegram]` configures: every wait of one send fits the
/// attempt limit the engine enforces.
fn telegram_options(config: &Config) -> TelegramOptions {
    let timeout = config.delivery.timeout;
    TelegramOptions {
        max_retry_wait: timeout,
        max_queue_wait: timeout,
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(5)),
        ..TelegramOptions::default()
    }
}

/// The bot `[telegram]` configures (`None` without the section): `previous` when it
/// serves the same token and API URL — a reload keeps the bot, with its flood control
/// (the chats' buckets, a 429's hold) and the migrations it learnt, reconfigured if the
/// delivery timeout changed — else a new one keeping what it learns in `state`. The flag
/// says it is new: it has not read `state` yet, so call `TelegramBot::restore` before it
/// sends.
pub fn telegram_bot(
    config: &Config,
    previous: Option<&TelegramBot>,
    state: &Arc<dyn BotState>,
) -> Result<Option<(TelegramBot, bool)>, String> {
    let Some(t) = &config.telegram else {
        return Ok(None);
    };
    let options = telegram_options(config);
    if let Some(bot) = previous.filter(|bot| bot.serves(&t.bot_token, &t.api_url)) {
        let bot = bot
            .reconfigured(options)
            .map_err(|err| format!("[telegram]: {err}"))?;
        return Ok(Some((bot, false)));
    }
    TelegramBot::with_state(&t.bot_token, &t.api_url, options, Arc::clone(state))
        .map(|bot| Some((bot, true)))
        .map_err(|err| format!("[telegram]: {err}"))
}

/// Builds one adapter per configured channel, sharing one HTTP client, one mailer and
/// `bot` (the bot [`telegram_bot`] gave for this configuration).
pub fn build_channels(config: &Config, bot: Option<&TelegramBot>) -> Result<Channels, String> {
    let timeout = config.delivery.timeout;
    let client = WebhookClient::new(HttpOptions {
        timeout,
        connect_timeout: timeout.min(Duration::from_secs(5)),
        allow_private_networks: config.delivery.allow_private_networks,
        user_agent: DEFAULT_USER_AGENT.to_string(),
    })
    .map_err(|e| format!("building the HTTP client: {e}"))?;
    // One mailer (connection pool) and one bot (rate limiter) shared by their channels.
    let mailer = match &config.email {
        Some(e) => Some(
            Mailer::new(
                &e.smtp_url,
                &e.from,
                e.username.as_ref(),
                e.password.as_ref(),
                timeout,
            )
            .map_err(|err| format!("[email]: {err}"))?,
        ),
        None => None,
    };
    let mut channels: Channels = HashMap::new();
    for (team, team_config) in &config.teams {
        for (name, channel) in &team_config.channels {
            let adapter: Arc<dyn Channel> = match channel {
                ChannelConfig::Webhook(w) => Arc::new(
                    WebhookChannel::with_secrets(w.url.clone(), &w.secrets, client.clone())
                        .map_err(|e| format!("channel `{name}` of team `{team}`: {e}"))?,
                ),
                ChannelConfig::File(f) => Arc::new(FileChannel::new(f.path.clone())),
                ChannelConfig::Telegram(t) => {
                    let bot = bot.cloned().ok_or_else(|| {
                        format!("channel `{name}` of team `{team}` needs a [telegram] section")
                    })?;
                    let mode = match t.parse_mode {
                        ParseMode::Html => TelegramParseMode::Html,
                        ParseMode::MarkdownV2 => TelegramParseMode::MarkdownV2,
                        ParseMode::Plain => TelegramParseMode::Plain,
                    };
                    Arc::new(TelegramChannel::new(
                        bot,
                        t.chat_id,
                        t.message_thread_id,
                        mode,
                        t.disable_notification,
                    ))
                }
                ChannelConfig::Email(e) => {
                    let mailer = mailer.clone().ok_or_else(|| {
                        format!("channel `{name}` of team `{team}` needs an [email] section")
                    })?;
                    Arc::new(
                        EmailChannel::new(
                            mailer,
                            team.clone(),
                            e.to.clone(),
                            e.cc.clone(),
                            e.subject_prefix.clone(),
                        )
                        .map_err(|err| format!("channel `{name}` of team `{team}`: {err}"))?,
                    )
                }
            };
            channels.insert((team.clone(), name.clone()), adapter);
        }
    }
    Ok(channels)
}

#[cfg(test)]
mod tests {
    use herald_channels::telegram::MemoryState;

    use super::*;

    fn config(token: &str, timeout: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.toml");
        let text = format!(
            "[delivery]\ntimeout = \"{timeout}\"\n\n[[event_types]]\nname = \"capsule.create\"\n\n\
             [teams.acme]\napi_keys = [\"acme-key\"]\n\
             [teams.acme.channels.chat]\ntype = \"telegram\"\nchat_id = -42\n\
             [[teams.acme.subscriptions]]\nchannel = \"chat\"\nevents = [\"*\"]\n\n\
             [telegram]\nbot_token = \"{token}\"\napi_url = \"http://127.0.0.1:9\"\n"
        );
        std::fs::write(&path, text).unwrap();
        let outcome = herald_config::load_with_env(&path, &|_| None);
        outcome
            .config
            .unwrap_or_else(|| panic!("{}", outcome.diagnostics))
    }

    #[test]
    fn a_reload_keeps_the_bot_unless_its_settings_change() {
        let state: Arc<dyn BotState> = Arc::new(MemoryState::default());
        let first = config("111:aaaaaaaaaa", "5s");
        let (bot, new) = telegram_bot(&first, None, &state).unwrap().unwrap();
        assert!(new);
        assert_eq!(bot.id(), "111");
        let check = |config: &Config| {
            let (kept, new) = telegram_bot(config, Some(&bot), &state).unwrap().unwrap();
            // A kept bot shares the flood control and migrations; a new one does not.
            assert_eq!(!new, kept.shares_state_with(&bot));
            if new { "new" } else { "kept" }
        };
        assert_eq!(check(&first), "kept");
        assert_eq!(check(&config("111:aaaaaaaaaa", "5s")), "kept");
        // New timeouts: a new HTTP client, the same flood control and migrations.
        assert_eq!(check(&config("111:aaaaaaaaaa", "7s")), "kept");
        assert_eq!(check(&config("111:bbbbbbbbbb", "5s")), "new");
        let mut without = first.clone();
        without.telegram = None;
        assert!(
            telegram_bot(&without, Some(&bot), &state)
                .unwrap()
                .is_none()
        );
    }
}
