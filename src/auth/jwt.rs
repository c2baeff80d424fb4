//! User tokens: verification for both transports, and signing for `switchboard token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DEV_JWT_SECRET, JwtAlgorithm};
use crate::error::AppError;

/// Longest accepted user id (`sub`), per the contract.
pub const MAX_USER_ID_LEN: usize = 128;

/// The authenticated caller of a request or owner of a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub id: String,
    /// Display name: the token's `name` claim; without one, the stored profile name once the
    /// transport has looked it up (see [`crate::domain::users::sign_in`]), else the id.
    pub name: String,
    /// Whether `name` is the token's claim. Only a claimed name may overwrite the profile the
    /// backend set through the service API; a token without one leaves it alone.
    pub name_from_token: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or a list of strings (RFC 7519); jsonwebtoken checks it against ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// Verification (and, for HS256, signing) keys built once from the configuration.
pub struct JwtKeys {
    decoding: DecodingKey,
    validation: Validation,
    /// Present only for HS256: asymmetric deployments sign tokens elsewhere.
    encoding: Option<EncodingKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtKeys {
    /// Loads keys per `JWT_*` settings. Fails on an unreadable or malformed public key.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (algorithm, decoding, encoding) = match config.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = config
                    .jwt_secret
                    .as_deref()
                    .unwrap_or(DEV_JWT_SECRET)
                    .as_bytes();
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret),
                    Some(EncodingKey::from_secret(secret)),
                )
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let path = config
                    .jwt_public_key_file
                    .as_ref()
                    .context("JWT_PUBLIC_KEY_FILE is required for RS256/ES256")?;
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading JWT public key {}", path.display()))?;
                if config.jwt_algorithm == JwtAlgorithm::Rs256 {
                    let key = DecodingKey::from_rsa_pem(&pem).context("parsing RSA public key")?;
                    (Algorithm::RS256, key, None)
                } else {
                    let key = DecodingKey::from_ec_pem(&pem).context("parsing EC public key")?;
                    (Algorithm::ES256, key, None)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.jwt_leeway_ms / 1000;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not merely match when present.
        let mut required = vec!["exp", "sub"];
        if config.jwt_issuer.is_some() {
            required.push("iss");
        }
        if config.jwt_audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        match &config.jwt_issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience, a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        Ok(Self {
            decoding,
            validation,
            encoding,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
        })
    }

    /// Checks signature, expiry and claims; every failure is `UNAUTHORIZED`.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AppError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| AppError::Unauthorized(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let len = claims.sub.chars().count();
        if len == 0 || len > MAX_USER_ID_LEN {
            return Err(AppError::Unauthorized(format!(
                "invalid token: sub must be 1 to {MAX_USER_ID_LEN} characters"
            )));
        }
        let claimed = claims.name.filter(|n| !n.trim().is_empty());
        Ok(AuthUser {
            name_from_token: claimed.is_some(),
            name: claimed.unwrap_or_else(|| claims.sub.clone()),
            id: claims.sub,
        })
    }

    /// Signs a token for `user_id`; only possible with an HS256 secret.
    pub fn sign(&self, user_id: &str, name: Option<&str>, ttl: Duration) -> anyhow::Result<String> {
        let key = self.encoding.as_ref().context(
            "signing needs JWT_ALGORITHM=HS256; asymmetric keys are signed by your issuer",
        )?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims {
            sub: user_id.to_owned(),
            name: name.map(str::to_owned),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone().map(serde_json::Value::String),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            key,
        )?)
    }
}
