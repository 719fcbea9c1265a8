//! Long-term credentials: static users and TURN REST API ephemeral credentials.

use std::collections::HashMap;

pub use turnpike_contract::credentials::{rest_expiry, rest_password};

use super::integrity::{Key, PasswordAlgorithm};

#[derive(Clone)]
pub enum Credentials {
    /// username → password.
    Static(HashMap<String, String>),
    /// TURN REST API: `username = "<expiry>:<userid>"`,
    /// `password = base64(HMAC-SHA1(secret, username))`. The first secret is current; the
    /// others were rotated out but stay valid for credentials already issued.
    Ephemeral(Vec<String>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Static(u) => write!(f, "Static({} users)", u.len()),
            Credentials::Ephemeral(s) => write!(f, "Ephemeral({} secrets)", s.len()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    UnknownUser,
    Expired,
    MalformedUsername,
}

impl Credentials {
    /// Every key `username` could be using right now (one per accepted secret).
    pub fn keys(
        &self,
        username: &str,
        realm: &str,
        alg: PasswordAlgorithm,
        unix: u64,
    ) -> Result<Vec<Key>, AuthError> {
        match self {
            Credentials::Static(users) => {
                let pw = users.get(username).ok_or(AuthError::UnknownUser)?;
                Ok(vec![Key::long_term(alg, username, realm, pw)])
            }
            Credentials::Ephemeral(secrets) => {
                let expiry = rest_expiry(username).ok_or(AuthError::MalformedUsername)?;
                if expiry <= unix {
                    return Err(AuthError::Expired);
                }
                Ok(secrets
                    .iter()
                    .map(|s| Key::long_term(alg, username, realm, &rest_password(s, username)))
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_username_forms() {
        assert_eq!(rest_expiry("1767225600:alice"), Some(1767225600));
        assert_eq!(rest_expiry("alice:1767225600"), Some(1767225600));
        assert_eq!(rest_expiry("1767225600"), Some(1767225600));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry("alice:bob"), None);
    }

    #[test]
    fn rest_password_matches_reference() {
        // Reference computed independently with openssl:
        // printf '1433895918506:my_username' | openssl dgst -sha1 -hmac 1234 -binary | base64
        assert_eq!(
            rest_password("1234", "1433895918506:my_username"),
            "1LvDyUFpAxqpTLksY42CXh79SyI="
        );
    }

    #[test]
    fn expired_and_rotated() {
        let c = Credentials::Ephemeral(vec!["new".into(), "old".into()]);
        assert_eq!(
            c.keys("100:u", "r", PasswordAlgorithm::Md5, 100)
                .unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            c.keys("101:u", "r", PasswordAlgorithm::Md5, 100)
                .unwrap()
                .len(),
            2
        );
    }
}
