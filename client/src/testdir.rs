//! A temporary directory for the library's unit tests.

use std::path::PathBuf;

/// A fresh, empty directory under the system's temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new directory whose name starts with `name`.
    pub(crate) fn new(name: &str) -> TempDir {
        let mut rand = [0u8; 8];
        crate::os::fill(&mut rand).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "flexim-client-{name}-{}",
            flexim_protocol::keys::hex(&rand)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
