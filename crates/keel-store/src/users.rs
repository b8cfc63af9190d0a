//! The web UI's accounts and sessions, and the few reads its pages need beyond [`Store`]:
//! a trait of its own so that it grows apart from the rest of the store.
//!
//! Passwords arrive already hashed (argon2id PHC strings, made by the server); session ids
//! arrive hashed too. Nothing here can tell a password or open a session from the database.
//!
//! [`Store`]: crate::Store

use std::collections::HashMap;

use keel_profile::Hash;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::sqlite::SqliteStore;
use crate::{HostRecord, Result, StoreError};

/// What a UI account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Everything the UI offers.
    #[serde(rename = "admin")]
    Admin,
    /// Reading only.
    #[serde(rename = "read-only")]
    ReadOnly,
}

impl Role {
    /// `admin` or `read-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    /// Reads `admin` or `read-only` (`readonly` too).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "read-only" | "readonly" => Some(Role::ReadOnly),
            _ => None,
        }
    }
}

/// A UI account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// Store id.
    pub id: i64,
    /// Login name (unique).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The argon2id PHC string.
    #[serde(skip)]
    pub password_hash: String,
    /// When it was made, ms since the epoch.
    pub created_at: i64,
}

/// A logged-in session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The account.
    pub user: UserRecord,
    /// The token every form of this session must carry.
    pub csrf: String,
    /// When it ends, ms since the epoch.
    pub expires_at: i64,
}

/// Accounts, sessions and the UI's page queries.
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Makes an account; a name already taken is a conflict.
    fn add_user(&self, name: &str, role: Role, password_hash: &str, now: i64)
        -> Result<UserRecord>;
    /// Replaces an account's password and role, ending its sessions; false when there is no
    /// such account.
    fn update_user(&self, name: &str, role: Role, password_hash: &str) -> Result<bool>;
    /// An account by name.
    fn user(&self, name: &str) -> Result<Option<UserRecord>>;
    /// Every account, by name.
    fn users(&self) -> Result<Vec<UserRecord>>;
    /// Deletes an account and its sessions; false when there was none.
    fn delete_user(&self, name: &str) -> Result<bool>;

    /// Records a session by the hash of its id, and forgets the sessions expired by `now`.
    fn create_session(
        &self,
        id_hash: &Hash,
        user_id: i64,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    /// The session with this id hash, unless it has expired by `now`.
    fn session(&self, id_hash: &Hash, now: i64) -> Result<Option<SessionRecord>>;
    /// Ends a session, and every session that expired before `now`.
    fn delete_session(&self, id_hash: &Hash, now: i64) -> Result<()>;

    /// Hosts whose name starts with `prefix`, by name, after `after` (for paging).
    fn hosts_with_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HostRecord>>;
    /// Firing alerts per host, for the hosts given (absent when none).
    fn open_alert_counts(&self, host_ids: &[i64]) -> Result<HashMap<i64, i64>>;
}

const USER_COLS: &str = "id, name, role, password_hash, created_at";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(UserRecord, String)> {
    Ok((
        UserRecord {
            id: r.get(0)?,
            name: r.get(1)?,
            role: Role::Admin,
            password_hash: r.get(3)?,
            created_at: r.get(4)?,
        },
        r.get(2)?,
    ))
}

fn finish_user((mut u, role): (UserRecord, String)) -> Result<UserRecord> {
    u.role = Role::parse(&role)
        .ok_or_else(|| StoreError::Corrupt(format!("role {role:?} of user {}", u.name)))?;
    Ok(u)
}

