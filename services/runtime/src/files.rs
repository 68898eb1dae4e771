//! Files a service creates once on first start and reads ever after (the carrier secret, the
//! gateway's DKIM key).
//!
//! Several services of one carrier may start at the same moment against one data directory,
//! so creating such a file must be atomic: a reader never sees it half written, and two
//! creators agree on one content. Writing in place (`create_new`, then `write`) left a window
//! in which another service read an empty file and refused to start. Instead the content is
//! written and synced under a name of its own, then *hard-linked* to the final name: `link(2)`
//! fails when the name exists, so exactly one creator wins and everyone reads the winner's
//! complete file. (`rename(2)` would not do: it replaces an existing file, so two creators
//! could each use a different secret.)

use std::io::{self, Write as _};
use std::path::Path;

use rand::RngCore as _;

/// Makes `path` hold `contents`, readable by the owner only, unless it exists already; the
/// file is complete and synced before the name appears. Returns whether this call created it
/// (false: someone else had or did, and `contents` was dropped; read the file).
pub fn create_private_once(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut suffix = [0u8; 8];
    rand::rng().fill_bytes(&mut suffix);
    let staging = parent.join(format!(
        ".{}.{}.new",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));
    let outcome =
        write_staging(&staging, contents).and_then(|()| match std::fs::hard_link(&staging, path) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(error) => Err(error),
        });
    // The staging name goes either way; the final name (if linked) keeps the content.
    let _ = std::fs::remove_file(&staging);
    let created = outcome?;
    if created {
        sync_directory(parent)?;
    }
    Ok(created)
}

fn write_staging(staging: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(staging)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the new name durable (the link is an entry of the directory).
fn sync_directory(directory: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(directory)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = directory;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn concurrent_creators_agree_and_no_reader_sees_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = Arc::new(dir.path().join("sub").join("secret"));
        let creators = 16;
        let barrier = Arc::new(Barrier::new(creators));
        let threads: Vec<_> = (0..creators)
            .map(|n| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // Content long enough that a torn write would show.
                    let mine = format!("{n:02}").repeat(4096);
                    barrier.wait();
                    let created = create_private_once(&path, mine.as_bytes()).unwrap();
                    let read = std::fs::read_to_string(&*path).unwrap();
                    (created, read)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(created, _)| *created).count(), 1);
        let first = &results[0].1;
        assert_eq!(first.len(), 2 * 4096, "every reader sees the whole file");
        assert!(results.iter().all(|(_, read)| read == first));
        // No staging file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(create_private_once(&path, b"k").unwrap());
        assert!(!create_private_once(&path, b"other").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"k");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
