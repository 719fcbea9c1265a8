//! Caller authentication: a JWT verified against a Gateway's configured key. Only the one
//! algorithm the key implies is accepted, so `alg: none` and HS256-signed-with-the-public-key
//! confusion fail.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use turnpike_contract::cds::JwtConfig;

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;
/// The claim that limits which Gateways a token may get credentials for.
pub const GATEWAYS_CLAIM: &str = "turnpike.dev/gateways";

#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default, rename = "turnpike.dev/gateways")]
    pub gateways: Option<Vec<String>>,
}

impl Claims {
    /// May this token get credentials for `gateway`?
    pub fn allows(&self, gateway: &str) -> bool {
        self.gateways
            .as_ref()
            .is_none_or(|gs| gs.iter().any(|g| g == gateway))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the configured JWT key is unusable")]
    BadKey,
    #[error("invalid token: {0}")]
    Invalid(String),
}

fn key_and_algorithm(cfg: &JwtConfig) -> Result<(DecodingKey, Algorithm), JwtError> {
    if let Some(secret) = &cfg.hmac_secret {
        return Ok((
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ));
    }
    let pem = cfg.public_key_pem.as_deref().ok_or(JwtError::BadKey)?;
    if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::RS256));
    }
    DecodingKey::from_ec_pem(pem.as_bytes())
        .map(|k| (k, Algorithm::ES256))
        .map_err(|_| JwtError::BadKey)
}

/// Verifies `token` under `cfg`: signature with the configured algorithm only, `exp`
/// required, `nbf` checked, `iss` and `aud` when configured.
pub fn verify(cfg: &JwtConfig, token: &str) -> Result<Claims, JwtError> {
    let (key, alg) = key_and_algorithm(cfg)?;
    let mut v = Validation::new(alg);
    v.leeway = LEEWAY_SECS;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp"]);
    match &cfg.audience {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    if let Some(i) = &cfg.issuer {
        v.set_issuer(&[i]);
    }
    decode::<Claims>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| JwtError::Invalid(e.kind_name()))
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    /// A short reason without token contents (never echo secrets or tokens back).
    fn kind_name(&self) -> String {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "expired".into(),
            K::ImmatureSignature => "not yet valid".into(),
            K::InvalidAudience => "wrong audience".into(),
            K::InvalidIssuer => "wrong issuer".into(),
            K::InvalidSignature => "bad signature".into(),
            K::InvalidAlgorithm => "algorithm not accepted".into(),
            K::MissingRequiredClaim(c) => format!("missing claim {c}"),
            _ => "malformed".into(),
        }
    }
}