impl UserStore for SqliteStore {
    fn add_user(
        &self,
        name: &str,
        role: Role,
        password_hash: &str,
        now: i64,
    ) -> Result<UserRecord> {
        self.write(|c| {
            let taken: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::Conflict(format!(
                    "a user named {name} already exists"
                )));
            }
            c.execute(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), password_hash, now],
            )?;
            Ok(UserRecord {
                id: c.last_insert_rowid(),
                name: name.to_string(),
                role,
                password_hash: password_hash.to_string(),
                created_at: now,
            })
        })
    }

    fn update_user(&self, name: &str, role: Role, password_hash: &str) -> Result<bool> {
        self.write(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE users SET role = ?2, password_hash = ?3 WHERE name = ?1",
                params![name, role.as_str(), password_hash],
            )?;
            tx.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
                [name],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn user(&self, name: &str) -> Result<Option<UserRecord>> {
        self.read(|c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE name = ?1"),
                [name],
                user_row,
            )
            .optional()?
            .map(finish_user)
            .transpose()
        })
    }

    fn users(&self) -> Result<Vec<UserRecord>> {
        self.read(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY name"))?;
            let rows = st.query_map([], user_row)?;
            rows.map(|r| finish_user(r?)).collect()
        })
    }

    fn delete_user(&self, name: &str) -> Result<bool> {
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM sessions WHERE user_id = (SELECT id FROM users WHERE name = ?1)",
                [name],
            )?;
            let n = tx.execute("DELETE FROM users WHERE name = ?1", [name])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    fn create_session(
        &self,
        id_hash: &Hash,
        user_id: i64,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        self.write(|c| {
            // Expired sessions go as new ones come.
            c.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?;
            c.execute(
                "INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&id_hash.0[..], user_id, csrf, now, expires_at],
            )?;
            Ok(())
        })
    }

    fn session(&self, id_hash: &Hash, now: i64) -> Result<Option<SessionRecord>> {
        self.read(|c| {
            let row = c
                .prepare_cached(
                    "SELECT u.id, u.name, u.role, u.password_hash, u.created_at, s.csrf, s.expires_at
                     FROM sessions s JOIN users u ON u.id = s.user_id
                     WHERE s.id_hash = ?1 AND s.expires_at > ?2",
                )?
                .query_row(params![&id_hash.0[..], now], |r| {
                    Ok((user_row(r)?, r.get::<_, String>(5)?, r.get::<_, i64>(6)?))
                })
                .optional()?;
            row.map(|(user, csrf, expires_at)| {
                Ok(SessionRecord {
                    user: finish_user(user)?,
                    csrf,
                    expires_at,
                })
            })
            .transpose()
        })
    }

    fn delete_session(&self, id_hash: &Hash, now: i64) -> Result<()> {
        self.write(|c| {
            c.execute(
                "DELETE FROM sessions WHERE id_hash = ?1 OR expires_at <= ?2",
                params![&id_hash.0[..], now],
            )?;
            Ok(())
        })
    }

    fn hosts_with_prefix(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<HostRecord>> {
        if prefix.is_empty() {
            return crate::Store::hosts(self, after, limit);
        }
        // A range on the name index: every name that starts with the prefix sorts between
        // the prefix and the prefix followed by the highest character.
        let end = format!("{prefix}\u{10FFFF}");
        let start = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let ids: Vec<i64> = self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM hosts WHERE name >= ?1 AND name > ?2 AND name < ?3
                 ORDER BY name LIMIT ?4",
            )?;
            let ids = st
                .query_map(params![prefix, after.unwrap_or(start), end, limit], |r| {
                    r.get(0)
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(ids)
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(h) = crate::Store::host_by_id(self, id)? {
                out.push(h);
            }
        }
        Ok(out)
    }

    fn open_alert_counts(&self, host_ids: &[i64]) -> Result<HashMap<i64, i64>> {
        self.read(|c| {
            // Served by the partial index of firing alerts per host.
            let mut st = c.prepare_cached(
                "SELECT count(*) FROM alerts WHERE host_id = ?1 AND status = 'firing'",
            )?;
            let mut out = HashMap::new();
            for id in host_ids {
                let n: i64 = st.query_row([id], |r| r.get(0))?;
                if n > 0 {
                    out.insert(*id, n);
                }
            }
            Ok(out)
        })
    }
}

