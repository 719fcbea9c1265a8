//! `turnpike token`: an HS256 token for the auth service, signed with the key the
//! directory's GatewayConfig names — for trying the quickstart out.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

pub fn mint(dir: &Path, sub: &str, ttl: u64) -> Result<String, String> {
    let rendered = crate::standalone::render_dir(dir)?;
    let jwt = rendered
        .auth
        .values()
        .find_map(|a| a.jwt.clone())
        .ok_or("no GatewayConfig in that directory sets authService.jwt")?;
    let secret = jwt
        .hmac_secret
        .ok_or("the GatewayConfig uses a public key: mint tokens with the matching private key")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = json!({"sub": sub, "iat": now, "exp": now + ttl});
    if let Some(i) = jwt.issuer {
        claims["iss"] = i.into();
    }
    if let Some(a) = jwt.audience {
        claims["aud"] = a.into();
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}
