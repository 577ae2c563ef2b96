//! Instaloader session files written by CPython's `pickle` (fixtures made with protocols 0, 2, 4
//! and 5), and hostile ones.

use trawl_worker::session_file::{self, MAX_FILE_BYTES, SessionFileError};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn every_pickle_protocol_gives_the_same_cookies() {
    let mut previous = None;
    for proto in [0, 2, 4, 5] {
        let cookies =
            session_file::parse_session(&fixture(&format!("session-proto{proto}.pickle")))
                .unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(
            cookies["sessionid"],
            "9123456789%3AaBcDeF%3A12%3AAYf-secret"
        );
        assert_eq!(cookies["ds_user_id"], "9123456789");
        assert_eq!(cookies["rur"], "\"NAO\\0549123456789\\0541790000000:01f7\"");
        assert_eq!(cookies["ünïcode"], "välue ✓");
        assert_eq!(cookies.len(), 8);
        if let Some(p) = &previous {
            assert_eq!(&cookies, p, "protocol {proto}");
        }
        previous = Some(cookies);
    }
}

#[test]
fn memo_references_resolve() {
    let cookies = session_file::parse(&fixture("session-memo.pickle")).unwrap();
    assert_eq!(cookies["mirror"], "shared-value");
    assert_eq!(cookies["sessionid"], "shared-value");
}

#[test]
fn hostile_and_broken_files_get_a_clear_error() {
    let proto4 = fixture("session-proto4.pickle");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Vec::new(), "empty"),
        (
            b"{\"sessionid\": \"x\"}".to_vec(),
            "does not start like a pickle",
        ),
        (b"GIF89a".to_vec(), "does not start like a pickle"),
        (proto4[..proto4.len() / 2].to_vec(), "truncated"),
        (fixture("global.pickle"), "unexpected pickle opcode"),
        (fixture("list.pickle"), "unexpected pickle opcode"),
        (fixture("int-value.pickle"), "not a string"),
        (vec![0x80; MAX_FILE_BYTES + 1], "at most"),
        (b"\x80\x04}.".to_vec(), "no sessionid cookie"),
        (b"\x80\x09}.".to_vec(), "protocol above 5"),
        (b"(\x8c\x01a.".to_vec(), "not a dict"),
    ];
    for (bytes, needle) in cases {
        let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(20)]).into_owned();
        let err = session_file::parse_session(&bytes).unwrap_err().to_string();
        assert!(err.contains(needle), "{shown:?}: {err}");
    }
    // The opcode and its offset are named, so a person can see what the file tried to do.
    match session_file::parse(&fixture("global.pickle")) {
        Err(SessionFileError::UnexpectedOpcode { opcode, offset }) => {
            assert!(offset > 0);
            assert!(
                matches!(opcode, 0x93 | b'c'),
                "GLOBAL/STACK_GLOBAL, got 0x{opcode:02x}"
            );
        }
        other => panic!("expected a refused opcode, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_a_real_file_is_an_error_not_a_panic() {
    let bytes = fixture("session-proto2.pickle");
    for end in 0..bytes.len() {
        assert!(
            session_file::parse_session(&bytes[..end]).is_err(),
            "prefix of {end} bytes"
        );
    }
}

#[test]
fn memo_bombs_and_endless_stacks_are_refused_by_name() {
    // One 4 KiB string memoized a million times would copy 4 GB out of a 1 MB file.
    let mut bomb = b"\x80\x04X\x00\x10\x00\x00".to_vec();
    bomb.extend(vec![b'a'; 4096]);
    bomb.extend(vec![0x94; 1_000_000]);
    bomb.push(b'.');
    assert!(bomb.len() <= MAX_FILE_BYTES);
    assert!(matches!(
        session_file::parse(&bomb),
        Err(SessionFileError::MemoTooLarge(_))
    ));
    // The same string fetched from the memo again and again.
    let mut gets = b"\x80\x04X\x00\x10\x00\x00".to_vec();
    gets.extend(vec![b'a'; 4096]);
    gets.extend(b"q\x00");
    gets.extend(b"h\x00".repeat(400_000));
    assert!(matches!(
        session_file::parse(&gets),
        Err(SessionFileError::MemoTooLarge(_))
    ));
    let mut deep = b"\x80\x04".to_vec();
    deep.extend(vec![b'('; 5000]);
    let err = session_file::parse(&deep).unwrap_err();
    assert!(matches!(err, SessionFileError::StackTooDeep(_)), "{err}");
}
