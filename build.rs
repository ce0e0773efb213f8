// Migrations are embedded into the binary (diesel_migrations'
// embed_migrations!); rebuild when one is added or edited, which cargo would
// not otherwise notice. Their digest (MIGRATIONS_DIGEST) names the migrated
// template database the tests clone, so an edited migration gets a new one.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let mut files = Vec::new();
    collect(Path::new("migrations"), &mut files);
    files.sort();
    // FNV-1a, 64 bits: stable across toolchains, unlike std's hasher.
    let mut digest: u64 = 0xcbf2_9ce4_8422_2325;
    for file in files {
        let name = file.to_string_lossy().into_owned().into_bytes();
        let content = std::fs::read(&file).unwrap_or_default();
        for byte in name.iter().chain(&[0]).chain(&content).chain(&[0]) {
            digest ^= u64::from(*byte);
            digest = digest.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=MIGRATIONS_DIGEST={digest:016x}");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
