//! Local users' passwords: argon2id hashes (PHC strings), never the password itself.
//!
//! New hashes use argon2id with 7 MiB of memory and 5 passes, one of OWASP's recommended settings (as strong as
//! their 19 MiB × 2 passes, with less memory held by the daemon); hashes with other parameters still verify.
//! Checks run one at a time over one reused block of argon2 memory: a flood of logins costs time, not memory,
//! and the allocator never has to find the block again per login.

use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::db::{DbError, Store};

/// Memory (KiB) and passes of new hashes.
const M_COST_KIB: u32 = 7 * 1024;
const T_COST: u32 = 5;

/// The argon2 working memory, shared by all checks and grown once to what the parameters need.
static MEMORY: std::sync::Mutex<Vec<Block>> = std::sync::Mutex::new(Vec::new());

fn bad(e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("password hash: {e}"))
}

/// argon2id of `password` with `salt` and `params`, into `out`.
fn compute(password: &str, salt: &[u8], params: Params, out: &mut [u8]) -> Result<(), DbError> {
    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    let blocks = params.block_count();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .map_err(bad)
}

pub fn hash(password: &str) -> Result<String, DbError> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::new(M_COST_KIB, T_COST, 1, None).map_err(bad)?;
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(bad)?;
    let mut out = vec![0u8; Params::DEFAULT_OUTPUT_LEN];
    compute(password, salt_bytes, params.clone(), &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params).try_into().map_err(bad)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(bad)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` is the password of local user `user`.
pub fn verify(store: &Store, user: &str, password: &str) -> Result<bool, DbError> {
    let Some(stored) = store.password_hash(user)? else {
        // Spend the same time as a real check so that user names cannot be probed by timing.
        let _ = hash(password);
        return Ok(false);
    };
    let phc = PasswordHash::new(&stored).map_err(bad)?;
    let params = Params::try_from(&phc).map_err(bad)?;
    let (Some(salt), Some(expected)) = (phc.salt, phc.hash) else {
        return Err(bad("no salt or no hash"));
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(bad)?;
    let mut out = vec![0u8; expected.len()];
    compute(password, salt_bytes, params, &mut out)?;
    // `Output`'s equality is constant-time.
    Ok(Output::new(&out).map_err(bad)? == expected)
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

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    #[test]
    fn hashes_are_standard_phc_strings_that_verify() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        assert!(!h.contains("s3cret"));
        // Any argon2 implementation reads it.
        let phc = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"s3cret", &phc).is_ok());
        assert!(Argon2::default().verify_password(b"other", &phc).is_err());
        let store = Store::open_in_memory().unwrap();
        store.set_password_hash("root", &h).unwrap();
        assert!(verify(&store, "root", "s3cret").unwrap());
        assert!(!verify(&store, "root", "s3cret ").unwrap());
        assert!(!verify(&store, "nobody", "s3cret").unwrap());
        // A hash with other parameters (argon2's defaults) verifies too.
        use argon2::PasswordHasher;
        let other = Argon2::default().hash_password(b"older", &SaltString::generate(&mut OsRng)).unwrap().to_string();
        store.set_password_hash("old", &other).unwrap();
        assert!(verify(&store, "old", "older").unwrap());
        assert!(!verify(&store, "old", "olde").unwrap());
    }
}
