//! Builds the C helpers pgward needs next to libpg_query (see
//! csrc/scanner_settings.c and csrc/parse_errors.c for why).

fn main() {
    println!("cargo:rerun-if-changed=csrc/scanner_settings.c");
    println!("cargo:rerun-if-changed=csrc/parse_errors.c");
    cc::Build::new()
        .file("csrc/scanner_settings.c")
        .file("csrc/parse_errors.c")
        .compile("pgward_scanner_settings");
}
