//! Building the upstream request URI from the base URL and the path the gateway passes.

use std::borrow::Cow;

use http::Uri;
use http::uri::{PathAndQuery, Scheme as UriScheme};

use crate::config::BaseUrl;
use crate::error::UpstreamError;

/// `base` + `path_and_query` as an origin-form request target (`/prefix/a?q`).
///
/// Rules, with base path `/prefix`:
/// - `""` gives the base path as configured, `"/"` gives `/prefix/`, `"a"` and `"/a"` both give
///   `/prefix/a`: the boundary always has exactly one slash, whatever the leading slashes.
/// - A query (from the first `?`) is appended unchanged, also to an empty path: `?q` gives
///   `/prefix?q`.
/// - Dot segments (`.`, `..` and their percent-encoded forms) are resolved (RFC 3986 §5.2.4)
///   and clamped at the prefix, so a request can never reach above the base path.
///
/// The target is written into one `String` in one pass, dot segments resolved in place: this
/// runs for every proxied request. When that would give `path_and_query` back unchanged (see
/// [`unchanged_by_joining`]), it is returned as it is, with no copy.
pub(crate) fn join_target<'a>(
    base: &BaseUrl,
    path_and_query: &'a str,
) -> Result<Cow<'a, str>, UpstreamError> {
    if unchanged_by_joining(base, path_and_query) {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let rest = path.trim_start_matches('/');
    let mut out = String::with_capacity(base.prefix.len() + path_and_query.len() + 1);
    out.push_str(&base.prefix);
    // `..` never removes anything at or before this: the prefix stays.
    let floor = out.len();
    if rest.is_empty() {
        if !path.is_empty() || base.trailing_slash || out.is_empty() {
            out.push('/');
        }
    } else {
        let mut trailing_slash = false;
        let mut segments = rest.split('/').peekable();
        while let Some(seg) = segments.next() {
            let last = segments.peek().is_none();
            if is_dot(seg) {
                trailing_slash = last;
            } else if is_dot_dot(seg) {
                // Drop the last segment written (with its slash), never the prefix.
                let cut = out[floor..].rfind('/').map_or(floor, |i| floor + i);
                out.truncate(cut);
                trailing_slash = last;
            } else {
                out.push('/');
                out.push_str(seg);
                trailing_slash = false;
            }
        }
        if trailing_slash || out.len() == floor {
            out.push('/');
        }
    }
    out.push_str(query);
    // Visible ASCII is a valid target, and is what a path and query taken from a parsed URI
    // hold; anything else is judged by `http`'s parser (which also accepts some bytes above
    // 0x7f in a query).
    if !out.bytes().all(|b| b.is_ascii_graphic()) {
        PathAndQuery::try_from(out.as_str())
            .map_err(|e| UpstreamError::InvalidUri { source: e.into() })?;
    }
    Ok(Cow::Owned(out))
}

/// Whether [`join_target`] would give `path_and_query` back as it is: no base path, a path
/// that starts with exactly one slash, no segment that could be a dot segment (one that starts
/// with `.` or `%2e`), and visible ASCII only. The common case of a route that forwards to an
/// upstream's root.
fn unchanged_by_joining(base: &BaseUrl, path_and_query: &str) -> bool {
    let bytes = path_and_query.as_bytes();
    if !base.prefix.is_empty() || bytes.first() != Some(&b'/') || bytes.get(1) == Some(&b'/') {
        return false;
    }
    let path_end = bytes.iter().position(|&b| b == b'?').unwrap_or(bytes.len());
    let maybe_dot_segment = bytes[..path_end]
        .windows(2)
        .any(|w| w[0] == b'/' && (w[1] == b'.' || w[1] == b'%'));
    !maybe_dot_segment && bytes.iter().all(u8::is_ascii_graphic)
}

