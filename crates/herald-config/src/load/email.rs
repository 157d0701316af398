//! `[email]`: the SMTP relay (`smtp_url`), the sender and the optional credentials
//! (secrets), shared by every email channel; and the mailbox syntax check that email
//! channels use for their recipients too.

use super::{Loader, at};
use crate::model::EmailConfig;
use crate::raw::RawEmail;

impl Loader<'_> {
    pub(super) fn email(&mut self, value: RawEmail, file: usize) -> Option<EmailConfig> {
        let smtp_ok = match url::Url::parse(value.smtp_url.get_ref()) {
            Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host_str().is_some() => true,
            Ok(_) => {
                self.error(
                    "smtp_url must be smtp://host:port (plain or ?tls=required) or smtps://host:port",
                    at(file, value.smtp_url.span()),
                );
                false
            }
            Err(err) => {
                self.error(
                    format!("invalid smtp_url: {err}"),
                    at(file, value.smtp_url.span()),
                );
                false
            }
        };
        let from_ok = match check_address(value.from.get_ref()) {
            Ok(()) => true,
            Err(err) => {
                self.error(err, at(file, value.from.span()));
                false
            }
        };
        let username = match &value.username {
            Some(u) => Some(self.secret(u, file, "SMTP username")?),
            None => None,
        };
        let password = match &value.password {
            Some(p) => Some(self.secret(p, file, "SMTP password")?),
            None => None,
        };
        (smtp_ok && from_ok).then(|| EmailConfig {
            smtp_url: value.smtp_url.into_inner(),
            from: value.from.into_inner(),
            username,
            password,
        })
    }
}

/// A mailbox: `addr@host` or `Name <addr@host>`, with no line breaks.
pub(super) fn check_address(addr: &str) -> Result<(), String> {
    let inner = match (addr.find('<'), addr.rfind('>')) {
        (Some(l), Some(r)) if l < r && r == addr.len() - 1 => &addr[l + 1..r],
        (None, None) => addr,
        _ => return Err(format!("invalid email address `{addr}`")),
    };
    let valid = !addr.contains(['\r', '\n'])
        && inner.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !inner.contains(char::is_whitespace)
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid email address `{addr}`: expected user@host or `Name <user@host>`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::load::testing::{BASE, Files, SUB, check};

    #[test]
    fn a_relay_and_a_sender_load() {
        let files = Files::new(&[(
            "herald.toml",
            &format!(
                "{BASE}{SUB}[email]\nsmtp_url = \"smtp://127.0.0.1:2525\"\nfrom = \"herald <herald@example.com>\"\n"
            ),
        )]);
        let config = files.load().config.expect("the configuration is valid");
        let email = config.email.expect("an [email] section");
        assert_eq!(email.smtp_url, "smtp://127.0.0.1:2525");
        assert_eq!(email.from, "herald <herald@example.com>");
        assert!(email.username.is_none() && email.password.is_none());
    }

    #[test]
    fn email_mistakes() {
        check(
            &format!("{SUB}[email]\nsmtp_url = \"http://relay\"\nfrom = \"no-address\"\n"),
            "herald.toml:22:12: error: smtp_url must be smtp://host:port (plain or ?tls=required) or smtps://host:port\n\
             herald.toml:23:8: error: invalid email address `no-address`: expected user@host or `Name <user@host>`",
        );
        check(
            &format!(
                "{SUB}[email]\nsmtp_url = \"smtp://relay\"\nfrom = \"a@b\"\npassword = \"env:NO_SUCH_PASSWORD\"\n"
            ),
            "herald.toml:24:12: error: environment variable `NO_SUCH_PASSWORD` (the SMTP password) is not set",
        );
    }
}
