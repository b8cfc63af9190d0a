//! Passwords, sessions, CSRF tokens and the login limit of the web UI.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::http::{header, HeaderMap};
use keel_profile::Hash;
use keel_store::{SessionRecord, UserStore};

/// The session cookie's name.
pub const COOKIE: &str = "keel_session";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "keel_login";
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Failed logins per name (and in total) within [`WINDOW_MS`] before logins are refused.
const MAX_FAILURES: u32 = 5;
const MAX_FAILURES_TOTAL: u32 = 50;
const WINDOW_MS: i64 = 60_000;

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = crate::random_token(16);
    let salt = SaltString::encode_b64(salt.as_bytes()).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// True when `password` matches the PHC string `phc` (argon2's compare is constant-time).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash of no one's password, verified when the name is unknown so that a wrong name
/// takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&crate::random_token(16)).unwrap_or_default())
}

/// Compares two strings in time that depends only on their lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session id in the request's cookie, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    token_cookie(headers, COOKIE)
}

/// The value of cookie `name` when it is a token (64 hex digits).
fn token_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The login form's CSRF token: the one the browser already holds, or a new one with the
/// `Set-Cookie` value that gives it. The form carries it as a field and the browser as a
/// `SameSite=Strict` cookie; a login posted from another site has no such cookie, so it cannot
/// log the browser into an account of the other site's choosing.
pub fn login_token(headers: &HeaderMap) -> (String, Option<String>) {
    if let Some(t) = token_cookie(headers, LOGIN_COOKIE) {
        return (t, None);
    }
    let t = crate::random_token(32);
    let cookie = format!(
        "{LOGIN_COOKIE}={t}; Path=/ui/login; HttpOnly; Secure; SameSite=Strict; Max-Age=86400"
    );
    (t, Some(cookie))
}

/// Whether a posted login form carries the token of the browser's login cookie.
pub fn login_token_matches(headers: &HeaderMap, field: &str) -> bool {
    token_cookie(headers, LOGIN_COOKIE).is_some_and(|t| same(&t, field))
}

/// The request's live session.
pub fn session(users: &dyn UserStore, headers: &HeaderMap) -> Option<SessionRecord> {
    let id = cookie_value(headers)?;
    users
        .session(&Hash::of(id.as_bytes()), crate::now_ms())
        .ok()
        .flatten()
}

/// Starts a session for `user_id`: returns the `Set-Cookie` value. The id is 256 random bits;
/// only its hash is stored.
pub fn start_session(users: &dyn UserStore, user_id: i64) -> keel_store::Result<String> {
    let id = crate::random_token(32);
    let csrf = crate::random_token(32);
    let now = crate::now_ms();
    users.create_session(
        &Hash::of(id.as_bytes()),
        user_id,
        &csrf,
        now,
        now + SESSION_MS,
    )?;
    Ok(format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_MS / 1000
    ))
}

/// Ends the request's session; returns the `Set-Cookie` value that clears the cookie.
pub fn end_session(users: &dyn UserStore, headers: &HeaderMap) -> String {
    if let Some(id) = cookie_value(headers) {
        let _ = users.delete_session(&Hash::of(id.as_bytes()), crate::now_ms());
    }
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Counts failed logins per name and in total over a sliding minute.
#[derive(Debug, Default)]
pub struct Limiter(Mutex<HashMap<String, (u32, i64)>>);

impl Limiter {
    /// False when `name` (or everyone) failed too often in the last minute.
    pub fn allowed(&self, name: &str, now: i64) -> bool {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = |k: &str| {
            map.get(k)
                .filter(|(_, since)| now - since < WINDOW_MS)
                .map_or(0, |(n, _)| *n)
        };
        count(name) < MAX_FAILURES && count("") < MAX_FAILURES_TOTAL
    }

    /// Records a failed login of `name`.
    pub fn failed(&self, name: &str, now: i64) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, (_, since)| now - *since < WINDOW_MS);
        }
        for key in [name, ""] {
            let e = map.entry(key.to_string()).or_insert((0, now));
            if now - e.1 >= WINDOW_MS {
                *e = (0, now);
            }
            e.0 += 1;
        }
    }

    /// Forgets `name`'s failures after a successful login.
    pub fn succeeded(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }

    #[test]
    fn logins_are_limited() {
        let l = Limiter::default();
        for _ in 0..MAX_FAILURES {
            assert!(l.allowed("ada", 0));
            l.failed("ada", 0);
        }
        assert!(!l.allowed("ada", 1));
        assert!(l.allowed("bob", 1));
        assert!(l.allowed("ada", WINDOW_MS));
    }
}
