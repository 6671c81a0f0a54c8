// `sqlx::migrate!` embeds the migration files at compile time but does not
// tell cargo about new ones; without this, an incremental build keeps the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
