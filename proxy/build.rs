//! Embeds the browser client (`web/dist`, built by `npm run build` in `proxy/web`, which
//! `./scripts/setup` runs) into the binary. Without a build the commands that serve it say
//! how to make one; everything else works.

use std::fmt::Write as _;
use std::path::Path;

const FILES: [&str; 5] = [
    "index.html",
    "player.html",
    "app.css",
    "session.js",
    "player.js",
];

fn main() -> std::io::Result<()> {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dist = Path::new(&manifest).join("web").join("dist");
    println!("cargo:rerun-if-changed={}", dist.display());
    let mut code =
        String::from("/// The browser client's files, by name (empty when it was not built).\n");
    code.push_str("pub(super) static ASSETS: &[(&str, &[u8])] = &[\n");
    let complete = FILES.iter().all(|file| dist.join(file).is_file());
    if complete {
        for file in FILES {
            let path = dist.join(file);
            println!("cargo:rerun-if-changed={}", path.display());
            let _ = writeln!(
                code,
                "    ({file:?}, include_bytes!({:?})),",
                path.display().to_string()
            );
        }
    } else {
        println!(
            "cargo:warning=the browser client is not built ({} is incomplete): `connect web` and `recording play` will refuse to start; run ./scripts/setup",
            dist.display()
        );
    }
    code.push_str("];\n");
    let out = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    std::fs::write(Path::new(&out).join("web_assets.rs"), code)
}
