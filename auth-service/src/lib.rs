//! Turnpike's auth service (`GET /ice-config`). The HTTP API arrives with issue #4; for now
//! this crate holds the credential helpers the service will use, shared with the dataplane.

pub use turnpike_dataplane::proto::auth::rest_password;

/// A TURN REST API username and password for `userid`, valid until `expiry` (Unix seconds).
pub fn ephemeral_credential(secret: &str, userid: &str, expiry: u64) -> (String, String) {
    let username = format!("{expiry}:{userid}");
    let password = rest_password(secret, &username);
    (username, password)
}