impl SqliteStore {
    /// Fills an empty store with `hosts` hosts as the fleet page reads them, in one
    /// transaction: most up, some late, missing or new, one in twenty with open alerts. For
    /// `keel bench ui`; the hosts have no stored profiles.
    pub fn seed_fleet(&self, hosts: usize, now: i64) -> Result<()> {
        const HOUR: i64 = 3_600_000;
        self.write(|c| {
            let tx = c.transaction()?;
            {
                let mut host = tx.prepare(
                    "INSERT INTO hosts (name, machine_id, created_at, last_profile_id, last_seen_at,
                        watch_from, missing_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?3, ?6)",
                )?;
                let mut alert = tx.prepare(
                    "INSERT INTO alerts (fingerprint, host_id, rule, severity, status, labels,
                        annotations, starts_at)
                     VALUES (?1, ?2, 'new-package', 'warning', 'firing', ?3, ?4, ?5)",
                )?;
                let created = now - 30 * 24 * HOUR;
                for i in 0..hosts {
                    let name = format!("host-{i:05}");
                    let (last_seen, profile) = match i % 50 {
                        0 => (None, None),
                        1 | 2 => (Some(now - 5 * HOUR), Some(i as i64 * 10)),
                        3..=5 => (Some(now - 90 * 60_000), Some(i as i64 * 10)),
                        _ => (Some(now - 10 * 60_000), Some(i as i64 * 10)),
                    };
                    let missing_at = last_seen.unwrap_or(created) + 2 * HOUR;
                    host.execute(params![
                        name,
                        format!("{i:032x}"),
                        created,
                        profile,
                        last_seen,
                        missing_at
                    ])?;
                    let id = tx.last_insert_rowid();
                    if i % 20 == 7 {
                        for n in 0..=(i % 3) {
                            let labels = format!(
                                r#"{{"alertname":"new-package","host":"{name}","severity":"warning"}}"#
                            );
                            let summary = format!(r#"{{"summary":"package pkg-{n} installed"}}"#);
                            alert.execute(params![
                                format!("{id:08x}{n:08x}"),
                                id,
                                labels,
                                summary,
                                now - HOUR
                            ])?;
                        }
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewAgent, Store};

    #[test]
    fn users_sessions_and_fleet_queries() {
        let store = SqliteStore::open_in_memory().unwrap();
        let u = store
            .add_user("ada", Role::Admin, "$argon2id$x", 1)
            .unwrap();
        assert!(matches!(
            store.add_user("ada", Role::ReadOnly, "$argon2id$y", 2),
            Err(StoreError::Conflict(_))
        ));
        store
            .add_user("bob", Role::ReadOnly, "$argon2id$z", 3)
            .unwrap();
        let names: Vec<_> = store.users().unwrap().into_iter().map(|u| u.name).collect();
        assert_eq!(names, ["ada", "bob"]);

        let sid = Hash::of(b"session");
        store.create_session(&sid, u.id, "csrf", 10, 100).unwrap();
        let s = store.session(&sid, 50).unwrap().unwrap();
        assert_eq!((s.user.name.as_str(), s.csrf.as_str()), ("ada", "csrf"));
        assert!(store.session(&sid, 100).unwrap().is_none(), "expired");
        assert!(store
            .update_user("ada", Role::ReadOnly, "$argon2id$w")
            .unwrap());
        assert!(
            store.session(&sid, 50).unwrap().is_none(),
            "ended by the change"
        );
        assert_eq!(store.user("ada").unwrap().unwrap().role, Role::ReadOnly);
        assert!(store.delete_user("bob").unwrap());
        assert!(!store.delete_user("bob").unwrap());

        for name in ["db-1", "db-2", "web-1", "web-2", "web-3", "x"] {
            store
                .enroll(&NewAgent {
                    id: format!("agent-{name}"),
                    host: name.into(),
                    machine_id: name.into(),
                    public_key: vec![0; 32],
                    now: 1,
                    schedule: None,
                })
                .unwrap();
        }
        let web: Vec<_> = store
            .hosts_with_prefix("web-", None, 2)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(web, ["web-1", "web-2"]);
        let rest: Vec<_> = store
            .hosts_with_prefix("web-", Some("web-2"), 2)
            .unwrap()
            .into_iter()
            .map(|h| h.name)
            .collect();
        assert_eq!(rest, ["web-3"]);
        assert!(store.open_alert_counts(&[1, 2]).unwrap().is_empty());
    }
}
