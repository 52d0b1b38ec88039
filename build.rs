//! Builds the one C helper pgward needs next to libpg_query (see
//! csrc/scanner_settings.c for why).

fn main() {
    println!("cargo:rerun-if-changed=csrc/scanner_settings.c");
    cc::Build::new()
        .file("csrc/scanner_settings.c")
        .compile("pgward_scanner_settings");
}
