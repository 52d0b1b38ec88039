#![allow(non_upper_case_globals)]
#![allow(non_camel_case_types)]
#![allow(non_snake_case)]
#![allow(unused)]
#![allow(clippy::all)]
// pgward: the bindings are generated once and kept in the repository (see
// ../README.md for the command), so building needs no libclang.
include!("bindings_generated.rs");
