//! Job files (`trawl submit --file`): every line is either a job or a numbered rejection, and a
//! job the file reader accepts reaches the server as written (its JSON reads back as the same job
//! and validates to the same row).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_shared::batch::{self, Batch};
use trawl_shared::domain::JobSpec;

const DEFAULT_ATTEMPTS: i32 = 3;

fuzz_target!(|data: &[u8]| {
    let Batch { jobs, rejected } = batch::parse_jsonl(data, DEFAULT_ATTEMPTS);
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let lines = body.split(|&b| b == b'\n').count();
    let mut numbers: Vec<usize> = jobs.iter().map(|(l, _)| *l).collect();
    assert!(numbers.is_sorted(), "job lines out of order");
    let rejected_numbers: Vec<usize> = rejected.iter().map(|(l, _)| *l).collect();
    assert!(rejected_numbers.is_sorted(), "rejected lines out of order");
    numbers.extend(rejected_numbers);
    numbers.sort_unstable();
    let before = numbers.len();
    numbers.dedup();
    assert_eq!(numbers.len(), before, "a line both accepted and rejected");
    assert!(numbers.iter().all(|&n| (1..=lines).contains(&n)));
    for (line, why) in &rejected {
        assert!(!why.is_empty(), "line {line} rejected without a reason");
    }
    for (line, spec) in &jobs {
        let job = spec
            .clone()
            .validate(DEFAULT_ATTEMPTS)
            .unwrap_or_else(|e| panic!("line {line} accepted but invalid: {e}"));
        // What the CLI sends in its batch request.
        let wire = serde_json::to_string(spec).expect("a job spec serialises");
        let back: JobSpec = serde_json::from_str(&wire)
            .unwrap_or_else(|e| panic!("line {line}: {wire} does not read back: {e}"));
        assert_eq!(&back, spec, "line {line} changed on the wire: {wire}");
        let again = back
            .validate(DEFAULT_ATTEMPTS)
            .unwrap_or_else(|e| panic!("line {line}: {wire} is refused by the server: {e}"));
        assert_eq!(again, job);
    }
});
