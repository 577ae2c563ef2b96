//! File and directory names as Instaloader 4.16 makes them with its default patterns
//! (`{target}` directories, `{date_utc}_UTC` file names, `{date_utc}_UTC_{typename}` title
//! pictures) on Linux. I/O-free.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

/// `_PostPathFormatter.sanitize_path` without `--sanitize-paths`, on Linux: every `/` becomes
/// U+2215 DIVISION SLASH, and a leading `.` becomes U+2024 ONE DOT LEADER. Nothing else changes.
pub fn sanitize(name: &str) -> String {
    let replaced = name.replace('/', "\u{2215}");
    match replaced.strip_prefix('.') {
        Some(rest) => format!("\u{2024}{rest}"),
        None => replaced,
    }
}

/// `{date_utc}` of a Unix time: `datetime.utcfromtimestamp(t)` (microseconds, rounded) formatted
/// `%Y-%m-%d_%H-%M-%S`.
pub fn utc_stamp(t: f64) -> Option<String> {
    let micros = (t * 1e6).round();
    if !micros.is_finite() || micros.abs() > 9.0e18 {
        return None;
    }
    let micros = micros as i64;
    let at = DateTime::<Utc>::from_timestamp(micros.div_euclid(1_000_000), 0)?;
    Some(at.format("%Y-%m-%d_%H-%M-%S").to_string())
}

/// The same name for a time the CDN gave (`Last-Modified`).
pub fn utc_stamp_of(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d_%H-%M-%S").to_string()
}

/// A Unix time as a file time (`os.utime(path, (now, t))`).
pub fn system_time(t: f64) -> Option<SystemTime> {
    if !t.is_finite() {
        return None;
    }
    let span = Duration::try_from_secs_f64(t.abs()).ok()?;
    if t >= 0.0 {
        SystemTime::UNIX_EPOCH.checked_add(span)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(span)
    }
}

/// The extension `download_pic` first looks for: the URL's text between the first `.` whose run
/// of `[a-z0-9]` is followed by `?` (the regular expression `\.[a-z0-9]*\?`), else the URL's last
/// three characters.
pub fn url_extension(url: &str) -> String {
    let bytes = url.as_bytes();
    for (at, _) in url.match_indices('.') {
        let run = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        if bytes.get(at + 1 + run) == Some(&b'?') {
            return url[at + 1..at + 1 + run].to_owned();
        }
    }
    let chars: Vec<char> = url.chars().collect();
    chars[chars.len().saturating_sub(3)..].iter().collect()
}

/// The extension `download_pic` names a file by when the answer had a `Content-Type`:
/// `"." + type.split(";")[0].split("/")[-1]`, lower-cased, `jpeg` written `jpg`. `None` without
/// one (an empty header counts as none).
pub fn content_type_extension(content_type: Option<&str>) -> Option<String> {
    let content_type = content_type.filter(|t| !t.is_empty())?;
    let essence = content_type.split(';').next().unwrap_or("");
    let last = essence.rsplit('/').next().unwrap_or("");
    Some(format!(".{}", last.to_lowercase().replace("jpeg", "jpg")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sanitised_as_on_linux() {
        assert_eq!(sanitize("Field notes"), "Field notes");
        assert_eq!(sanitize("a/b: c?"), "a\u{2215}b: c?");
        assert_eq!(sanitize(".hidden.name"), "\u{2024}hidden.name");
        assert_eq!(sanitize(""), "");
    }

    #[test]
    fn dates_are_utc_to_the_second() {
        assert_eq!(
            utc_stamp(1767225341.0).as_deref(),
            Some("2025-12-31_23-55-41")
        );
        assert_eq!(
            utc_stamp(1767225341.9999999).as_deref(),
            Some("2025-12-31_23-55-42")
        );
        assert_eq!(utc_stamp(0.0).as_deref(), Some("1970-01-01_00-00-00"));
    }

    #[test]
    fn extensions_come_from_the_url_or_the_content_type() {
        assert_eq!(
            url_extension("http://127.0.0.1:80/v/t51.2885-15/1_n.jpg?stp=x&oe=1"),
            "jpg"
        );
        assert_eq!(url_extension("https://h/v/video.mp4"), "mp4");
        assert_eq!(url_extension("https://h/a.b/c.webp?x"), "webp");
        assert_eq!(
            content_type_extension(Some("image/jpeg")).as_deref(),
            Some(".jpg")
        );
        assert_eq!(
            content_type_extension(Some("video/MP4; codecs=x")).as_deref(),
            Some(".mp4")
        );
        assert_eq!(
            content_type_extension(Some("application/octet-stream")).as_deref(),
            Some(".octet-stream")
        );
        assert_eq!(content_type_extension(Some("")), None);
        assert_eq!(content_type_extension(None), None);
    }
}
