//! Walks the encrypted files of a cipher directory (for fsck and crash recovery).

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

use crate::config::CONFIG_FILE_NAME;
use crate::crash_recovery::DIRTY_MARKER_NAME;
use crate::Error;

/// Calls `visit` with the path (relative to `root`) and metadata of every regular
/// file under `root`, in sorted order, skipping the volume's own files. Symlinks
/// are not followed.
pub(crate) fn for_each_file(
    root: &Path,
    visit: &mut dyn FnMut(PathBuf, &Metadata),
) -> Result<(), Error> {
    walk(root, Path::new(""), visit)
}

fn walk(
    root: &Path,
    relative: &Path,
    visit: &mut dyn FnMut(PathBuf, &Metadata),
) -> Result<(), Error> {
    let dir = root.join(relative);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(Error::path("reading", &dir))?
        .collect::<Result<_, _>>()
        .map_err(Error::path("reading", &dir))?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = entry.file_name();
        if relative.as_os_str().is_empty()
            && (name == CONFIG_FILE_NAME || name == DIRTY_MARKER_NAME)
        {
            continue;
        }
        let child = relative.join(&name);
        let meta = entry
            .metadata()
            .map_err(Error::path("reading", root.join(&child)))?;
        if meta.is_dir() {
            walk(root, &child, visit)?;
        } else if meta.is_file() {
            visit(child, &meta);
        }
    }
    Ok(())
}
