//! The keys the emulator accepts: its long-term key, and the temporary credentials that
//! AssumeRole hands out. A temporary key is tied to the role it was issued for, to a session
//! token and to an expiry, so a client that assumes a role must then sign with exactly what STS
//! gave it, as against AWS.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use jiff::{SignedDuration, Timestamp};

use crate::sigv4::AuthError;

/// The account of every ARN the emulator makes.
pub const ACCOUNT: &str = "123456789012";

/// The IAM user that owns the long-term key.
const USER_ARN: &str = "arn:aws:iam::123456789012:user/kvs-emu";

/// A key a request may be signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub access_key: String,
    pub secret_key: String,
    /// What `x-amz-security-token` must hold: temporary credentials only.
    pub session_token: Option<String>,
}

/// One AssumeRole session: the role and the name the caller gave the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSession {
    pub role_arn: String,
    pub session_name: String,
}

impl RoleSession {
    /// The role's name, without its path: `arn:aws:iam::1:role/a/b/name` → `name`.
    pub fn role_name(&self) -> &str {
        self.role_arn.rsplit('/').next().unwrap_or_default()
    }

    /// `arn:aws:sts::<account>:assumed-role/<role name>/<session name>`.
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:sts::{ACCOUNT}:assumed-role/{}/{}",
            self.role_name(),
            self.session_name
        )
    }

    /// `AROA…:<session name>`: a role id derived from the role ARN, so the same role always
    /// has the same id.
    pub fn assumed_role_id(&self) -> String {
        // FNV-1a: stable across runs and platforms, unlike the std hasher.
        let hash = self
            .role_arn
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        format!("AROA{hash:017X}:{}", self.session_name)
    }
}

/// Who signed a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The long-term key (or anyone, when signatures are not checked).
    User,
    /// Temporary credentials issued by AssumeRole.
    Role(RoleSession),
}

impl Identity {
    /// The caller's ARN, as AccessDenied messages name it.
    pub fn arn(&self) -> String {
        match self {
            Identity::User => USER_ARN.to_owned(),
            Identity::Role(session) => session.arn(),
        }
    }
}

/// Temporary credentials, as AssumeRole returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporary {
    pub key: SigningKey,
    /// The end of their validity, to the second.
    pub expires: Timestamp,
    pub session: RoleSession,
}

/// Every key the emulator accepts.
#[derive(Debug)]
pub struct Keyring {
    long_term: SigningKey,
    /// Temporary credentials by access key.
    issued: Mutex<HashMap<String, Temporary>>,
}

impl Keyring {
    pub fn new(access_key: String, secret_key: String) -> Self {
        Keyring {
            long_term: SigningKey {
                access_key,
                secret_key,
                session_token: None,
            },
            issued: Mutex::default(),
        }
    }

    /// A poisoned lock is still usable: the map is never left half-changed.
    fn issued(&self) -> MutexGuard<'_, HashMap<String, Temporary>> {
        self.issued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// New temporary credentials for `session`, valid for `lifetime` (whole seconds) after
    /// `now`. Keys are numbered, so a run issues the same keys every time.
    pub fn issue(
        &self,
        session: RoleSession,
        now: Timestamp,
        lifetime: SignedDuration,
    ) -> Temporary {
        let mut issued = self.issued();
        let n = issued.len() + 1;
        let expires = Timestamp::from_second(now.as_second().saturating_add(lifetime.as_secs()))
            .unwrap_or(Timestamp::MAX);
        let temporary = Temporary {
            key: SigningKey {
                // 20 characters, like AWS access keys; ASIA marks temporary ones.
                access_key: format!("ASIAKVSEMU{n:010}"),
                secret_key: format!("kvs-emu-temporary-secret-{n:015}"),
                session_token: Some(format!("kvs-emu-session-token-{n:010}")),
            },
            expires,
            session,
        };
        issued.insert(temporary.key.access_key.clone(), temporary.clone());
        temporary
    }

    /// The key named `access_key` and whose it is. Temporary credentials past their expiry at
    /// `now` are refused.
    pub fn find(
        &self,
        access_key: &str,
        now: Timestamp,
    ) -> Result<(SigningKey, Identity), AuthError> {
        if access_key == self.long_term.access_key {
            return Ok((self.long_term.clone(), Identity::User));
        }
        let issued = self.issued();
        let temporary = issued.get(access_key).ok_or(AuthError::UnknownKey)?;
        if now >= temporary.expires {
            return Err(AuthError::ExpiredToken);
        }
        Ok((
            temporary.key.clone(),
            Identity::Role(temporary.session.clone()),
        ))
    }

    /// The role a temporary access key was issued for, expired or not (for the request log).
    pub fn role_of(&self, access_key: &str) -> Option<String> {
        self.issued()
            .get(access_key)
            .map(|t| t.session.role_arn.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/team/reader";

    fn session() -> RoleSession {
        RoleSession {
            role_arn: ROLE.into(),
            session_name: "kvs-dl".into(),
        }
    }

    #[test]
    fn the_long_term_key_is_the_user() {
        let keys = Keyring::new("AK".into(), "secret".into());
        let (key, identity) = keys.find("AK", Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(key.secret_key, "secret");
        assert_eq!(key.session_token, None);
        assert_eq!(identity, Identity::User);
        assert_eq!(identity.arn(), "arn:aws:iam::123456789012:user/kvs-emu");
        assert_eq!(
            keys.find("AKX", Timestamp::UNIX_EPOCH),
            Err(AuthError::UnknownKey)
        );
        assert_eq!(keys.role_of("AK"), None);
    }

    #[test]
    fn temporary_keys_belong_to_their_role_until_they_expire() {
        let keys = Keyring::new("AK".into(), "secret".into());
        let now: Timestamp = "2026-11-25T18:00:00.750Z".parse().unwrap();
        let first = keys.issue(session(), now, SignedDuration::from_hours(1));
        let second = keys.issue(session(), now, SignedDuration::from_hours(1));
        assert_eq!(first.key.access_key, "ASIAKVSEMU0000000001");
        assert_eq!(first.key.access_key.len(), 20);
        assert_eq!(first.key.secret_key.len(), 40);
        assert_ne!(first.key, second.key);
        assert_eq!(first.expires.to_string(), "2026-11-25T19:00:00Z");

        let (key, identity) = keys.find(&first.key.access_key, now).unwrap();
        assert_eq!(key, first.key);
        assert_eq!(identity, Identity::Role(session()));
        assert_eq!(
            identity.arn(),
            "arn:aws:sts::123456789012:assumed-role/reader/kvs-dl"
        );
        assert_eq!(keys.role_of(&second.key.access_key).as_deref(), Some(ROLE));

        let later = first.expires;
        assert_eq!(
            keys.find(&first.key.access_key, later),
            Err(AuthError::ExpiredToken)
        );
        assert_eq!(keys.role_of(&first.key.access_key).as_deref(), Some(ROLE));
    }

    #[test]
    fn role_ids_are_stable() {
        let id = session().assumed_role_id();
        assert!(id.starts_with("AROA"));
        assert!(id.ends_with(":kvs-dl"));
        assert_eq!(id.len(), "AROA".len() + 17 + ":kvs-dl".len());
        assert_eq!(id, session().assumed_role_id());
    }
}
