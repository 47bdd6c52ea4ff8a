//! Path rules (DESIGN.md "Data model"): what a znode path may look like, and
//! how a valid path splits into parent and name. Every write op and every read
//! goes through [`validate_path`] before a key is built from the path.

use crate::TxnError;

/// Checks a path against DESIGN.md's rules: absolute, `/`-separated, no empty,
/// `.` or `..` segments, no trailing `/` (except root), no NUL or control
/// characters, at most `max_bytes` long. Like ZooKeeper it also refuses the
/// private-use range `U+E000..=U+F8FF` and `U+FFF0..=U+FFFF`.
pub fn validate_path(path: &str, max_bytes: usize) -> Result<(), TxnError> {
    let bad = |reason: &str| {
        Err(TxnError::InvalidPath {
            path: path.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return bad("path is empty");
    }
    if path.len() > max_bytes {
        return bad(&format!("path is longer than {max_bytes} bytes"));
    }
    if !path.starts_with('/') {
        return bad("path must start with '/'");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("path must not end with '/'");
    }
    for c in path.chars() {
        if c.is_control() {
            return bad("path contains a NUL or control character");
        }
        if ('\u{E000}'..='\u{F8FF}').contains(&c) || ('\u{FFF0}'..='\u{FFFF}').contains(&c) {
            return bad("path contains a character from a refused unicode range");
        }
    }
    for segment in path[1..].split('/') {
        match segment {
            "" => return bad("path contains an empty segment"),
            "." | ".." => return bad("path contains a relative segment ('.' or '..')"),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a valid non-root path into (parent path, last segment).
/// Returns `None` for the root.
pub(crate) fn split_parent(path: &str) -> Option<(&str, &str)> {
    if path == "/" {
        return None;
    }
    let slash = path.rfind('/')?;
    let parent = if slash == 0 { "/" } else { &path[..slash] };
    Some((parent, &path[slash + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> bool {
        validate_path(p, 64).is_ok()
    }

    #[test]
    fn accepts_good_paths() {
        for p in [
            "/",
            "/a",
            "/a/b",
            "/a.b/..c/c..",
            "/ünï/코드",
            "/a b",
            "/0000000001",
            "/a-/_b",
        ] {
            assert!(ok(p), "{p:?} should be valid");
        }
    }

    #[test]
    fn refuses_bad_paths() {
        let long = format!("/{}", "x".repeat(64));
        for p in [
            "",
            "a",
            "a/b",
            "//",
            "/a/",
            "/a//b",
            "/.",
            "/..",
            "/a/./b",
            "/a/../b",
            "/a\0b",
            "/a\nb",
            "/a\u{7f}",
            "/a\u{9f}",
            "/\u{E000}",
            "/\u{FFFF}",
            long.as_str(),
        ] {
            match validate_path(p, 64) {
                Err(TxnError::InvalidPath { path, .. }) => assert_eq!(path, p),
                other => panic!("{p:?} should be invalid, got {other:?}"),
            }
        }
        assert!(ok(&format!("/{}", "x".repeat(63))));
    }

    #[test]
    fn splits_parent_and_name() {
        assert_eq!(split_parent("/"), None);
        assert_eq!(split_parent("/a"), Some(("/", "a")));
        assert_eq!(split_parent("/a/bc"), Some(("/a", "bc")));
    }
}
