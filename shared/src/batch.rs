//! Job files (`trawl submit --file`): JSONL, one [`JobSpec`] per line. Each line is read and
//! validated on its own, so a bad line is reported by its number and the good ones still go.
//!
//! Pure: no I/O, no clock. The CLI reads the file and sends [`Batch::jobs`]; the fuzz target
//! `batch_jsonl` feeds arbitrary bytes here.

use crate::domain::JobSpec;

/// A job file, line by line. Line numbers count from 1, blank lines included.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Lines that hold a valid job: the line number and the job as written (the server
    /// validates it again and fills in its defaults).
    pub jobs: Vec<(usize, JobSpec)>,
    /// Lines that do not: the line number and why.
    pub rejected: Vec<(usize, String)>,
}

/// Reads one line (without its `\n`; a trailing `\r` is dropped): `None` for a blank line,
/// otherwise the job, or why the line is not one. `default_max_attempts` is what validation
/// assumes when the line gives no `max_attempts`.
pub fn parse_line(raw: &[u8], default_max_attempts: i32) -> Option<Result<JobSpec, String>> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => return Some(Err(format!("not valid UTF-8: {e}"))),
    };
    let spec: JobSpec = match serde_json::from_str(text) {
        Ok(s) => s,
        Err(e) => return Some(Err(format!("not a job object: {e}"))),
    };
    Some(match spec.clone().validate(default_max_attempts) {
        Ok(_) => Ok(spec),
        Err(e) => Err(e.to_string()),
    })
}

/// Reads a whole job file. A leading UTF-8 byte-order mark (editors on Windows write one) is
/// not part of the first line's JSON.
pub fn parse_jsonl(bytes: &[u8], default_max_attempts: i32) -> Batch {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut batch = Batch::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        match parse_line(raw, default_max_attempts) {
            None => {}
            Some(Ok(spec)) => batch.jobs.push((line_no, spec)),
            Some(Err(why)) => batch.rejected.push((line_no, why)),
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_lines_are_kept_as_written_and_bad_ones_named_by_number() {
        let file = b"\xEF\xBB\xBF{\"kind\":\"profile\",\"target\":\"NatGeo\"}\r\n\
            \n   \t\n\
            {\"kind\":\"profiles\",\"target\":\"x\"}\n\
            not json\n\
            {\"kind\":\"post\",\"target\":\"abc\",\"priority\":5}\n\
            {\"kind\":\"post\",\"target\":\"a\xffb\"}\n\
            {\"kind\":\"profile\",\"target\":\"x\",\"priorty\":1}";
        let batch = parse_jsonl(file, 3);
        let lines: Vec<usize> = batch.jobs.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 6]);
        // As written: the server normalises the target, not the file reader.
        assert_eq!(batch.jobs[0].1, JobSpec::new("profile", "NatGeo"));
        assert_eq!(batch.jobs[1].1.priority, Some(5));
        let rejected: Vec<(usize, &str)> = batch
            .rejected
            .iter()
            .map(|(l, why)| (*l, why.as_str()))
            .collect();
        assert_eq!(rejected.len(), 4, "{rejected:?}");
        assert!(rejected[0].0 == 4 && rejected[0].1.starts_with("kind: unknown job kind"));
        assert!(rejected[1].0 == 5 && rejected[1].1.starts_with("not a job object"));
        assert!(rejected[2].0 == 7 && rejected[2].1.starts_with("not valid UTF-8"));
        assert!(rejected[3].0 == 8 && rejected[3].1.contains("priorty"));
    }

    #[test]
    fn blank_and_empty_files_hold_nothing() {
        for file in [&b""[..], b"\n", b"\r\n\r\n", b"\xEF\xBB\xBF", b" \t \n\x0c"] {
            assert_eq!(parse_jsonl(file, 3), Batch::default(), "{file:?}");
        }
    }

    /// Found with the fuzz target `batch_jsonl` (fuzz/corpus/batch_jsonl/regression-sub-millisecond):
    /// a `recrawl_every` below a millisecond was sent to the API as another duration.
    #[test]
    fn a_job_reaches_the_api_as_written() {
        let line = br#"{"kind":"profile","target":"x","recrawl_every":"1.0000005s"}"#;
        let spec = parse_line(line, 3).unwrap().unwrap();
        let wire = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            serde_json::from_str::<JobSpec>(&wire).unwrap(),
            spec,
            "{wire}"
        );
    }

    #[test]
    fn the_default_attempts_decide_a_line_without_its_own() {
        let line = br#"{"kind":"profile","target":"x"}"#;
        assert!(matches!(parse_line(line, 3), Some(Ok(_))));
        let why = parse_line(line, 0).unwrap().unwrap_err();
        assert!(why.starts_with("max_attempts"), "{why}");
    }
}
