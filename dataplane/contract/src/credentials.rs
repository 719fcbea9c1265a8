//! TURN REST API credentials (draft-uberti-behave-turn-rest): what the auth service hands
//! out and the dataplane checks. Both sides use this one formula.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The expiry (unix seconds) in a REST API username: `expiry:userid`, `userid:expiry` as
/// some coturn deployments spell it, or a bare `expiry` (coturn's client without a user).
pub fn rest_expiry(username: &str) -> Option<u64> {
    let Some((first, rest)) = username.split_once(':') else {
        return username.parse().ok();
    };
    if let Ok(t) = first.parse::<u64>() {
        return Some(t);
    }
    let last = rest.rsplit(':').next()?;
    last.parse::<u64>().ok()
}

/// The REST API password for `username` under `secret`.
pub fn rest_password(secret: &str, username: &str) -> String {
    let mut m = match Hmac::<Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    m.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}
