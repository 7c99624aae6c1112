//! Files only the user running dagstart may read: services print secrets, and logs and run
//! records keep them. Directories dagstart creates are 0700, files 0600 (an existing file is
//! made 0600 too when it is truncated for a new run).

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Creates `dir` and its missing parents, private to the user.
pub(super) fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates or truncates `path`, private to the user; errors name the path.
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(named)?;
    file.set_permissions(Permissions::from_mode(0o600))
        .map_err(named)?;
    Ok(file)
}
