//! `turnpike token`: an HS256 token for the auth service, signed with the key the
//! directory's GatewayConfig names — for trying the quickstart out.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::render::{RenderContext, render};
use crate::source::dir::load_dir;

pub fn mint(dir: &Path, sub: &str, ttl: u64) -> Result<String, String> {
    let objects = load_dir(dir).map_err(|errs| {
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let ctx = RenderContext {
        now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        standalone: true,
        dataplane_image: String::new(),
        cds_address: String::new(),
        previous_secrets: Default::default(),
    };
    let rendered = render(&objects, &ctx);
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
