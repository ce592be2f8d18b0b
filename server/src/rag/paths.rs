//! Index names and where an index may be written or read: every path a
//! client names must resolve inside `--rag-storage-dir` (KAITO writes
//! wherever it is told; a `path=../../etc` there is a write anywhere).

use std::path::{Component, Path, PathBuf};

use super::error::RagError;

/// KAITO's default `path` value: means `<storage dir>/<index name>`.
pub const DEFAULT_PATH_VALUE: &str = "storage";

/// `[A-Za-z0-9_-]{1,64}`: safe as a directory name, in URLs and in logs.
pub fn validate_index_name(name: &str) -> Result<(), RagError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RagError::BadRequest(format!(
            "invalid index name {name:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// The directory an index is persisted to or loaded from. No `path` and
/// `path=storage` mean `<root>/<name>`; a relative path is taken under
/// `root`; an absolute one must already be inside it. `..` that leaves the
/// root, and symlinks that point out of it, are refused with 400.
pub fn resolve_index_dir(root: &Path, name: &str, path: Option<&str>) -> Result<PathBuf, RagError> {
    let root = canonical_root(root)?;
    let requested = match path {
        None | Some(DEFAULT_PATH_VALUE) | Some("") => return Ok(root.join(name)),
        Some(p) => Path::new(p),
    };
    let joined = if requested.is_absolute() {
        requested.to_path_buf()
    } else {
        root.join(requested)
    };
    let outside = || {
        RagError::BadRequest(format!(
            "path {:?} is outside the RAG storage directory {}; give a path inside it \
             (relative paths are taken under it)",
            requested.display().to_string(),
            root.display()
        ))
    };
    let normal = normalize(&joined).ok_or_else(outside)?;
    if !normal.starts_with(&root) || normal == root {
        return Err(outside());
    }
    // Follow symlinks on the part that exists: none may lead out.
    let mut existing = normal.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(file)) => {
                rest.push(file.to_owned());
                existing = parent;
            }
            _ => return Err(outside()),
        }
    }
    let real = existing.canonicalize()?;
    if !real.starts_with(&root) {
        return Err(outside());
    }
    let mut resolved = real;
    resolved.extend(rest.iter().rev());
    if resolved == root {
        return Err(outside());
    }
    Ok(resolved)
}

/// The storage root, created if missing, with symlinks resolved.
pub fn canonical_root(root: &Path) -> Result<PathBuf, RagError> {
    std::fs::create_dir_all(root).map_err(|e| {
        RagError::Storage(format!(
            "cannot create the RAG storage directory {}: {e}",
            root.display()
        ))
    })?;
    Ok(root.canonicalize()?)
}

/// Removes `.` and applies `..` lexically; `None` if `..` climbs past `/`.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["docs", "a", "my_index-2", &"x".repeat(64)] {
            validate_index_name(good).unwrap();
        }
        for bad in ["", "a/b", "..", "a b", "ünï", &"x".repeat(65), "a.b"] {
            let e = validate_index_name(bad).unwrap_err();
            assert!(matches!(e, RagError::BadRequest(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn default_and_relative_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert_eq!(resolve_index_dir(&root, "i", None).unwrap(), root.join("i"));
        assert_eq!(
            resolve_index_dir(&root, "i", Some("storage")).unwrap(),
            root.join("i")
        );
        assert_eq!(
            resolve_index_dir(&root, "i", Some("backups/i-1")).unwrap(),
            root.join("backups/i-1")
        );
        assert_eq!(
            resolve_index_dir(&root, "i", Some("a/../b")).unwrap(),
            root.join("b")
        );
        let abs = root.join("x").display().to_string();
        assert_eq!(
            resolve_index_dir(&root, "i", Some(&abs)).unwrap(),
            root.join("x")
        );
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root).unwrap();
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        for bad in [
            "..",
            "../x",
            "a/../../x",
            "/etc",
            "/tmp/x",
            ".",
            "link",
            "link/sub",
        ] {
            let e = resolve_index_dir(&root, "i", Some(bad)).unwrap_err();
            assert!(matches!(e, RagError::BadRequest(_)), "{bad}: {e:?}");
        }
    }
}
