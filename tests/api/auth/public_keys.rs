//! RS256 and ES256: tokens checked against `JWT_PUBLIC_KEY_FILE`, with key pairs generated here.

use std::sync::OnceLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use switchboard::auth::JwtKeys;

use super::{assert_accepted, assert_rejected, claims, encode};
use crate::common::{ScratchDir, TEST_JWT_SECRET, hs256_token, test_config};

/// A PEM key pair made at test time.
struct KeyPair {
    /// PKCS#1 for RSA, PKCS#8 for EC: what `EncodingKey::from_*_pem` reads.
    private_pem: String,
    /// SPKI (`BEGIN PUBLIC KEY`), what operators put in `JWT_PUBLIC_KEY_FILE`.
    public_pem: String,
}

impl KeyPair {
    /// 1024 bits: what is tested is which key signed, not its strength, and 2048-bit generation
    /// takes seconds in an unoptimised build.
    fn rsa() -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024)
            .expect("generating an RSA key");
        Self {
            private_pem: private
                .to_pkcs1_pem(LineEnding::LF)
                .expect("encoding the RSA private key")
                .as_str()
                .to_owned(),
            public_pem: private
                .to_public_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("encoding the RSA public key"),
        }
    }

    fn p256() -> Self {
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let private = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
        Self {
            private_pem: private
                .to_pkcs8_pem(LineEnding::LF)
                .expect("encoding the EC private key")
                .as_str()
                .to_owned(),
            public_pem: private
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .expect("encoding the EC public key"),
        }
    }

    /// The server's RSA key, generated once per process (RSA generation is slow).
    fn rsa_ours() -> &'static KeyPair {
        static KEY: OnceLock<KeyPair> = OnceLock::new();
        KEY.get_or_init(Self::rsa)
    }

    /// Another RSA key, for tokens the server must not trust.
    fn rsa_impostor() -> &'static KeyPair {
        static KEY: OnceLock<KeyPair> = OnceLock::new();
        KEY.get_or_init(Self::rsa)
    }

    fn sign(&self, algorithm: Algorithm, claims: &Value) -> String {
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(self.private_pem.as_bytes()),
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.private_pem.as_bytes()),
            other => panic!("no key pairs for {other:?}"),
        }
        .expect("loading the private key");
        encode(algorithm, &key, claims)
    }
}

/// Keys configured with `algorithm` and `public_pem` in a key file.
fn asymmetric_keys(algorithm: &str, public_pem: &str) -> anyhow::Result<JwtKeys> {
    let scratch = ScratchDir::new("jwt");
    let path = scratch.path().join("public.pem");
    std::fs::write(&path, public_pem).expect("writing the public key");
    let path = path.to_str().expect("UTF-8 temp path");
    JwtKeys::from_config(&test_config(&[
        "--jwt-algorithm",
        algorithm,
        "--jwt-public-key-file",
        path,
    ]))
}

#[test]
fn rs256_tokens_verify_with_the_public_key_file() {
    let (ours, impostor) = (KeyPair::rsa_ours(), KeyPair::rsa_impostor());
    let ec = KeyPair::p256();
    let keys = asymmetric_keys("RS256", &ours.public_pem).expect("loading the RSA key");
    let mut claims = claims("mia");
    claims["name"] = json!("Mia");

    let user = assert_accepted(&keys, &ours.sign(Algorithm::RS256, &claims), "RS256 token");
    assert_eq!((user.id.as_str(), user.name.as_str()), ("mia", "Mia"));

    assert_rejected(
        &keys,
        &impostor.sign(Algorithm::RS256, &claims),
        "another RSA key",
    );
    assert_rejected(&keys, &ec.sign(Algorithm::ES256, &claims), "ES256 token");
    assert_rejected(
        &keys,
        &hs256_token(&claims, TEST_JWT_SECRET.as_bytes()),
        "HS256 token",
    );
    // The classic confusion attack: HMAC keyed with the public key the server trusts.
    assert_rejected(
        &keys,
        &hs256_token(&claims, ours.public_pem.as_bytes()),
        "HS256 keyed with the public key",
    );
    assert!(
        keys.sign("mia", None, Duration::from_secs(60)).is_err(),
        "RS256 keys must not sign"
    );
}

#[test]
fn es256_tokens_verify_with_the_public_key_file() {
    let ours = KeyPair::p256();
    let impostor = KeyPair::p256();
    let rsa = KeyPair::rsa_ours();
    let keys = asymmetric_keys("ES256", &ours.public_pem).expect("loading the EC key");
    let claims = claims("nina");

    let user = assert_accepted(&keys, &ours.sign(Algorithm::ES256, &claims), "ES256 token");
    assert_eq!((user.id.as_str(), user.name.as_str()), ("nina", "nina"));

    assert_rejected(
        &keys,
        &impostor.sign(Algorithm::ES256, &claims),
        "another EC key",
    );
    assert_rejected(&keys, &rsa.sign(Algorithm::RS256, &claims), "RS256 token");
    assert_rejected(
        &keys,
        &hs256_token(&claims, ours.public_pem.as_bytes()),
        "HS256 keyed with the public key",
    );
    assert_rejected(
        &keys,
        &ours.sign(Algorithm::ES256, &json!({ "sub": "nina" })),
        "ES256 token without exp",
    );
}

#[test]
fn unusable_public_key_files_fail_at_startup() {
    let rsa = KeyPair::rsa_ours();
    let ec = KeyPair::p256();

    assert!(
        asymmetric_keys("RS256", "not a key").is_err(),
        "garbage PEM"
    );
    assert!(
        asymmetric_keys("ES256", &rsa.public_pem).is_err(),
        "RSA key for ES256"
    );
    assert!(
        asymmetric_keys("RS256", &ec.public_pem).is_err(),
        "EC key for RS256"
    );
    let missing = test_config(&[
        "--jwt-algorithm",
        "RS256",
        "--jwt-public-key-file",
        "/nonexistent/switchboard/public.pem",
    ]);
    assert!(JwtKeys::from_config(&missing).is_err(), "missing key file");
}
