//! User token verification ([`JwtKeys`]), which the REST extractor and the Socket.IO handshake
//! both call: every failure must be `UNAUTHORIZED`. RS256 and ES256 keys are in `public_keys`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard::auth::{AuthUser, JwtKeys};
use switchboard::error::ErrorCode;

use crate::common::{TEST_JWT_SECRET, hs256_token, test_config, unix_now};

mod public_keys;

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "switchboard";

fn keys(args: &[&str]) -> JwtKeys {
    JwtKeys::from_config(&test_config(args)).expect("loading JWT keys")
}

fn hs256_keys() -> JwtKeys {
    keys(&["--jwt-secret", TEST_JWT_SECRET])
}

/// Valid claims for `sub`, expiring in an hour.
fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "exp": unix_now() + 3600 })
}

fn encode(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("encoding a token")
}

#[track_caller]
fn assert_accepted(keys: &JwtKeys, token: &str, why: &str) -> AuthUser {
    keys.verify(token)
        .unwrap_or_else(|e| panic!("{why}: refused ({e})"))
}

#[track_caller]
fn assert_rejected(keys: &JwtKeys, token: &str, why: &str) {
    match keys.verify(token) {
        Ok(user) => panic!("{why}: accepted as {user:?}"),
        Err(e) => assert_eq!(e.code(), ErrorCode::Unauthorized, "{why}: {e}"),
    }
}

#[test]
fn signed_tokens_verify_to_the_user_and_name() {
    let keys = hs256_keys();
    let token = keys
        .sign("alice", Some("Alice Liddell"), Duration::from_secs(60))
        .expect("signing");

    let user = assert_accepted(&keys, &token, "own token");

    assert_eq!(
        user,
        AuthUser {
            id: "alice".into(),
            name: "Alice Liddell".into(),
            name_from_token: true,
        }
    );
}

#[test]
fn the_name_falls_back_to_the_user_id() {
    let keys = hs256_keys();
    let unnamed = keys
        .sign("bob", None, Duration::from_secs(60))
        .expect("signing");
    let blank = hs256_token(
        &json!({ "sub": "bob", "name": "   ", "exp": unix_now() + 60 }),
        TEST_JWT_SECRET.as_bytes(),
    );

    for token in [unnamed, blank] {
        assert_eq!(assert_accepted(&keys, &token, "no usable name").name, "bob");
    }
}

#[test]
fn tokens_from_another_hs256_issuer_with_the_secret_verify() {
    let keys = hs256_keys();
    let token = hs256_token(
        &json!({ "sub": "carol", "name": "Carol", "exp": unix_now() + 60, "iat": unix_now() }),
        TEST_JWT_SECRET.as_bytes(),
    );

    let user = assert_accepted(&keys, &token, "third-party HS256 token");

    assert_eq!(user.id, "carol");
    assert_eq!(user.name, "Carol");
}

#[test]
fn a_token_without_exp_is_rejected() {
    let token = hs256_token(&json!({ "sub": "dave" }), TEST_JWT_SECRET.as_bytes());

    assert_rejected(&hs256_keys(), &token, "no exp");
}

#[test]
fn expiry_is_judged_with_the_configured_leeway() {
    let default_leeway = hs256_keys();
    let just_expired = hs256_token(
        &json!({ "sub": "erin", "exp": unix_now() - 10 }),
        TEST_JWT_SECRET.as_bytes(),
    );
    let long_expired = hs256_token(
        &json!({ "sub": "erin", "exp": unix_now() - 120 }),
        TEST_JWT_SECRET.as_bytes(),
    );

    assert_accepted(&default_leeway, &just_expired, "10 s past exp, 30 s leeway");
    assert_rejected(
        &default_leeway,
        &long_expired,
        "120 s past exp, 30 s leeway",
    );

    let no_leeway = keys(&["--jwt-secret", TEST_JWT_SECRET, "--jwt-leeway-ms", "0"]);
    assert_rejected(&no_leeway, &just_expired, "10 s past exp, no leeway");
}

#[test]
fn a_token_signed_with_another_secret_is_rejected() {
    let token = hs256_token(&claims("frank"), b"some-other-secret-entirely");

    assert_rejected(&hs256_keys(), &token, "other secret");
}

#[test]
fn unsigned_and_tampered_tokens_are_rejected() {
    let keys = hs256_keys();
    let payload = URL_SAFE_NO_PAD.encode(claims("mallory").to_string());
    for header in [
        json!({ "alg": "none", "typ": "JWT" }),
        json!({ "alg": "None", "typ": "JWT" }),
        json!({ "alg": "HS256", "typ": "JWT" }),
    ] {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        assert_rejected(&keys, &format!("{header}.{payload}."), "empty signature");
        assert_rejected(&keys, &format!("{header}.{payload}"), "no signature part");
    }

    // A genuine signature over someone else's claims.
    let genuine = hs256_token(&claims("grace"), TEST_JWT_SECRET.as_bytes());
    let mut parts: Vec<&str> = genuine.split('.').collect();
    parts[1] = &payload;
    assert_rejected(&keys, &parts.join("."), "payload swapped under a signature");

    for garbage in ["", "not-a-jwt", "a.b.c", "Bearer x"] {
        assert_rejected(&keys, garbage, "garbage");
    }
}

