//! Local users' passwords: argon2id hashes, never the password itself.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};

use crate::db::{DbError, Store};

pub fn hash(password: &str) -> Result<String, DbError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| DbError::Corrupt(format!("cannot hash a password: {e}")))
}

/// Whether `password` is the password of local user `user`.
pub fn verify(store: &Store, user: &str, password: &str) -> Result<bool, DbError> {
    let Some(stored) = store.password_hash(user)? else {
        // Spend the same time as a real check so that user names cannot be probed by timing.
        let _ = hash(password);
        return Ok(false);
    };
    let parsed = PasswordHash::new(&stored).map_err(|e| DbError::Corrupt(format!("password hash of {user}: {e}")))?;
    Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

pub fn set_password(store: &Store, user: &str, password: &str) -> Result<(), DbError> {
    store.set_password_hash(user, &hash(password)?)
}

/// A random password for a first start with none given: 24 characters from two v4 UUIDs' random bits.
pub fn generate_password() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{}", &a[..12], &b[..12])
}
