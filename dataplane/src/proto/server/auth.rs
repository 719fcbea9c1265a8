//! Long-term credential checks (RFC 8489 §9.2): challenges with a stateless nonce, the
//! key an allocation keeps across secret and realm rotation, and 441 for a 5-tuple whose
//! allocation belongs to someone else.

use super::{RelayPorts, Reply, Server, live_mut};
use crate::proto::allocation::ClientKey;
use crate::proto::attr;
use crate::proto::auth::AuthError;
use crate::proto::error::ErrorCode;
use crate::proto::integrity::{self, IntegrityKind, Key, PasswordAlgorithm};
use crate::proto::message::{Class, Message, MessageBuilder, method};
use crate::proto::nonce::NonceCheck;
use crate::proto::stats::AuthFailure;

use super::Now;

/// A request whose MESSAGE-INTEGRITY checked out: the key and kind its answer is signed
/// with, and the user it counts against.
pub(super) struct Authenticated {
    pub(super) key: Key,
    kind: IntegrityKind,
    pub(super) username: Box<str>,
}

impl Authenticated {
    pub(super) fn sign(&self, b: &mut MessageBuilder<'_>) {
        b.integrity(self.key.as_bytes(), self.kind == IntegrityKind::Sha256);
    }
}

impl<P: RelayPorts> Server<P> {
    /// 401/438 with a fresh nonce and the realm, so the client can (re)try. Rate-limited
    /// per source IP: beyond the limit the request gets no answer.
    fn challenge(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
        code: ErrorCode,
    ) -> Reply {
        if !self.challenges.allow(client.addr.ip(), now.instant) {
            self.stats.challenges_suppressed += 1;
            return Reply::Silent;
        }
        let nonce = self.nonce.issue(now.unix, &client.addr);
        let realm = self.config.realm.as_bytes();
        self.respond(out, msg, Class::Error, None, |b| {
            b.error_code(code);
            b.attr(attr::REALM, realm);
            b.attr(attr::NONCE, &nonce);
        })
    }

    /// Checks the credentials of a request; `Err` is the answer to send instead.
    pub(super) fn authenticate(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Result<Authenticated, Reply> {
        let Some(kind) = integrity::integrity_kind(msg) else {
            return Err(self.challenge(now, client, msg, out, ErrorCode::UNAUTHORIZED));
        };
        let (Some(username), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(self.error(out, msg, ErrorCode::MISSING_CREDENTIALS, None));
        };
        if self.nonce.check(nonce, now.unix, &client.addr) == NonceCheck::Stale {
            self.stats.auth_failed(AuthFailure::StaleNonce);
            return Err(self.challenge(now, client, msg, out, ErrorCode::STALE_NONCE));
        }
        let Ok(username) = std::str::from_utf8(username) else {
            return Err(self.error(out, msg, ErrorCode::USERNAME_NOT_UTF8, None));
        };
        let alg = match msg.get(attr::PASSWORD_ALGORITHM) {
            None => PasswordAlgorithm::Md5,
            Some(v) => match attr::decode_password_algorithm(v) {
                Ok(alg) => alg,
                Err(_) => {
                    let code = ErrorCode::UNKNOWN_PASSWORD_ALGORITHM;
                    return Err(self.error(out, msg, code, None));
                }
            },
        };
        // An allocation keeps the key (and realm) it was created with: later requests are
        // checked against it first, so rotating the secret or the realm never breaks a
        // running allocation. Fresh credentials under the current realm also do, and then
        // replace the stored key.
        let existing = self.allocation_of(&client);
        let existing_id = existing.map(|(id, _)| id);
        let same_user = existing.is_some_and(|(_, a)| &*a.username == username);
        if let Some((_, a)) = existing
            && same_user
            && alg == PasswordAlgorithm::Md5
            && realm == a.realm.as_bytes()
            && integrity::verify(msg, a.key.as_bytes(), kind)
        {
            return Ok(Authenticated {
                key: a.key.clone(),
                kind,
                username: a.username.clone(),
            });
        }
        let had_allocation = existing.is_some();
        if realm != self.config.realm.as_bytes() {
            return Err(self.refuse(now, client, msg, out, AuthFailure::WrongRealm));
        }
        let keys = match self
            .config
            .credentials
            .keys(username, &self.config.realm, alg, now.unix)
        {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(client = %client.addr, username, reason = ?e, "authentication failed");
                let why = match e {
                    AuthError::UnknownUser => AuthFailure::UnknownUser,
                    AuthError::Expired => AuthFailure::Expired,
                    AuthError::MalformedUsername => AuthFailure::MalformedUsername,
                };
                return Err(self.refuse(now, client, msg, out, why));
            }
        };
        let Some(key) = keys
            .into_iter()
            .find(|k| integrity::verify(msg, k.as_bytes(), kind))
        else {
            tracing::debug!(client = %client.addr, username, "authentication failed: integrity mismatch");
            return Err(self.refuse(now, client, msg, out, AuthFailure::BadIntegrity));
        };
        let auth = Authenticated {
            key,
            kind,
            username: username.into(),
        };
        if had_allocation && !same_user && msg.method != method::ALLOCATE {
            // Valid credentials, but not the ones that created this allocation. (A new
            // Allocate on a taken 5-tuple is answered 437 by `allocate` instead.)
            self.stats.auth_failed(AuthFailure::WrongCredentials);
            return Err(self.error(out, msg, ErrorCode::WRONG_CREDENTIALS, Some(&auth)));
        }
        if same_user && let Some(a) = existing_id.and_then(|id| live_mut(&mut self.allocations, id))
        {
            a.key = auth.key.clone();
            a.realm = self.config.realm.as_str().into();
        }
        Ok(auth)
    }

    /// Wrong realm, unknown or expired user, or a MAC that does not match: counted, and
    /// challenged again so the client can retry with good credentials.
    fn refuse(
        &mut self,
        now: Now,
        client: ClientKey,
        msg: &Message<'_>,
        out: &mut [u8],
        why: AuthFailure,
    ) -> Reply {
        self.stats.auth_failed(why);
        self.challenge(now, client, msg, out, ErrorCode::UNAUTHORIZED)
    }
}
