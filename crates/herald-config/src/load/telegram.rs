//! `[telegram]`: the bot token (a secret), the Bot API URL and the bot commands switch,
//! shared by every Telegram channel.

use super::{In, Loader, at};
use crate::model::TelegramConfig;
use crate::raw::RawTelegram;

const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";

impl Loader<'_> {
    pub(super) fn telegram(&mut self, raw: Option<In<RawTelegram>>) -> Option<TelegramConfig> {
        let In { file, value } = raw?;
        let bot_token = self.secret(&value.bot_token, file, "Telegram bot token");
        let api_url = match value.api_url {
            Some(u) => match url::Url::parse(u.get_ref()) {
                Ok(_) => Some(u.into_inner()),
                Err(err) => {
                    self.error(format!("invalid api_url: {err}"), at(file, u.span()));
                    None
                }
            },
            None => Some(DEFAULT_TELEGRAM_API.to_string()),
        };
        bot_token
            .zip(api_url)
            .map(|(bot_token, api_url)| TelegramConfig {
                bot_token,
                api_url,
                commands: value.commands,
            })
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{BASE, Files, SUB, check};

    #[test]
    fn the_bot_token_resolves_and_the_api_url_defaults() {
        let files = Files::new(&[(
            "herald.toml",
            &format!("{BASE}{SUB}[telegram]\nbot_token = \"env:TELEGRAM_BOT_TOKEN\"\n"),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        let telegram = config.telegram.expect("a [telegram] section");
        assert_eq!(telegram.bot_token.expose(), "123:abc");
        assert_eq!(telegram.api_url, "https://api.telegram.org");
        assert!(!telegram.commands);
    }

    #[test]
    fn telegram_mistakes() {
        check(
            &format!(
                "{SUB}[telegram]\nbot_token = \"env:TELEGRAM_BOT_TOKEN\"\napi_url = \"not a url\"\n"
            ),
            "herald.toml:23:11: error: invalid api_url: relative URL without a base",
        );
        check(
            &format!("{SUB}[telegram]\nbot_token = \"env:NO_SUCH_TOKEN\"\n"),
            "herald.toml:22:13: error: environment variable `NO_SUCH_TOKEN` (the Telegram bot token) is not set",
        );
    }
}
