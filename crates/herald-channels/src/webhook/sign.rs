//! Standard Webhooks v1 signatures: signing what herald sends, verifying what a receiver gets.
//!
//! Signed content is `"{id}.{timestamp}.{body}"`, HMAC-SHA256 keyed with the base64-decoded
//! secret (after an optional `whsec_` prefix), sent as `v1,<standard base64>`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::prelude::BASE64_STANDARD;
use herald_core::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks secrets carry; stripped before decoding.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far a receiver lets `webhook-timestamp` stray from its own clock (the spec's ±5 min).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Standard alphabet; padding optional, since secrets are often copied without it.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a signing secret cannot be used. Never contains the secret or any of its characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the signing secret is empty after the `whsec_` prefix")]
    Empty,
    #[error(
        "the signing secret is not valid base64 after the `whsec_` prefix: \
         character {position} (counting from 1 after the prefix) is not in the standard base64 alphabet"
    )]
    InvalidCharacter { position: usize },
    #[error(
        "the signing secret is not valid base64 after the `whsec_` prefix: \
         its length ({length} characters) is not a valid base64 length"
    )]
    InvalidLength { length: usize },
    #[error(
        "the signing secret is not valid base64 after the `whsec_` prefix: \
         its last character (position {position} after the prefix) has non-zero trailing bits"
    )]
    InvalidLastSymbol { position: usize },
    #[error(
        "the signing secret is not valid base64 after the `whsec_` prefix: its `=` padding is wrong"
    )]
    InvalidPadding,
}

/// A decoded signing key. `Debug` does not print it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// Decodes `secret` (`whsec_` prefix optional).
    pub fn from_secret(secret: &Secret) -> Result<SigningKey, SecretError> {
        let encoded = secret.expose();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = SECRET_BASE64.decode(encoded).map_err(|e| match e {
            base64::DecodeError::InvalidByte(offset, _) => SecretError::InvalidCharacter {
                position: offset + 1,
            },
            base64::DecodeError::InvalidLength(length) => SecretError::InvalidLength { length },
            base64::DecodeError::InvalidLastSymbol(offset, _) => SecretError::InvalidLastSymbol {
                position: offset + 1,
            },
            base64::DecodeError::InvalidPadding => SecretError::InvalidPadding,
        })?;
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SigningKey(key))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, &timestamp.to_string(), body).finalize();
        format!("v1,{}", BASE64_STANDARD.encode(tag.into_bytes()))
    }
}

/// Why a received webhook did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("webhook-timestamp `{0}` is not a number of unix seconds")]
    MalformedTimestamp(String),
    #[error(
        "webhook-timestamp is {skew_seconds}s away from now; at most {tolerance_seconds}s are tolerated"
    )]
    TimestampOutOfTolerance {
        skew_seconds: u64,
        tolerance_seconds: u64,
    },
    #[error("webhook-signature has no `v1,` signature")]
    NoV1Signature,
    #[error("no v1 signature in webhook-signature matches the body")]
    Mismatch,
}

/// Verifies a received webhook as a Standard Webhooks receiver would.
///
/// `id`, `timestamp` and `signature_header` are the raw `webhook-id`, `webhook-timestamp`
/// and `webhook-signature` header values; `body` is the raw body. The header may list
/// several space-separated signatures (secret rotation); one matching `v1` signature is
/// enough. Signatures are compared in constant time; the timestamp must be within
/// `tolerance` of `now` (use [`DEFAULT_TOLERANCE`]).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use herald_channels::webhook::{DEFAULT_TOLERANCE, VerifyError, verify};
/// use herald_core::Secret;
///
/// // In a receiver: the raw header values and the raw body, before any JSON parsing.
/// let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
/// let now = UNIX_EPOCH + Duration::from_secs(1614265330);
/// verify(
///     &secret,
///     "msg_p5jXN8AQM9LWM0D4loKWxJek",
///     "1614265330",
///     br#"{"test": 2432232314}"#,
///     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
///     now,
///     DEFAULT_TOLERANCE,
/// )?;
/// # Ok::<(), VerifyError>(())
/// ```
pub fn verify(
    secret: &Secret,
    id: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let key = SigningKey::from_secret(secret)?;
    let sent: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| VerifyError::MalformedTimestamp(timestamp.chars().take(32).collect()))?;
    let now = unix_seconds(now);
    let skew = now.abs_diff(sent);
    if skew > tolerance.as_secs() {
        return Err(VerifyError::TimestampOutOfTolerance {
            skew_seconds: skew,
            tolerance_seconds: tolerance.as_secs(),
        });
    }
    let mac = key.mac(id, timestamp.trim(), body);
    let mut saw_v1 = false;
    for candidate in signature_header.split_ascii_whitespace() {
        let Some(encoded) = candidate.strip_prefix("v1,") else {
            continue;
        };
        saw_v1 = true;
        let Ok(tag) = BASE64_STANDARD.decode(encoded) else {
            continue;
        };
        // `verify_slice` compares in constant time.
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if saw_v1 {
        VerifyError::Mismatch
    } else {
        VerifyError::NoV1Signature
    })
}

