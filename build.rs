// Migrations are embedded into the binary (diesel_migrations'
// embed_migrations!); rebuild when one is added or edited, which cargo would
// not otherwise notice.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
