//! `[teams.NAME.channels.CHANNEL]`: one entry per channel kind (webhook, telegram, email,
//! file), tagged by `type`. A new channel kind adds its arm in [`Loader::channel`] and its
//! `Raw*Channel` in `raw.rs`.

use herald_core::Secret;
use toml::Spanned;
use toml::de::DeValue;

use super::email::check_address;
use super::{Loader, TeamDraft, at, check_name};
use crate::diagnostic::Location;
use crate::model::*;
use crate::raw::*;

const CHANNEL_KINDS: &str = "webhook, telegram, email, file";

impl Loader<'_> {
    pub(super) fn channels(
        &mut self,
        draft: &mut TeamDraft,
        value: Spanned<DeValue<'_>>,
        file: usize,
    ) {
        let span = value.span();
        let DeValue::Table(channels) = value.into_inner() else {
            self.error(
                "`channels` must be a table of channels ([teams.NAME.channels.CHANNEL])",
                at(file, span),
            );
            return;
        };
        for (name, body) in channels {
            let loc = Location {
                file,
                span: name.span(),
            };
            let name = name.get_ref().to_string();
            if let Err(err) = check_name("channel", &name) {
                self.error(err, Some(loc));
                continue;
            }
            let kind = body
                .get_ref()
                .get("type")
                .map(|t| (t.get_ref().as_str().map(str::to_string), t.span()));
            if let Some(throttle) = body.get_ref().get("throttle")
                && let Some(text) = self.de::<Spanned<String>>(throttle.clone(), file)
            {
                match herald_core::Throttle::parse(text.get_ref()) {
                    Ok(throttle) => {
                        draft.channel_throttles.insert(name.clone(), throttle);
                    }
                    Err(message) => self.error(message, at(file, text.span())),
                }
            }
            let config = match kind {
                None => {
                    self.error(
                        format!("channel `{name}` has no `type`; expected one of {CHANNEL_KINDS}"),
                        Some(loc.clone()),
                    );
                    None
                }
                Some((Some(kind), span)) => self.channel(&kind, span, body, file),
                Some((None, span)) => {
                    self.error(
                        format!("`type` must be a string, one of {CHANNEL_KINDS}"),
                        at(file, span),
                    );
                    None
                }
            };
            draft.channels.insert(name, (loc, config));
        }
    }

    pub(super) fn channel(
        &mut self,
        kind: &str,
        kind_span: std::ops::Range<usize>,
        body: Spanned<DeValue<'_>>,
        file: usize,
    ) -> Option<ChannelConfig> {
        match kind {
            "webhook" => {
                let raw: RawWebhook = self.de(body, file)?;
                let url = match url::Url::parse(raw.url.get_ref()) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    Ok(url) => {
                        self.error(
                            format!("webhook url must be http or https, not `{}`", url.scheme()),
                            at(file, raw.url.span()),
                        );
                        None
                    }
                    Err(err) => {
                        self.error(
                            format!("invalid webhook url: {err}"),
                            at(file, raw.url.span()),
                        );
                        None
                    }
                };
                let secrets = self.webhook_secrets(&raw, file)?;
                Some(ChannelConfig::Webhook(WebhookChannelConfig {
                    url: url?,
                    secrets,
                }))
            }
            "telegram" => {
                let raw: RawTelegramChannel = self.de(body, file)?;
                Some(ChannelConfig::Telegram(TelegramChannelConfig {
                    chat_id: raw.chat_id,
                    message_thread_id: raw.message_thread_id,
                    parse_mode: raw.parse_mode,
                    disable_notification: raw.disable_notification,
                }))
            }
            "email" => {
                let raw: RawEmailChannel = self.de(body, file)?;
                if raw.to.get_ref().is_empty() {
                    self.error(
                        "an email channel needs at least one address in `to`",
                        at(file, raw.to.span()),
                    );
                }
                let mut ok = true;
                for addr in raw.to.get_ref().iter().chain(raw.cc.iter()) {
                    if let Err(err) = check_address(addr.get_ref()) {
                        self.error(err, at(file, addr.span()));
                        ok = false;
                    }
                }
                ok.then(|| {
                    ChannelConfig::Email(EmailChannelConfig {
                        to: raw
                            .to
                            .into_inner()
                            .into_iter()
                            .map(Spanned::into_inner)
                            .collect(),
                        cc: raw.cc.into_iter().map(Spanned::into_inner).collect(),
                        subject_prefix: raw.subject_prefix,
                    })
                })
            }
            "file" => {
                let raw: RawFileChannel = self.de(body, file)?;
                Some(ChannelConfig::File(FileChannelConfig {
                    path: self.base_dir.join(raw.path),
                }))
            }
            other => {
                self.error(
                    format!("unknown channel type `{other}`; expected one of {CHANNEL_KINDS}"),
                    at(file, kind_span),
                );
                None
            }
        }
    }
}

