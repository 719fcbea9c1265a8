//! The HTTP API against an in-memory gateway table: every status code, parameter and JWT
//! edge case.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;
use turnpike_auth::http::{AppState, router};
use turnpike_auth::rest_password;
use turnpike_contract::cds::{AuthServiceConfig, GatewaySnapshot, JwtConfig};
use turnpike_contract::config::DataplaneConfig;

const HS_KEY: &str = "hs256-test-key-of-good-length";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn snapshot(name: &str, jwt: Option<JwtConfig>, anonymous: bool) -> GatewaySnapshot {
    GatewaySnapshot {
        config: DataplaneConfig::parse(&format!(
            "version: v1alpha1\nname: {name}\nrealm: r\nauth: {{type: ephemeral, secret: turn-secret}}\n\
             listeners:\n  - {{name: udp, protocol: TURN-UDP, address: 0.0.0.0, port: 3478, publicAddress: 203.0.113.5}}\n  \
             - {{name: alt, protocol: TURN-UDP, address: 0.0.0.0, port: 3479, publicAddress: 203.0.113.5}}\n  \
             - {{name: tcp, protocol: TURN-TCP, address: 0.0.0.0, port: 3478, publicAddress: 203.0.113.5}}\n"
        ))
        .unwrap()
        .into_config(),
        auth: Some(AuthServiceConfig {
            ttl: 3600,
            max_ttl: 7200,
            allow_anonymous: anonymous,
            jwt,
        }),
    }
}

fn hs_config() -> JwtConfig {
    JwtConfig {
        issuer: Some("https://app.example".into()),
        audience: Some("turnpike".into()),
        hmac_secret: Some(HS_KEY.into()),
        public_key_pem: None,
    }
}

fn state(gateways: Vec<GatewaySnapshot>) -> AppState {
    let s = AppState::new();
    let map: BTreeMap<String, GatewaySnapshot> = gateways
        .into_iter()
        .map(|g| (g.config.name.clone(), g))
        .collect();
    s.gateways.store(Arc::new(map));
    s
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "alice", "iss": "https://app.example", "aud": "turnpike", "exp": now() + 300, "nbf": now() - 10});
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    c
}

fn hs_token(extra: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims(extra),
        &EncodingKey::from_secret(HS_KEY.as_bytes()),
    )
    .unwrap()
}

