//! Instaloader session files (`trawl accounts add --session-file`): any bytes are refused with an
//! error or read into a cookie map within the documented bounds, and `parse_session` agrees with
//! `parse` about which maps are a logged-in session.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trawl_worker::session_file::{self, MAX_ENTRIES, MAX_STRING_BYTES};

fuzz_target!(|data: &[u8]| {
    let session = session_file::parse_session(data);
    match session_file::parse(data) {
        Ok(cookies) => {
            assert!(cookies.len() <= MAX_ENTRIES, "{} cookies", cookies.len());
            for (name, value) in &cookies {
                assert!(name.len() <= MAX_STRING_BYTES && value.len() <= MAX_STRING_BYTES);
            }
            let logged_in = ["sessionid", "ds_user_id"]
                .iter()
                .all(|c| cookies.get(*c).is_some_and(|v| !v.is_empty()));
            match session {
                Ok(s) => {
                    assert!(logged_in);
                    assert_eq!(s, cookies);
                }
                Err(e) => assert!(!logged_in, "a logged-in session refused: {e}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(
                session.is_err(),
                "parse_session accepted what parse refused"
            );
        }
    }
});