impl Loader<'_> {
    /// The signing secrets of a webhook: `secret`, or `secrets` while receivers rotate
    /// (exactly one of the two); each must be a Standard Webhooks secret. Errors point at
    /// the offending value and never repeat it.
    fn webhook_secrets(&mut self, raw: &RawWebhook, file: usize) -> Option<Vec<Secret>> {
        let values: Vec<&Spanned<String>> = match (&raw.secret, &raw.secrets) {
            (Some(_), Some(list)) => {
                self.error(
                    "set either `secret` or `secrets` (to rotate), not both",
                    at(file, list.span()),
                );
                return None;
            }
            (Some(one), None) => vec![one],
            (None, Some(list)) if list.get_ref().is_empty() => {
                self.error(
                    "`secrets` needs at least one secret (or leave it out for unsigned requests)",
                    at(file, list.span()),
                );
                return None;
            }
            (None, Some(list)) => list.get_ref().iter().collect(),
            (None, None) => Vec::new(),
        };
        let mut secrets = Vec::with_capacity(values.len());
        let mut ok = true;
        for value in values {
            let Some(secret) = self.secret(value, file, "webhook secret") else {
                ok = false;
                continue;
            };
            if let Err(err) = check_webhook_secret(secret.expose()) {
                self.error(err, at(file, value.span()));
                ok = false;
                continue;
            }
            secrets.push(secret);
        }
        ok.then_some(secrets)
    }
}

/// A Standard Webhooks secret: `whsec_` followed by base64 of 24 to 64 bytes.
fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let Some(b64) = secret.strip_prefix("whsec_") else {
        return Err("webhook secret must start with `whsec_` (Standard Webhooks format)".into());
    };
    let valid_chars = b64
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    let decoded_len = b64.trim_end_matches('=').len() * 3 / 4;
    if !valid_chars || b64.len() % 4 != 0 || !(24..=64).contains(&decoded_len) {
        return Err(
            "webhook secret must be `whsec_` followed by standard base64 of 24 to 64 bytes".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::load::testing::check;

    #[test]
    fn unknown_key_in_a_channel() {
        check(
            "[teams.acme.channels.x]\ntype = \"webhook\"\nurl = \"https://example.com/h\"\nretries = 3\n[[teams.acme.subscriptions]]\nchannel = \"x\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
            "herald.toml:20:1: error: unknown field `retries`, expected one of `type`, `url`, `secret`, `secrets`, `throttle`",
        );
    }

    #[test]
    fn webhook_url_and_secret() {
        check(
            "[teams.acme.channels.h2]\ntype = \"webhook\"\nurl = \"ftp://example.com\"\nsecret = \"not-a-whsec\"\n[[teams.acme.subscriptions]]\nchannel = \"h2\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
            "herald.toml:19:7: error: webhook url must be http or https, not `ftp`\nherald.toml:20:10: error: webhook secret must start with `whsec_` (Standard Webhooks format)",
        );
    }

    #[test]
    fn rotating_webhook_secrets() {
        let tail = "[[teams.acme.subscriptions]]\nchannel = \"h2\"\nevents = [\"*\"]\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n";
        let channel =
            "[teams.acme.channels.h2]\ntype = \"webhook\"\nurl = \"https://example.com/h\"\n";
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        // Two valid secrets: no diagnostics.
        check(
            &format!("{channel}secrets = [\"{new}\", \"{old}\"]\n{tail}"),
            "",
        );
        check(
            &format!("{channel}secret = \"{old}\"\nsecrets = [\"{new}\"]\n{tail}"),
            "herald.toml:21:11: error: set either `secret` or `secrets` (to rotate), not both",
        );
        check(
            &format!("{channel}secrets = []\n{tail}"),
            "herald.toml:20:11: error: `secrets` needs at least one secret (or leave it out for unsigned requests)",
        );
        // Each bad entry is named by its own position, and its value never repeated.
        check(
            &format!(
                "{channel}secrets = [\"{new}\", \"whsec_!!\", \"env:HERALD_TEST_UNSET\"]\n{tail}"
            ),
            "herald.toml:20:54: error: webhook secret must be `whsec_` followed by standard base64 of 24 to 64 bytes\n\
             herald.toml:20:66: error: environment variable `HERALD_TEST_UNSET` (the webhook secret) is not set",
        );
    }

    #[test]
    fn unknown_channel_type() {
        check(
            "[teams.acme.channels.x]\ntype = \"pager\"\n[[teams.acme.subscriptions]]\nchannel = \"hook\"\nevents = [\"*\"]\n",
            "herald.toml:17:22: warning: channel `x` of team `acme` has no subscription: nothing will be sent to it\n\
             herald.toml:18:8: error: unknown channel type `pager`; expected one of webhook, telegram, email, file",
        );
    }
}