/// Unix seconds of `t` (negative before 1970).
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    /// The two test vectors of the Standard Webhooks specification.
    const VECTORS: [(&str, &str, i64, &str, &str); 2] = [
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
        (
            "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1649367553,
            r#"{"email":"test@example.com","username":"test_user"}"#,
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ];

    #[test]
    fn signs_the_spec_vectors() {
        for (secret, id, ts, body, expected) in VECTORS {
            let key = SigningKey::from_secret(&Secret::new(secret)).unwrap();
            assert_eq!(key.sign(id, ts, body.as_bytes()), expected, "{id}");
        }
    }

    #[test]
    fn verifies_the_spec_vectors() {
        for (secret, id, ts, body, expected) in VECTORS {
            let secret = Secret::new(secret);
            let ts_text = ts.to_string();
            let now = at(ts as u64 + 60);
            let check = |body: &str, header: &str, now| {
                verify(
                    &secret,
                    id,
                    &ts_text,
                    body.as_bytes(),
                    header,
                    now,
                    DEFAULT_TOLERANCE,
                )
            };
            assert_eq!(check(body, expected, now), Ok(()));
            // Rotation: any one of several signatures is enough.
            let rotated = format!("v1,bm90IGl0 {expected}");
            assert_eq!(check(body, &rotated, now), Ok(()));
            assert_eq!(
                check(&format!("{body} "), expected, now),
                Err(VerifyError::Mismatch)
            );
            assert_eq!(check(body, "v2,abc", now), Err(VerifyError::NoV1Signature));
            assert!(matches!(
                check(body, expected, at(ts as u64 + 301)),
                Err(VerifyError::TimestampOutOfTolerance {
                    skew_seconds: 301,
                    ..
                })
            ));
            assert!(matches!(
                check(body, expected, at(ts as u64 - 301)),
                Err(VerifyError::TimestampOutOfTolerance { .. })
            ));
        }
    }

    #[test]
    fn the_prefix_is_optional() {
        let (secret, id, ts, body, expected) = VECTORS[0];
        let bare = secret.strip_prefix(SECRET_PREFIX).unwrap();
        let key = SigningKey::from_secret(&Secret::new(bare)).unwrap();
        assert_eq!(key.sign(id, ts, body.as_bytes()), expected);
    }

    #[test]
    fn bad_secrets_say_what_is_wrong_without_echoing_the_secret() {
        let cases = [
            ("whsec_", "is empty"),
            ("", "is empty"),
            (
                "whsec_abc*defg",
                "character 4 (counting from 1 after the prefix)",
            ),
            ("whsec_abcde", "length (5 characters)"),
            ("whsec_abd=", "last character"),
            ("whsec_ab=c", "character 3"),
        ];
        for (secret, want) in cases {
            let err = SigningKey::from_secret(&Secret::new(secret))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{secret}: {err}");
            let body = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
            if body.len() > 2 {
                assert!(!err.contains(body), "{secret}: {err}");
            }
        }
    }

    #[test]
    fn the_key_does_not_print() {
        let key = SigningKey::from_secret(&Secret::new(VECTORS[0].0)).unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
    }
}
