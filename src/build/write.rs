//! Atomic writes: an artifact appears whole or not at all, and a failed build never
//! clobbers the file already at its path.

use super::BuildError;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file in the same folder, then a rename.
pub fn atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    with_temp(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| io_error(tmp, e))
    })
}

/// Runs `make` on a temporary path in `path`'s folder and renames the result to `path`;
/// on failure the temporary file is removed and `path` is left as it was.
pub fn with_temp(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), BuildError>,
) -> Result<(), BuildError> {
    let tmp = temp_path(path);
    let result =
        make(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(|e| io_error(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `folder/.name.tmp-PID`: hidden, in the same folder (so the rename is atomic), and
/// distinct for concurrent builds.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or("artifact".into(), |n| n.to_string_lossy().into_owned());
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    folder
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.tmp-{}", std::process::id()))
}

pub fn io_error(path: &Path, e: std::io::Error) -> BuildError {
    BuildError::Output(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.o");
        std::fs::write(&path, b"old").unwrap();
        let failed = with_temp(&path, |tmp| {
            std::fs::write(tmp, b"partial").unwrap();
            Err(BuildError::Output("link failed".into()))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
