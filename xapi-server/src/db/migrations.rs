//! Forward-only schema migrations from `migrations/`, applied in name order at start-up.
//!
//! Each file runs once, inside a transaction, and is recorded in `_migrations`. A migration that has been released
//! is never edited: a change of schema is a new file. The object tables come from the datamodel
//! (`cargo xtask codegen` writes their migration); `Store::open` then checks every table against the model.

use rusqlite::Connection;

use super::DbError;

/// Every migration, in the order it applies.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "20261126000000_create-object-tables",
        include_str!("../../../migrations/20261126000000_create-object-tables.sql"),
    ),
    ("20261126000001_create-bookkeeping", include_str!("../../../migrations/20261126000001_create-bookkeeping.sql")),
];

pub fn apply(conn: &mut Connection) -> Result<(), DbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS \"_migrations\" (\"name\" TEXT PRIMARY KEY NOT NULL, \"applied_at\" TEXT NOT NULL)",
    )?;
    for (name, sql) in MIGRATIONS {
        let done: bool =
            conn.query_row("SELECT EXISTS(SELECT 1 FROM \"_migrations\" WHERE name = ?1)", [name], |r| r.get(0))?;
        if done {
            continue;
        }
        tracing::info!(migration = name, "applying migration");
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute("INSERT INTO \"_migrations\"(name, applied_at) VALUES (?1, datetime('now'))", [name])?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_in_name_order_and_match_their_files() {
        let names: Vec<&str> = super::MIGRATIONS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().trim_end_matches(".sql").to_string())
            .collect();
        files.sort();
        assert_eq!(files, names, "every file in migrations/ is listed in MIGRATIONS");
    }
}
