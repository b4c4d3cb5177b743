//! Users, roles and their credentials.
//!
//! Passwords are kept as Argon2id hashes (PHC strings). A TOTP second factor
//! (RFC 6238: HMAC-SHA-1, 6 digits, 30 s steps, one step of skew) is
//! required for owners and auditors and optional for cashiers; its secret
//! is sealed under the data directory's storage key, and each code is
//! accepted once (the last accepted step is stored).

use crate::audit::{self, Change};
use crate::store::{Store, StoreError};
use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use paycrypto::totp::Totp;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// Purpose TOTP secrets are sealed under.
const TOTP_PURPOSE: &str = "merchant user totp";
/// Issuer shown by authenticator apps.
pub const TOTP_ISSUER: &str = "posnet";
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (bounds hashing work per attempt).
pub const MAX_PASSWORD: usize = 256;
/// Longest user name.
pub const MAX_NAME: usize = 64;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: sales, reconciliation, the audit log.
    Owner,
    /// Sales and transactions of the day-to-day.
    Cashier,
    /// Reads everything, changes nothing but reconciliations it runs.
    Auditor,
}

impl Role {
    /// From its stored name.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "owner" => Some(Role::Owner),
            "cashier" => Some(Role::Cashier),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Cashier => "cashier",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role must give a TOTP code to log in.
    pub fn requires_totp(self) -> bool {
        matches!(self, Role::Owner | Role::Auditor)
    }
}

/// A user management or login operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The name is empty, too long, or has characters other than letters,
    /// digits, `.`, `_`, `-` and `@`.
    #[error("user name must be 1 to {MAX_NAME} letters, digits, '.', '_', '-' or '@'")]
    Name,
    /// The password is too short or too long.
    #[error("password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")]
    Password,
    /// A user of that name exists.
    #[error("user {0:?} exists")]
    Exists(String),
    /// No user of that name.
    #[error("no user {0:?}")]
    NotFound(String),
    /// Password hashing failed.
    #[error("password hashing: {0}")]
    Hash(String),
    /// TOTP setup failed.
    #[error("TOTP: {0}")]
    Totp(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for UserError {
    fn from(e: rusqlite::Error) -> Self {
        UserError::Store(e.into())
    }
}

/// A user as pages see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// A user just created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The user.
    pub user: User,
    /// `otpauth://totp/...` URI for an authenticator app, shown once (none
    /// when the user has no second factor).
    pub otpauth: Option<Zeroizing<String>>,
}

/// Argon2id with the given cost; [`PasswordCost::default`] is argon2's
/// default (19 MiB, 2 passes, 1 lane, as OWASP recommends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        PasswordCost {
            m_kib: argon2::Params::DEFAULT_M_COST,
            t: argon2::Params::DEFAULT_T_COST,
            p: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl PasswordCost {
    fn hasher(self) -> Result<Argon2<'static>, UserError> {
        let params = argon2::Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|e| UserError::Hash(e.to_string()))?;
        Ok(Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            params,
        ))
    }

    /// The PHC string of `password`, with a random salt.
    pub fn hash(self, password: &str) -> Result<String, UserError> {
        self.hasher()?
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| UserError::Hash(e.to_string()))
    }
}

/// Whether `password` matches the PHC string `hash`.
pub fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).ok().is_some_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash no password matches, checked when the user does not exist so
/// that a wrong name costs as long as a wrong password.
pub fn decoy_hash(cost: PasswordCost) -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("operating system random source");
        cost.hash(&hex::encode(random)).unwrap_or_default()
    })
}

/// The TOTP generator of a secret ([`paycrypto::totp`]: RFC 6238 with
/// SHA-1, 6 digits, 30 s, one step of skew, each code once), labelled for
/// `account`.
pub fn totp(secret: &[u8], account: &str) -> Result<Totp, UserError> {
    Totp::new(secret, TOTP_ISSUER, &account.replace(':', "_"))
        .map_err(|e| UserError::Totp(e.to_string()))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// A user to add.
#[derive(Clone, Copy)]
pub struct NewUser<'a> {
    /// Login name.
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// Password in clear (hashed here, never stored).
    pub password: &'a str,
    /// A second factor even when the role does not require one.
    pub totp: bool,
}

