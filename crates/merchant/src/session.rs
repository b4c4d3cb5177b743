//! Logins and sessions.
//!
//! A session is a random 256-bit token in a cookie that is `HttpOnly`,
//! `Secure` and `SameSite=Strict`; the database keeps only its SHA-256.
//! Each session has its own CSRF token, which every POST form carries and
//! which is compared in constant time. Failed logins are counted per user
//! name and per client address in bounded maps ([`LoginLimiter`]); past the
//! limit, logins are refused without checking the password until the
//! window ends.

use crate::audit::{self, Change};
use crate::store::{Store, StoreError};
use crate::users::{self, PasswordCost, Role, User};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Cookie carrying the session token.
pub const SESSION_COOKIE: &str = "posnet_session";
/// Cookie carrying the login form's CSRF token (before any session exists).
pub const LOGIN_COOKIE: &str = "posnet_login";
/// Lifetime of a session, seconds.
pub const SESSION_TTL: i64 = 8 * 3600;

/// A random 256-bit token, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("operating system random source");
    hex::encode(bytes)
}

/// SHA-256 of a token, hex: what is stored in its place.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether a presented CSRF token equals the expected one (constant time).
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// A `Set-Cookie` value: `HttpOnly`, `Secure`, `SameSite=Strict`, path `/`;
/// a negative or zero `max_age` removes the cookie.
pub fn cookie(name: &str, value: &str, max_age: i64) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        max_age.max(0)
    )
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// A logged-in user's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who.
    pub user: User,
    /// The token POST forms must carry.
    pub csrf: String,
}

/// Starts a session for `user`; returns its cookie token.
pub fn create(conn: &Connection, user: &User, now: i64) -> Result<(String, Session), StoreError> {
    // Expired sessions go when new ones come: the table stays small.
    conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", params![now])?;
    let token = random_token();
    let csrf = random_token();
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![token_hash(&token), user.id, csrf, now, now + SESSION_TTL],
    )?;
    Ok((
        token,
        Session {
            user: user.clone(),
            csrf,
        },
    ))
}

/// The live session of `token` (its user enabled), if any.
pub fn lookup(conn: &Connection, token: &str, now: i64) -> Result<Option<Session>, StoreError> {
    if token.len() != 64 {
        return Ok(None);
    }
    let row = conn
        .query_row(
            "SELECT u.id, u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
            params![token_hash(token), now],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .optional()?;
    Ok(row.and_then(|(id, name, role, csrf)| {
        Some(Session {
            user: User {
                id,
                name,
                role: Role::from_name(&role)?,
            },
            csrf,
        })
    }))
}

/// Ends the session of `token`.
pub fn end(conn: &Connection, token: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM sessions WHERE token_hash = ?1",
        params![token_hash(token)],
    )?;
    Ok(())
}

/// Failed attempts per key within a window, in a map of bounded size.
#[derive(Debug)]
pub struct Limiter {
    windows: Mutex<HashMap<String, (Instant, u32)>>,
    capacity: usize,
    max_failures: u32,
    window: Duration,
}

impl Limiter {
    /// At most `max_failures` per key within `window`, for at most
    /// `capacity` keys (the oldest window goes first when full).
    pub fn new(capacity: usize, max_failures: u32, window: Duration) -> Limiter {
        Limiter {
            windows: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            max_failures,
            window,
        }
    }

    /// Whether `key` may try now.
    pub fn allowed(&self, key: &str, now: Instant) -> bool {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.get(key) {
            Some((started, failures)) => {
                now.duration_since(*started) >= self.window || *failures < self.max_failures
            }
            None => true,
        }
    }

