//! Compiles libpg_query exactly as pg_query 18.1.0's own build script does,
//! but does not run bindgen: the Rust bindings for `libpg_query/pg_query.h`
//! are generated once and kept in `src/bindings_generated.rs` (README.md has
//! the command that regenerates them), so the build needs no libclang.

use std::env;
use std::io;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("libpg_query");
    let target = env::var("TARGET")?;

    // The committed bindings were generated for 64-bit Unix (glibc); type
    // sizes differ elsewhere, so refuse rather than link mismatched structs.
    let pointer_width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH")?;
    if pointer_width != "64" || target.contains("windows") {
        return Err(format!(
            "vendor/pg_query: the committed bindings are for 64-bit Unix targets, not {target}; \
             regenerate src/bindings_generated.rs for it (see vendor/pg_query/README.md)"
        )
        .into());
    }

    println!("cargo:rerun-if-changed=libpg_query");
    println!("cargo:rerun-if-changed=build.rs");

    let mut build = cc::Build::new();
    build
        .files(c_files(&root.join("src"))?)
        .files(c_files(&root.join("src/postgres"))?)
        .file(root.join("vendor/xxhash/xxhash.c"))
        .file(root.join("vendor/upb/upb.c"))
        .file(root.join("vendor/upb/third_party/utf8_range/utf8_range.c"))
        .file(root.join("protobuf/pg_query.upb_minitable.c"))
        .include(&root)
        .include(root.join("vendor"))
        .include(root.join("vendor/upb"))
        .include(root.join("vendor/upb/third_party/utf8_range"))
        .include(root.join("src/postgres/include"))
        .include(root.join("src/include"))
        // libpg_query's own development treats these warnings already.
        .warnings(false)
        // Required by upb, matching libpg_query's own CFLAGS.
        .flag("-fno-strict-aliasing")
        .flag("-fwrapv");
    if env::var("PROFILE")? == "debug" || env::var("DEBUG")? == "1" {
        build.define("USE_ASSERT_CHECKING", None);
    }
    build.compile("pg_query");
    Ok(())
}

/// The `.c` files directly in `dir`, sorted so the archive is reproducible.
fn c_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "c") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}
