//! Gateway API conditions, built deterministically (the time is an input).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types and reasons as Gateway API defines them.
pub mod reason {
    pub const ACCEPTED: &str = "Accepted";
    pub const PROGRAMMED: &str = "Programmed";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const CONFLICTED: &str = "Conflicted";
    pub const NO_CONFLICTS: &str = "NoConflicts";
    pub const INVALID: &str = "Invalid";
    pub const PENDING: &str = "Pending";
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    pub const UNSUPPORTED_PROTOCOL: &str = "UnsupportedProtocol";
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    pub const PROTOCOL_CONFLICT: &str = "ProtocolConflict";
    pub const LISTENERS_NOT_VALID: &str = "ListenersNotValid";
    pub const ADDRESS_NOT_ASSIGNED: &str = "AddressNotAssigned";
    pub const INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";
    pub const REF_NOT_PERMITTED: &str = "RefNotPermitted";
    pub const BACKEND_NOT_FOUND: &str = "BackendNotFound";
    pub const INVALID_KIND: &str = "InvalidKind";
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    pub const NOT_ALLOWED_BY_LISTENERS: &str = "NotAllowedByListeners";
    pub const NO_MATCHING_PARENT: &str = "NoMatchingParent";
    pub const NO_MATCHING_LISTENER_HOSTNAME: &str = "NoMatchingListenerHostname";
}

/// Builds conditions stamped with one time and generation.
#[derive(Clone)]
pub struct Stamp {
    pub time: Time,
    pub generation: Option<i64>,
}

impl Stamp {
    /// `Accepted` True.
    pub fn accepted(&self, message: impl Into<String>) -> Condition {
        self.cond(reason::ACCEPTED, true, reason::ACCEPTED, message)
    }

    /// `Accepted` True with another reason (`ListenersNotValid`: some listeners are not).
    pub fn accepted_because(&self, why: &str, message: impl Into<String>) -> Condition {
        self.cond(reason::ACCEPTED, true, why, message)
    }

    /// `Accepted` False.
    pub fn rejected(&self, why: &str, message: impl Into<String>) -> Condition {
        self.cond(reason::ACCEPTED, false, why, message)
    }

    /// `Programmed` True.
    pub fn programmed(&self, message: impl Into<String>) -> Condition {
        self.cond(reason::PROGRAMMED, true, reason::PROGRAMMED, message)
    }

    /// `Programmed` False.
    pub fn not_programmed(&self, why: &str, message: impl Into<String>) -> Condition {
        self.cond(reason::PROGRAMMED, false, why, message)
    }

    /// `ResolvedRefs` True.
    pub fn resolved(&self, message: impl Into<String>) -> Condition {
        self.cond(reason::RESOLVED_REFS, true, reason::RESOLVED_REFS, message)
    }

    /// `ResolvedRefs` False.
    pub fn unresolved(&self, why: &str, message: impl Into<String>) -> Condition {
        self.cond(reason::RESOLVED_REFS, false, why, message)
    }

    /// `Conflicted` False.
    pub fn no_conflicts(&self) -> Condition {
        self.cond(
            reason::CONFLICTED,
            false,
            reason::NO_CONFLICTS,
            "no conflicts",
        )
    }

    /// `Conflicted` True.
    pub fn conflicted(&self, message: impl Into<String>) -> Condition {
        self.cond(reason::CONFLICTED, true, reason::PROTOCOL_CONFLICT, message)
    }

    fn cond(&self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            last_transition_time: self.time.clone(),
            observed_generation: self.generation,
        }
    }

    pub fn with_generation(&self, generation: Option<i64>) -> Stamp {
        Stamp {
            time: self.time.clone(),
            generation,
        }
    }
}

/// True when `conds` has `type_` with status True.
pub fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}
