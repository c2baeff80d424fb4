//! VAPID (RFC 8292): the server's P-256 key pair that identifies it to push services. Each push
//! carries `Authorization: vapid t=<ES256 JWT>, k=<public key>`, the JWT's `aud` being the push
//! service's origin; browsers refuse pushes signed by a key other than the one they subscribed
//! with (`applicationServerKey`, served at `GET …/push/vapid-public-key`).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

use crate::config::{Config, Environment};

/// Subject of the ephemeral development key: push services only need some contact.
const DEV_SUBJECT: &str = "mailto:switchboard-dev@localhost";
/// Lifetime of each signed JWT; RFC 8292 allows at most 24 h.
const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The key pair and subject every push is signed with.
pub struct Vapid {
    key: EncodingKey,
    public_key: String,
    subject: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl Vapid {
    /// The configured key; in development without one, an ephemeral key (announced loudly:
    /// subscriptions made against it stop working at the next restart). `None` turns push off.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        match (&config.vapid_private_key, config.environment) {
            (Some(key), _) => {
                let subject = config.vapid_subject.clone().unwrap_or_default();
                Ok(Some(Self::from_base64(key, subject)?))
            }
            (None, Environment::Development) => {
                let secret = p256::SecretKey::random(&mut rand_core::OsRng);
                let vapid = Self::from_secret(&secret, DEV_SUBJECT.to_owned())?;
                tracing::warn!(
                    public_key = %vapid.public_key,
                    "VAPID_PRIVATE_KEY is not set: Web Push uses an EPHEMERAL development key. \
                     Browser subscriptions made now stop working when this process restarts, and \
                     nodes do not share it. Set VAPID_PRIVATE_KEY and VAPID_SUBJECT to keep them."
                );
                Ok(Some(vapid))
            }
            (None, Environment::Production) => {
                tracing::info!("VAPID_PRIVATE_KEY is not set: Web Push is off");
                Ok(None)
            }
        }
    }

    /// A key from its base64url form (the raw 32-byte scalar; padding tolerated).
    pub fn from_base64(key: &str, subject: String) -> anyhow::Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(key.trim().trim_end_matches('='))
            .map_err(|_| anyhow::anyhow!("VAPID_PRIVATE_KEY is not base64url"))?;
        let secret = p256::SecretKey::from_slice(&bytes).map_err(|_| {
            anyhow::anyhow!("VAPID_PRIVATE_KEY is not a P-256 private key (32 bytes, base64url)")
        })?;
        Self::from_secret(&secret, subject)
    }

    fn from_secret(secret: &p256::SecretKey, subject: String) -> anyhow::Result<Self> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("encoding the VAPID key: {e}"))?;
        let public = secret.public_key().to_encoded_point(false);
        Ok(Self {
            key: EncodingKey::from_ec_der(der.as_bytes()),
            public_key: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            subject,
        })
    }

    /// The public key, base64url (uncompressed point): the browser's `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The `Authorization` header value for a push to `endpoint`.
    pub fn authorization(&self, endpoint: &reqwest::Url) -> anyhow::Result<String> {
        let audience = endpoint.origin().ascii_serialization();
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .saturating_add(TOKEN_LIFETIME)
            .as_secs();
        let claims = Claims {
            aud: &audience,
            exp,
            sub: &self.subject,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.key)?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_and_signs_for_the_origin() {
        let secret = p256::SecretKey::random(&mut rand_core::OsRng);
        let encoded = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        let vapid = Vapid::from_base64(&encoded, "mailto:ops@example.com".into()).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(vapid.public_key()).unwrap().len(),
            65
        );
        let url = reqwest::Url::parse("https://push.example.com:8443/send/abc").unwrap();
        let header = vapid.authorization(&url).unwrap();
        let token = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split(", k=").next())
            .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["aud"], "https://push.example.com:8443");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        assert!(header.ends_with(vapid.public_key()));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(Vapid::from_base64("not base64!", String::new()).is_err());
        assert!(Vapid::from_base64("AAAA", String::new()).is_err());
    }
}