impl std::fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("totp", &self.totp)
            .finish_non_exhaustive()
    }
}

/// Adds a user, hashing its password at `cost`; a TOTP secret is made when
/// the role requires one or the user asks for it. Audited under `actor`.
pub fn add_user(
    store: &Store,
    new: &NewUser<'_>,
    cost: PasswordCost,
    actor: &str,
    now: i64,
) -> Result<Created, UserError> {
    let NewUser {
        name,
        role,
        password,
        totp: totp_wanted,
    } = *new;
    if !valid_name(name) {
        return Err(UserError::Name);
    }
    let length = password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&length) {
        return Err(UserError::Password);
    }
    let hash = cost.hash(password)?;
    let (sealed, otpauth) = if role.requires_totp() || totp_wanted {
        let secret = pki::Secret::random(20);
        let uri = totp(secret.expose(), name)?.otpauth_uri();
        (
            Some(store.key().seal(TOTP_PURPOSE, secret.expose())),
            Some(uri),
        )
    } else {
        (None, None)
    };
    store.write(|tx| -> Result<Created, UserError> {
        let exists: Option<i64> = tx
            .query_row("SELECT id FROM users WHERE name = ?1", params![name], |r| r.get(0))
            .optional()?;
        if exists.is_some() {
            return Err(UserError::Exists(name.into()));
        }
        tx.execute(
            "INSERT INTO users (name, role, password_hash, totp_sealed, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, role.name(), hash, sealed, now],
        )?;
        let id = tx.last_insert_rowid();
        audit::append(
            tx,
            &Change {
                actor,
                action: "user.add",
                subject: &format!("user:{name}"),
                before: None,
                after: Some(serde_json::json!({ "role": role.name(), "totp": sealed.is_some() })),
            },
            now,
        )?;
        Ok(Created {
            user: User {
                id,
                name: name.into(),
                role,
            },
            otpauth,
        })
    })
}

/// A user row with what login needs.
#[derive(Debug)]
pub struct Credentials {
    /// The user.
    pub user: User,
    /// PHC string.
    pub password_hash: String,
    /// Sealed TOTP secret.
    pub totp_sealed: Option<Vec<u8>>,
    /// Last TOTP step accepted.
    pub totp_step: i64,
}

/// The enabled user `name` with credentials.
pub fn credentials(conn: &Connection, name: &str) -> Result<Option<Credentials>, StoreError> {
    let row = conn
        .query_row(
            "SELECT id, name, role, password_hash, totp_sealed, totp_step FROM users
             WHERE name = ?1 AND disabled = 0",
            params![name],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<Vec<u8>>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            },
        )
        .optional()?;
    Ok(
        row.and_then(|(id, name, role, password_hash, totp_sealed, totp_step)| {
            Some(Credentials {
                user: User {
                    id,
                    name,
                    role: Role::from_name(&role)?,
                },
                password_hash,
                totp_sealed,
                totp_step,
            })
        }),
    )
}

/// Checks `code` against the user's sealed TOTP secret at `now`; the step
/// it matched, when it matched a step later than the last one accepted.
pub fn check_totp(store: &Store, creds: &Credentials, code: &str, now: i64) -> Option<i64> {
    let sealed = creds.totp_sealed.as_ref()?;
    let secret = store.key().open(TOTP_PURPOSE, sealed, store.path()).ok()?;
    let generator = totp(secret.expose(), &creds.user.name).ok()?;
    let last = u64::try_from(creds.totp_step).ok();
    let step = generator
        .verify(code, u64::try_from(now).ok()?, last)
        .ok()?;
    i64::try_from(step).ok()
}

/// Records `step` as the user's last accepted TOTP step.
pub fn accept_totp_step(conn: &Connection, user_id: i64, step: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE users SET totp_step = ?2 WHERE id = ?1 AND totp_step < ?2",
        params![user_id, step],
    )?;
    Ok(())
}

