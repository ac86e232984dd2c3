//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds
//! `migrations/` at compile time, and cargo does not otherwise know to look there, so
//! a build after a new migration (and no source change) kept the old schema. Found
//! when a test of migration 0013 ran against a build without it.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