#[test]
fn the_user_id_must_be_1_to_128_characters() {
    let keys = hs256_keys();
    let token = |sub: &Value| {
        hs256_token(
            &json!({ "sub": sub, "exp": unix_now() + 60 }),
            TEST_JWT_SECRET.as_bytes(),
        )
    };

    assert_rejected(&keys, &token(&json!("")), "empty sub");
    assert_rejected(&keys, &token(&json!("a".repeat(129))), "129-character sub");
    assert_rejected(&keys, &token(&json!(42)), "numeric sub");
    assert_rejected(
        &keys,
        &hs256_token(
            &json!({ "exp": unix_now() + 60 }),
            TEST_JWT_SECRET.as_bytes(),
        ),
        "no sub",
    );

    // Characters, not bytes: 128 two-byte characters are fine.
    let longest = "é".repeat(128);
    let user = assert_accepted(&keys, &token(&json!(longest)), "128-character sub");
    assert_eq!(user.id, longest);
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let keys = keys(&[
        "--jwt-secret",
        TEST_JWT_SECRET,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]);
    let token = |iss: &str, aud: &str| {
        hs256_token(
            &json!({ "sub": "heidi", "exp": unix_now() + 60, "iss": iss, "aud": aud }),
            TEST_JWT_SECRET.as_bytes(),
        )
    };

    assert_accepted(&keys, &token(ISSUER, AUDIENCE), "matching iss and aud");
    assert_rejected(&keys, &token("https://evil.example", AUDIENCE), "wrong iss");
    assert_rejected(&keys, &token(ISSUER, "another-service"), "wrong aud");

    // `switchboard token` must mint tokens its own server accepts.
    let minted = keys
        .sign("heidi", None, Duration::from_secs(60))
        .expect("signing");
    assert_accepted(&keys, &minted, "token minted with iss/aud configured");
}

#[test]
fn without_a_configured_audience_a_token_audience_is_ignored() {
    let token = hs256_token(
        &json!({ "sub": "ivan", "exp": unix_now() + 60, "aud": "whatever" }),
        TEST_JWT_SECRET.as_bytes(),
    );

    assert_accepted(&hs256_keys(), &token, "aud present, none configured");
}

#[test]

fn a_missing_issuer_is_rejected_when_one_is_required() {
    let keys = keys(&["--jwt-secret", TEST_JWT_SECRET, "--jwt-issuer", ISSUER]);

    let token = hs256_token(&claims("judy"), TEST_JWT_SECRET.as_bytes());

    assert_rejected(&keys, &token, "no iss while JWT_ISSUER is set");
}

#[test]

fn a_missing_audience_is_rejected_when_one_is_required() {
    let keys = keys(&["--jwt-secret", TEST_JWT_SECRET, "--jwt-audience", AUDIENCE]);

    let token = hs256_token(&claims("judy"), TEST_JWT_SECRET.as_bytes());

    assert_rejected(&keys, &token, "no aud while JWT_AUDIENCE is set");
}

#[test]

fn an_audience_list_containing_ours_is_accepted() {
    let keys = keys(&["--jwt-secret", TEST_JWT_SECRET, "--jwt-audience", AUDIENCE]);

    let token = hs256_token(
        &json!({ "sub": "kim", "exp": unix_now() + 60, "aud": [AUDIENCE, "another-service"] }),
        TEST_JWT_SECRET.as_bytes(),
    );

    assert_accepted(&keys, &token, "aud list containing ours");
}

#[test]

fn a_token_not_valid_yet_is_rejected() {
    let token = hs256_token(
        &json!({ "sub": "leo", "exp": unix_now() + 7200, "nbf": unix_now() + 3600 }),
        TEST_JWT_SECRET.as_bytes(),
    );

    assert_rejected(&hs256_keys(), &token, "nbf an hour ahead");
}

#[tokio::test]
async fn test_app_tokens_are_accepted_by_its_server() {
    let app = crate::common::spawn_app(crate::common::Backend::Sqlite).await;

    let named = assert_accepted(
        &app.core.jwt,
        &app.token_named("olga", Some("Olga")),
        "named",
    );
    let plain = assert_accepted(&app.core.jwt, &app.token("pat"), "unnamed");

    assert_eq!((named.id.as_str(), named.name.as_str()), ("olga", "Olga"));
    assert_eq!((plain.id.as_str(), plain.name.as_str()), ("pat", "pat"));
}
