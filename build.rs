// Tests that exist only to exercise PostgreSQL (several nodes sharing one database) are
// ignored, with their reason, when CAPF_TEST_POSTGRES is unset: `cargo test` then reports them
// as ignored instead of counting an early return as a pass. CI sets the variable (.ci/run).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(capf_postgres)");
    println!("cargo::rerun-if-env-changed=CAPF_TEST_POSTGRES");
    if std::env::var("CAPF_TEST_POSTGRES").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=capf_postgres");
    }
}