/// `target` (from [`join_target`]) on `base`'s authority, as an absolute `http://` URI (what
/// an HTTP/2 request carries in its pseudo-header fields).
pub(crate) fn absolute_uri(base: &BaseUrl, target: Cow<'_, str>) -> Result<Uri, UpstreamError> {
    let target = target.into_owned();
    let pq = PathAndQuery::try_from(target)
        .map_err(|e| UpstreamError::InvalidUri { source: e.into() })?;
    Uri::builder()
        .scheme(UriScheme::HTTP)
        .authority(base.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|source| UpstreamError::InvalidUri { source })
}

fn is_dot(seg: &str) -> bool {
    seg == "." || seg.eq_ignore_ascii_case("%2e")
}

fn is_dot_dot(seg: &str) -> bool {
    seg == ".."
        || seg.eq_ignore_ascii_case(".%2e")
        || seg.eq_ignore_ascii_case("%2e.")
        || seg.eq_ignore_ascii_case("%2e%2e")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UpstreamConfig;

    fn join(base: &BaseUrl, pq: &str) -> Result<Uri, UpstreamError> {
        absolute_uri(base, join_target(base, pq)?)
    }

    fn joined(base: &str, pq: &str) -> String {
        let base = UpstreamConfig::new(base).base().unwrap();
        join(&base, pq).unwrap().to_string()
    }

    #[test]
    fn joins_with_exactly_one_slash() {
        let b = "http://h:1/prefix";
        assert_eq!(joined(b, "/a/b"), "http://h:1/prefix/a/b");
        assert_eq!(joined(b, "a/b"), "http://h:1/prefix/a/b");
        assert_eq!(joined(b, "//a"), "http://h:1/prefix/a");
        assert_eq!(joined(b, "/"), "http://h:1/prefix/");
        assert_eq!(joined(b, ""), "http://h:1/prefix");
        assert_eq!(joined(b, "/a/"), "http://h:1/prefix/a/");
        assert_eq!(joined(b, "/a//b"), "http://h:1/prefix/a//b");
        assert_eq!(joined("http://h:1/prefix/", "/a"), "http://h:1/prefix/a");
        assert_eq!(joined("http://h:1/prefix/", ""), "http://h:1/prefix/");
        assert_eq!(joined("http://h:1", "/a"), "http://h:1/a");
        assert_eq!(joined("http://h:1/", "/a"), "http://h:1/a");
        assert_eq!(joined("http://h:1", ""), "http://h:1/");
        assert_eq!(
            joined("http://h:1", "//evil.example/x"),
            "http://h:1/evil.example/x"
        );
    }

    #[test]
    fn keeps_the_query() {
        let b = "http://h:1/prefix";
        assert_eq!(joined(b, "/a?x=1&y=%20"), "http://h:1/prefix/a?x=1&y=%20");
        assert_eq!(joined(b, "?x=1"), "http://h:1/prefix?x=1");
        assert_eq!(joined(b, "/?x=/../"), "http://h:1/prefix/?x=/../");
        assert_eq!(joined("http://h:1", "?x"), "http://h:1/?x");
    }

    #[test]
    fn dot_segments_cannot_escape_the_prefix() {
        let b = "http://h:1/prefix";
        assert_eq!(joined(b, "/../admin"), "http://h:1/prefix/admin");
        assert_eq!(joined(b, "/a/../../../admin"), "http://h:1/prefix/admin");
        assert_eq!(joined(b, "/%2e%2E/admin"), "http://h:1/prefix/admin");
        assert_eq!(joined(b, "/a/./b/.."), "http://h:1/prefix/a/");
        assert_eq!(joined(b, "/a/b/../c"), "http://h:1/prefix/a/c");
        assert_eq!(joined(b, "/.."), "http://h:1/prefix/");
        assert_eq!(joined(b, "/..."), "http://h:1/prefix/...");
    }

    /// A reference for the in-place resolution: the dot segments of `rest` resolved on a stack
    /// of segments (RFC 3986 §5.2.4's algorithm, clamped at the prefix), as `join_target` did
    /// before it wrote the target in one pass.
    fn resolved_with_a_stack(prefix: &str, path: &str) -> String {
        let rest = path.trim_start_matches('/');
        let mut out = prefix.to_owned();
        if rest.is_empty() {
            if !path.is_empty() || out.is_empty() {
                out.push('/');
            }
            return out;
        }
        let mut segments: Vec<&str> = Vec::new();
        let mut trailing_slash = false;
        let mut iter = rest.split('/').peekable();
        while let Some(seg) = iter.next() {
            let last = iter.peek().is_none();
            if is_dot(seg) {
                trailing_slash = last;
            } else if is_dot_dot(seg) {
                segments.pop();
                trailing_slash = last;
            } else {
                segments.push(seg);
                trailing_slash = false;
            }
        }
        for seg in &segments {
            out.push('/');
            out.push_str(seg);
        }
        if trailing_slash || segments.is_empty() {
            out.push('/');
        }
        out
    }

    proptest::proptest! {
        /// Any path of plain, empty and dot segments (in every spelling) resolves as the stack
        /// algorithm resolves it, stays under the prefix and keeps no dot segment.
        #[test]
        fn dot_segments_resolve_as_rfc_3986_says_and_never_above_the_prefix(
            prefix in proptest::sample::select(vec!["", "/base", "/a/b"]),
            segments in proptest::collection::vec(
                proptest::sample::select(vec!["a", "bc", "", ".", "..", "%2e", "%2E%2e", ".%2e", "..."]),
                0..8,
            ),
            leading in 0usize..3,
        ) {
            let path = format!("{}{}", "/".repeat(leading), segments.join("/"));
            let base = UpstreamConfig::new(format!("http://h:1{prefix}")).base().unwrap();
            let target = join_target(&base, &path).unwrap();
            proptest::prop_assert_eq!(&target, &resolved_with_a_stack(prefix, &path));
            proptest::prop_assert!(target.starts_with(prefix), "{} left {}", target, prefix);
            // An empty path gives the base path as configured; anything else a slash after it.
            let under = &target[prefix.len()..];
            proptest::prop_assert!(under.starts_with('/') || path.is_empty(), "{}", target);
            for seg in under.split('/') {
                proptest::prop_assert!(!is_dot(seg) && !is_dot_dot(seg), "{} in {}", seg, target);
            }
        }
    }

    #[test]
    fn a_target_joining_would_not_change_is_not_copied() {
        let root = UpstreamConfig::new("http://h:1").base().unwrap();
        for as_is in ["/api/item", "/a/b/?q=1&r=./..", "/", "/a//b/", "/a.b/c..d"] {
            let target = join_target(&root, as_is).unwrap();
            assert!(matches!(target, Cow::Borrowed(_)), "{as_is} was copied");
            assert_eq!(target, as_is);
        }
        // Changed by joining, or possibly so: written out.
        for (given, joined) in [
            ("//a", "/a"),
            ("/./a", "/a"),
            ("/a/../b", "/b"),
            ("/%2e%2E/a", "/a"),
            ("/%41", "/%41"),
            ("", "/"),
            ("?q", "/?q"),
        ] {
            let target = join_target(&root, given).unwrap();
            assert!(matches!(target, Cow::Owned(_)), "{given} was not copied");
            assert_eq!(target, joined);
        }
        let prefixed = UpstreamConfig::new("http://h:1/p").base().unwrap();
        assert!(matches!(
            join_target(&prefixed, "/a").unwrap(),
            Cow::Owned(_)
        ));
    }

    #[test]
    fn invalid_characters_are_a_typed_error() {
        let base = UpstreamConfig::new("http://h:1/p").base().unwrap();
        let err = join(&base, "/a b").unwrap_err();
        assert!(matches!(err, UpstreamError::InvalidUri { .. }), "{err}");
    }
}