async fn get(s: &AppState, uri: &str, token: Option<&str>) -> (StatusCode, String, Value) {
    let mut req = Request::get(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = router(s.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let headers = format!("{}|{}", header("content-type"), header("cache-control"));
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, v)
}

#[tokio::test]
async fn no_config_yet_is_503_problem_json() {
    let s = AppState::new();
    let (st, headers, body) = get(&s, "/ice-config", Some(&hs_token(json!({})))).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.starts_with("application/problem+json"), "{headers}");
    assert_eq!(body["status"], 503);
    assert_eq!(
        get(&s, "/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn valid_token_gets_an_rtc_configuration() {
    let s = state(vec![snapshot("ns/gw", Some(hs_config()), false)]);
    let (st, headers, body) = get(&s, "/ice-config", Some(&hs_token(json!({})))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(headers.ends_with("|no-store"), "{headers}");
    assert_eq!(body["iceTransportPolicy"], "relay");
    let server = &body["iceServers"][0];
    assert_eq!(
        server["urls"],
        json!([
            "turn:203.0.113.5:3478?transport=udp",
            "turn:203.0.113.5:3479?transport=udp",
            "turn:203.0.113.5:3478?transport=tcp"
        ])
    );
    let username = server["username"].as_str().unwrap();
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "alice", "userid defaults to sub");
    let expiry: u64 = expiry.parse().unwrap();
    assert!(
        (now() + 3590..=now() + 3610).contains(&expiry),
        "default ttl"
    );
    assert_eq!(server["credential"], rest_password("turn-secret", username));
    assert_eq!(get(&s, "/readyz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn parameters() {
    let s = state(vec![
        snapshot("ns/gw", Some(hs_config()), false),
        snapshot("ns/other", Some(hs_config()), false),
    ]);
    let t = hs_token(json!({}));
    let (st, _, body) = get(&s, "/ice-config", Some(&t)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body["iceServers"].as_array().unwrap().len(),
        2,
        "one entry per Gateway"
    );
    let (_, _, body) = get(
        &s,
        "/ice-config?gateway=ns/gw&listener=alt&userid=bob&ttl=999999&iceTransportPolicy=all",
        Some(&t),
    )
    .await;
    assert_eq!(body["iceServers"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["iceServers"][0]["urls"],
        json!(["turn:203.0.113.5:3479?transport=udp"])
    );
    assert_eq!(body["iceTransportPolicy"], "all");
    let username = body["iceServers"][0]["username"].as_str().unwrap();
    let expiry: u64 = username.split(':').next().unwrap().parse().unwrap();
    assert!(expiry <= now() + 7200 + 1, "ttl clamped to maxTTL");
    assert!(username.ends_with(":bob"));
    for (uri, code) in [
        ("/ice-config?ttl=0", StatusCode::BAD_REQUEST),
        ("/ice-config?ttl=abc", StatusCode::BAD_REQUEST),
        (
            "/ice-config?iceTransportPolicy=public",
            StatusCode::BAD_REQUEST,
        ),
        ("/ice-config?userid=a:b", StatusCode::BAD_REQUEST),
        ("/ice-config?gateway=gw", StatusCode::BAD_REQUEST),
        ("/ice-config?gateway=ns/nope", StatusCode::NOT_FOUND),
        (
            "/ice-config?gateway=ns/gw&listener=dtls",
            StatusCode::NOT_FOUND,
        ),
        ("/nope", StatusCode::NOT_FOUND),
    ] {
        let (st, headers, body) = get(&s, uri, Some(&t)).await;
        assert_eq!(st, code, "{uri}: {body}");
        assert!(
            headers.starts_with("application/problem+json"),
            "{uri}: {headers}"
        );
    }
    // STUNner's /ice names: namespace + gateway, service=turn.
    let (st, _, body) = get(
        &s,
        "/ice?service=turn&namespace=ns&gateway=other&username=carol",
        Some(&t),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(
        body["iceServers"][0]["username"]
            .as_str()
            .unwrap()
            .ends_with(":carol")
    );
    assert_eq!(
        get(&s, "/ice?service=stun", Some(&t)).await.0,
        StatusCode::BAD_REQUEST
    );
    // TURN REST API form.
    let (st, _, body) = get(&s, "/?service=turn&username=dave&ttl=60", Some(&t)).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["ttl"], 60);
    assert_eq!(
        body["password"],
        rest_password("turn-secret", body["username"].as_str().unwrap())
    );
    assert_eq!(get(&s, "/", Some(&t)).await.0, StatusCode::BAD_REQUEST);
}

fn base64url(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[tokio::test]
async fn token_edge_cases() {
    let s = state(vec![snapshot("ns/gw", Some(hs_config()), false)]);
    let (st, _, body) = get(&s, "/ice-config", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "missing bearer token");
    let without_exp = {
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("exp");
        encode(
            &Header::new(Algorithm::HS256),
            &c,
            &EncodingKey::from_secret(HS_KEY.as_bytes()),
        )
        .unwrap()
    };
    let cases = [
        ("expired", hs_token(json!({"exp": now() - 120}))),
        ("not yet valid", hs_token(json!({"nbf": now() + 300}))),
        ("wrong audience", hs_token(json!({"aud": "someone-else"}))),
        (
            "wrong issuer",
            hs_token(json!({"iss": "https://evil.example"})),
        ),
        (
            "bad signature",
            encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(b"other-key"),
            )
            .unwrap(),
        ),
        ("missing claim exp", without_exp),
    ];
    for (why, token) in cases {
        let (st, _, body) = get(&s, "/ice-config", Some(&token)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{why}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
        let text = body.to_string();
        assert!(!text.contains(HS_KEY) && !text.contains("turn-secret") && !text.contains(&token));
    }
    // alg: none
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(claims(json!({})).to_string().as_bytes());
    let (st, _, _) = get(&s, "/ice-config", Some(&format!("{header}.{payload}."))).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "alg none");
    assert_eq!(
        get(&s, "/ice-config", Some("not-a-jwt")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A token limited to other Gateways.
    let limited = hs_token(json!({"turnpike.dev/gateways": ["ns/other"]}));
    assert_eq!(
        get(&s, "/ice-config", Some(&limited)).await.0,
        StatusCode::FORBIDDEN
    );
    let allowed = hs_token(json!({"turnpike.dev/gateways": ["ns/gw"]}));
    assert_eq!(
        get(&s, "/ice-config", Some(&allowed)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn asymmetric_keys_and_algorithm_confusion() {
    // ES256 with a key pair made here.
    let kp = rcgen::KeyPair::generate().unwrap();
    let es = JwtConfig {
        public_key_pem: Some(kp.public_key_pem()),
        hmac_secret: None,
        ..hs_config()
    };
    let s = state(vec![snapshot("ns/gw", Some(es.clone()), false)]);
    let sign_es = |kp: &rcgen::KeyPair| {
        encode(
            &Header::new(Algorithm::ES256),
            &claims(json!({})),
            &EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        get(&s, "/ice-config", Some(&sign_es(&kp))).await.0,
        StatusCode::OK
    );
    // HS256 signed with the public key as the "secret": the classic confusion attack.
    let pem = es.public_key_pem.clone().unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(json!({})),
        &EncodingKey::from_secret(pem.as_bytes()),
    )
    .unwrap();
    let (st, _, body) = get(&s, "/ice-config", Some(&forged)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    // A token of another key pair.
    let other = rcgen::KeyPair::generate().unwrap();
    assert_eq!(
        get(&s, "/ice-config", Some(&sign_es(&other))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn anonymous_access_only_when_allowed() {
    let s = state(vec![
        snapshot("ns/open", None, true),
        snapshot("ns/closed", Some(hs_config()), false),
    ]);
    let (st, _, body) = get(&s, "/ice-config", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        body["iceServers"].as_array().unwrap().len(),
        1,
        "only the open Gateway"
    );
    assert!(
        body["iceServers"][0]["username"]
            .as_str()
            .unwrap()
            .ends_with(":anonymous")
    );
    assert_eq!(
        get(&s, "/ice-config?gateway=ns/closed", None).await.0,
        StatusCode::UNAUTHORIZED
    );
}