    /// Counts a failure of `key`.
    pub fn failed(&self, key: &str, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if !windows.contains_key(key) && windows.len() >= self.capacity {
            let window = self.window;
            windows.retain(|_, (started, _)| now.duration_since(*started) < window);
            if windows.len() >= self.capacity
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (started, _))| *started)
                    .map(|(k, _)| k.clone())
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Forgets `key` (after a success).
    pub fn reset(&self, key: &str) {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The login limits: per user name and per client address.
#[derive(Debug)]
pub struct LoginLimiter {
    /// Per user name.
    pub users: Limiter,
    /// Per client address.
    pub addresses: Limiter,
}

impl Default for LoginLimiter {
    /// 5 failures per name and 20 per address in 15 minutes, 10,000 of each tracked.
    fn default() -> Self {
        let window = Duration::from_secs(15 * 60);
        LoginLimiter {
            users: Limiter::new(10_000, 5, window),
            addresses: Limiter::new(10_000, 20, window),
        }
    }
}

/// How a login ended.
#[derive(Debug)]
pub enum Login {
    /// A new session, with its cookie token.
    Started {
        /// Cookie token.
        token: String,
        /// The session.
        session: Session,
    },
    /// Wrong name, password or code (which one is not said).
    Refused,
    /// Too many failures for this name or address: try later.
    Limited,
}

/// What a login form carried.
pub struct Attempt<'a> {
    /// User name.
    pub name: &'a str,
    /// Password.
    pub password: &'a str,
    /// TOTP code (empty when none was given).
    pub code: &'a str,
    /// Client address.
    pub address: IpAddr,
}

impl std::fmt::Debug for Attempt<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("name", &self.name)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// Checks an attempt (limits, password, second factor) and starts a session.
pub fn login(
    store: &Store,
    limiter: &LoginLimiter,
    cost: PasswordCost,
    attempt: &Attempt<'_>,
    now: i64,
) -> Result<Login, StoreError> {
    let instant = Instant::now();
    let user_key = attempt.name.to_lowercase();
    let address_key = attempt.address.to_string();
    if !limiter.users.allowed(&user_key, instant)
        || !limiter.addresses.allowed(&address_key, instant)
    {
        tracing::warn!(user = attempt.name, address = %attempt.address, "login refused: too many failures");
        return Ok(Login::Limited);
    }
    let creds = store.read(|c| users::credentials(c, attempt.name))?;
    let hash = creds
        .as_ref()
        .map_or_else(|| users::decoy_hash(cost), |c| c.password_hash.as_str());
    let password_ok = users::password_matches(hash, attempt.password) && creds.is_some();
    let accepted = match creds {
        Some(creds) if password_ok => {
            let needs_code = creds.user.role.requires_totp() || creds.totp_sealed.is_some();
            let step = if needs_code {
                users::check_totp(store, &creds, attempt.code, now)
            } else {
                Some(0)
            };
            step.map(|step| (creds.user, step))
        }
        _ => None,
    };
    let Some((user, step)) = accepted else {
        limiter.users.failed(&user_key, instant);
        limiter.addresses.failed(&address_key, instant);
        tracing::warn!(user = attempt.name, address = %attempt.address, "login refused");
        return Ok(Login::Refused);
    };
    limiter.users.reset(&user_key);
    let (token, session) = store.write(|tx| -> Result<_, StoreError> {
        if step > 0 {
            users::accept_totp_step(tx, user.id, step)?;
        }
        let started = create(tx, &user, now)?;
        audit::append(
            tx,
            &Change {
                actor: &user.name,
                action: "session.login",
                subject: &format!("user:{}", user.name),
                before: None,
                after: Some(serde_json::json!({ "address": address_key })),
            },
            now,
        )?;
        Ok(started)
    })?;
    Ok(Login::Started { token, session })
}

/// Ends the session of `token` for `session`'s user, audited.
pub fn logout(store: &Store, token: &str, session: &Session, now: i64) -> Result<(), StoreError> {
    store.write(|tx| -> Result<(), StoreError> {
        end(tx, token)?;
        audit::append(
            tx,
            &Change {
                actor: &session.user.name,
                action: "session.logout",
                subject: &format!("user:{}", session.user.name),
                before: None,
                after: None,
            },
            now,
        )?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_per_key_within_its_window_and_stays_bounded() {
        let limiter = Limiter::new(3, 2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(limiter.allowed("a", t0));
        limiter.failed("a", t0);
        assert!(limiter.allowed("a", t0));
        limiter.failed("a", t0);
        assert!(!limiter.allowed("a", t0), "two failures: refused");
        assert!(limiter.allowed("b", t0), "other keys are not affected");
        assert!(
            limiter.allowed("a", t0 + Duration::from_secs(60)),
            "a new window"
        );
        for key in ["b", "c", "d", "e"] {
            limiter.failed(key, t0 + Duration::from_secs(1));
        }
        assert_eq!(limiter.len(), 3, "bounded");
        limiter.reset("e");
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn cookies_are_strict_and_parsed_by_name() {
        let c = cookie(SESSION_COOKIE, "abc", 60);
        assert_eq!(
            c,
            "posnet_session=abc; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=60"
        );
        assert_eq!(
            cookie_value("a=1; posnet_session=xyz; b=2", SESSION_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("posnet_sessionx=1", SESSION_COOKIE), None);
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("", ""));
    }
}
