fn main() {
    // sqlx embeds the migrations (top-level migrations/) at compile time; a new migration
    // file must trigger a rebuild.
    println!("cargo::rerun-if-changed=../../migrations");
    // The contract suite's PostgreSQL variants are ignored, with their reason, unless
    // CAPF_TEST_POSTGRES is set: a variant that could not run must not count as a pass.
    println!("cargo::rustc-check-cfg=cfg(capf_postgres)");
    println!("cargo::rerun-if-env-changed=CAPF_TEST_POSTGRES");
    if std::env::var("CAPF_TEST_POSTGRES").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=capf_postgres");
    }
}