/// Every user, by name.
pub fn list(conn: &Connection) -> Result<Vec<(User, bool, bool)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, role, totp_sealed IS NOT NULL, disabled FROM users ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, name, role, totp, disabled) = row?;
        if let Some(role) = Role::from_name(&role) {
            out.push((User { id, name, role }, totp, disabled));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator is RFC 6238's (its vectors are paycrypto's tests) at
    /// 6 digits: the last six digits of the RFC's codes.
    #[test]
    fn codes_are_rfc_6238_at_six_digits() {
        let ours = totp(b"12345678901234567890", "alice").unwrap();
        assert_eq!(ours.code_at(59), "287082");
        assert_eq!(
            ours.verify("287082", 59 + 30, None),
            Ok(1),
            "one step of skew"
        );
        assert!(ours.verify("287082", 59 + 60, None).is_err());
    }

    #[test]
    fn users_get_hashed_passwords_sealed_totp_and_one_use_codes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &[]).unwrap();
        let cost = PasswordCost {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let owner = add_user(
            &store,
            &NewUser {
                name: "alice",
                role: Role::Owner,
                password: "correct horse battery",
                totp: false,
            },
            cost,
            "cli",
            10,
        )
        .unwrap();
        let uri = owner.otpauth.expect("owners get a second factor");
        assert!(
            uri.starts_with("otpauth://totp/posnet:alice?"),
            "{}",
            uri.as_str()
        );
        let cashier = add_user(
            &store,
            &NewUser {
                name: "bob",
                role: Role::Cashier,
                password: "correct horse battery",
                totp: false,
            },
            cost,
            "cli",
            10,
        )
        .unwrap();
        assert!(cashier.otpauth.is_none());
        assert!(matches!(
            add_user(
                &store,
                &NewUser {
                    name: "bob",
                    role: Role::Cashier,
                    password: "correct horse battery",
                    totp: false
                },
                cost,
                "cli",
                10
            ),
            Err(UserError::Exists(_))
        ));
        assert!(matches!(
            add_user(
                &store,
                &NewUser {
                    name: "c",
                    role: Role::Cashier,
                    password: "short",
                    totp: false
                },
                cost,
                "cli",
                10
            ),
            Err(UserError::Password)
        ));
        assert!(matches!(
            add_user(
                &store,
                &NewUser {
                    name: "<b>",
                    role: Role::Cashier,
                    password: "correct horse battery",
                    totp: false
                },
                cost,
                "cli",
                10
            ),
            Err(UserError::Name)
        ));

        let creds = store.read(|c| credentials(c, "alice")).unwrap().unwrap();
        assert!(creds.password_hash.starts_with("$argon2id$"));
        assert!(password_matches(
            &creds.password_hash,
            "correct horse battery"
        ));
        assert!(!password_matches(
            &creds.password_hash,
            "correct horse batterY"
        ));
        assert!(!password_matches(decoy_hash(cost), "correct horse battery"));
        let stored: Vec<u8> = creds.totp_sealed.clone().unwrap();
        let secret = totp_rs::Totp::from_url(uri.as_str()).unwrap();
        assert!(
            !stored.windows(20).any(|w| w == secret.secret().as_ref()),
            "sealed, not in clear"
        );

        let now = 1_767_225_600;
        let code = secret.generate(now as u64).to_string();
        let step = check_totp(&store, &creds, &code, now).unwrap();
        store
            .read(|c| accept_totp_step(c, creds.user.id, step))
            .unwrap();
        let creds = store.read(|c| credentials(c, "alice")).unwrap().unwrap();
        assert_eq!(
            check_totp(&store, &creds, &code, now),
            None,
            "a code is accepted once"
        );
        assert_eq!(
            check_totp(&store, &creds, "000000", now + 30)
                .filter(|_| secret.generate(now as u64 + 30).to_string() != "000000"),
            None
        );
        let later = secret.generate(now as u64 + 30).to_string();
        assert!(check_totp(&store, &creds, &later, now + 30).is_some());
        assert_eq!(
            store.read(crate::audit::verify).unwrap().rows,
            2,
            "both additions audited"
        );
    }
}
