//! The job list's page cursors (`next_cursor`, `?cursor=`). Opaque to clients; today a cursor
//! carries the last job id of the page, as `j<id>`.
//!
//! Decoding is strict: it accepts exactly the strings [`encode`] produces. `j042` or `j+42` name
//! the same job as `j42` but are no cursor this server issued, so they are refused like any other
//! foreign string (the fuzz target `cursor` checks both directions).

/// The cursor after a page whose last job is `id` (a positive job id).
pub fn encode(id: i64) -> String {
    format!("j{id}")
}

/// The job id a cursor carries, or `None` for a string this server never issues.
pub fn decode(cursor: &str) -> Option<i64> {
    let id = cursor.strip_prefix('j')?.parse::<i64>().ok()?;
    (id > 0 && encode(id) == cursor).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        for id in [1, 42, 1_000_000, i64::MAX] {
            assert_eq!(decode(&encode(id)), Some(id));
        }
    }

    /// Found by the fuzz target `cursor` (fuzz/corpus/cursor/regression-leading-zero): a leading
    /// zero or a plus sign parsed as the same id, so decode accepted cursors encode never makes.
    #[test]
    fn non_canonical_numbers_are_refused() {
        assert_eq!(decode("j0723372037685745807"), None);
        for bad in ["j01", "j+1", "j+42", "j00042"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn foreign_cursors_are_refused() {
        for bad in ["", "42", "j", "j-1", "j0", "jabc", "x42", "j 1", "J1"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
