// Rebuild when a PostgreSQL migration changes: `sqlx::migrate!` embeds the folder, and cargo
// does not track files a macro reads.
fn main() {
    println!("cargo:rerun-if-changed=migrations/postgres");
}
