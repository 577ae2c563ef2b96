//! The job list's page cursors: every id round-trips, and decoding accepts only what encoding
//! produces (a cursor is opaque; the server never honours one it did not issue).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_scheduler::cursor;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(id) = cursor::decode(text)
    {
        assert!(id > 0, "{text:?} decoded to {id}");
        assert_eq!(
            cursor::encode(id),
            text,
            "decode accepted {text:?}, which encode never produces"
        );
    }
    if let Some(bytes) = data.first_chunk::<8>() {
        let id = i64::from_le_bytes(*bytes);
        if id > 0 {
            assert_eq!(cursor::decode(&cursor::encode(id)), Some(id));
        }
    }
});
