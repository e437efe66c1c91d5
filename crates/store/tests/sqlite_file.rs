//! The SQLite file itself: private to capf whatever the umask (it holds pending
//! authentication strings), and refused at start when damaged rather than served from.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use capf_store::{Corrupt, DatabaseUrl, StoreError};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Finding 8 of the hardening: the data directory was 0755 and `capf.db` and its WAL 0644.
#[tokio::test]
async fn the_database_and_its_directory_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = data.join("capf.db");
    let store = capf_store::open(&DatabaseUrl::sqlite_file(&db))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert_eq!(mode(&data), 0o700);
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("capf.db{suffix}"));
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
    assert!(
        data.join("capf.db-wal").exists(),
        "WAL mode: the WAL file exists while open"
    );
    drop(store);

    // Files left readable by an earlier release (or a copy) are made private at start.
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("capf.db{suffix}"));
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = capf_store::open(&DatabaseUrl::sqlite_file(&db))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert_eq!(mode(&db), 0o600);
}

/// Finding 6: a truncated SQLite file let the server start and answer 503 to everything.
#[tokio::test]
async fn a_damaged_file_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("capf.db");
    let store = capf_store::open(&DatabaseUrl::sqlite_file(&db))
        .await
        .unwrap();
    store.ping().await.unwrap();
    drop(store);
    // Let go of the WAL so that the main file holds everything, then cut it short.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("capf.db{suffix}")));
    }
    let len = std::fs::metadata(&db).unwrap().len();
    assert!(
        len > 8192,
        "a migrated database spans several pages ({len} bytes)"
    );
    let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    match capf_store::open(&DatabaseUrl::sqlite_file(&db)).await {
        Err(StoreError::Corrupt(Corrupt::Integrity(detail))) => {
            assert!(!detail.is_empty());
        }
        Err(other) => panic!("refused, but not as damaged: {other}"),
        Ok(_) => panic!("a truncated database was opened"),
    }
}
