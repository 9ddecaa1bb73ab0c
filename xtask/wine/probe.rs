//! Built by `cargo xtask setup` for x86_64-pc-windows-gnu and run under wine: proof that wine can
//! start a Rust program before we hand it a whole test suite.
//!
//! Any std program would do to catch the missing `bcryptprimitives.dll` (it fails to load, exit
//! code 53). Building a `HashMap` goes one step further: its hasher seed comes from
//! `ProcessPrng`, so the stand-in DLL is called, not just loaded.

use std::collections::HashMap;

fn main() {
    let mut map = HashMap::new();
    map.insert("wine", "ok");
    println!("probe: wine runs Rust programs: {}", map["wine"]);
}
