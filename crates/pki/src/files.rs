//! Writing files that must never be seen half-written or with loose permissions (private
//! keys, the admin token).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use rand::RngCore;

/// Writes `bytes` to `path` atomically with permission `mode` (on Unix): a temporary file in
/// the same directory, created with the final mode (never readable by others, not even
/// briefly), synced, renamed over `path`, and the directory synced so the rename survives a
/// crash.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut nonce = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let tmp = dir.join(format!(".{file_name}.{}.tmp", hex::encode(nonce)));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: do not leave a half-written temporary file behind.
        let _ = fs::remove_file(&tmp);
    }
    result
}
