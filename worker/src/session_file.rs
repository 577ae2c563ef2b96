//! Instaloader session files: a Python pickle of the session's cookie dict
//! (`pickle.dump(requests.utils.dict_from_cookiejar(session.cookies), f)`), read without Python.
//!
//! Only the opcodes that a dict of strings can produce, in pickle protocols 0 to 5, are accepted;
//! anything else (above all `GLOBAL`/`REDUCE`, which make Python run code) is refused with the
//! opcode and its offset. Sizes are bounded so a huge or hostile file cannot exhaust memory.

use std::collections::BTreeMap;

/// Largest session file accepted.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most cookies in one file.
pub const MAX_ENTRIES: usize = 1000;
/// Longest cookie name or value.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Most bytes the memo may copy (`MEMOIZE`/`PUT` and `GET` copy an item): a real session file
/// copies each string about once, while a few bytes of `GET`s of one long string would otherwise
/// ask for gigabytes.
pub const MAX_COPIED_BYTES: usize = 2 * MAX_FILE_BYTES;
/// Most items on the pickle stack at once.
pub const MAX_STACK: usize = 4 * MAX_ENTRIES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionFileError {
    #[error("session file is empty")]
    Empty,
    #[error("session file is {0} bytes; at most {MAX_FILE_BYTES} are accepted")]
    TooLarge(usize),
    #[error("not an Instaloader session file: it does not start like a pickle")]
    NotAPickle,
    #[error("session file is truncated at byte {0}")]
    Truncated(usize),
    #[error(
        "unexpected pickle opcode 0x{opcode:02x} at byte {offset}: a session file holds only a dict of strings"
    )]
    UnexpectedOpcode { opcode: u8, offset: usize },
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: &'static str },
    #[error("session file holds {0}, not a dict of cookies")]
    NotADict(&'static str),
    #[error("a cookie {0} is not a string")]
    NotAString(&'static str),
    #[error("session file has more than {MAX_ENTRIES} cookies")]
    TooManyEntries,
    #[error("a cookie name or value is longer than {MAX_STRING_BYTES} bytes")]
    StringTooLong,
    #[error(
        "pickle memo copies more than {MAX_COPIED_BYTES} bytes (at byte {0}): not a session file"
    )]
    MemoTooLarge(usize),
    #[error("pickle stack holds more than {MAX_STACK} items (at byte {0}): not a dict of cookies")]
    StackTooDeep(usize),
    #[error("session file has no {0} cookie: it is not a logged-in Instagram session")]
    MissingCookie(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Mark,
    Str(String),
    Dict(Vec<(Item, Item)>),
    None,
    Other(&'static str),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SessionFileError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(SessionFileError::Truncated(self.bytes.len()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, SessionFileError> {
        Ok(self.take(1)?[0])
    }

    fn le(&mut self, n: usize) -> Result<u64, SessionFileError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn line(&mut self) -> Result<&'a [u8], SessionFileError> {
        let rest = &self.bytes[self.pos..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(SessionFileError::Truncated(self.bytes.len()))?;
        self.pos += nl + 1;
        Ok(&rest[..nl])
    }

    fn string(&mut self, len: u64, offset: usize) -> Result<String, SessionFileError> {
        let len = usize::try_from(len).map_err(|_| SessionFileError::StringTooLong)?;
        if len > MAX_STRING_BYTES {
            return Err(SessionFileError::StringTooLong);
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| SessionFileError::Malformed {
            offset,
            reason: "string is not valid UTF-8",
        })
    }
}

/// Decodes Python's raw-unicode-escape (protocol 0 `V` strings): latin-1 with `\uXXXX` and
/// `\UXXXXXXXX` escapes.
fn raw_unicode_escape(line: &[u8], offset: usize) -> Result<String, SessionFileError> {
    let bad = SessionFileError::Malformed {
        offset,
        reason: "bad \\u escape",
    };
    let mut out = String::new();
    let mut i = 0;
    while i < line.len() {
        if line[i] == b'\\' && i + 1 < line.len() && (line[i + 1] == b'u' || line[i + 1] == b'U') {
            let width = if line[i + 1] == b'u' { 4 } else { 8 };
            let hex = line.get(i + 2..i + 2 + width).ok_or(bad.clone())?;
            let code = u32::from_str_radix(std::str::from_utf8(hex).map_err(|_| bad.clone())?, 16)
                .map_err(|_| bad.clone())?;
            out.push(char::from_u32(code).ok_or(bad.clone())?);
            i += 2 + width;
        } else {
            out.push(char::from(line[i]));
            i += 1;
        }
    }
    if out.len() > MAX_STRING_BYTES {
        return Err(SessionFileError::StringTooLong);
    }
    Ok(out)
}

/// Roughly how many bytes copying `item` costs.
fn copy_cost(item: &Item) -> usize {
    match item {
        Item::Str(s) => s.len() + 16,
        Item::Dict(entries) => {
            entries
                .iter()
                .map(|(k, v)| copy_cost(k) + copy_cost(v))
                .sum::<usize>()
                + 16
        }
        Item::Mark | Item::None | Item::Other(_) => 16,
    }
}

fn pop_mark(stack: &mut Vec<Item>, offset: usize) -> Result<Vec<Item>, SessionFileError> {
    let mark = stack
        .iter()
        .rposition(|i| *i == Item::Mark)
        .ok_or(SessionFileError::Malformed {
            offset,
            reason: "no MARK before SETITEMS/DICT",
        })?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
}

fn pairs(items: Vec<Item>, offset: usize) -> Result<Vec<(Item, Item)>, SessionFileError> {
    if !items.len().is_multiple_of(2) {
        return Err(SessionFileError::Malformed {
            offset,
            reason: "odd number of items for a dict",
        });
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn add_to_dict(
    stack: &mut [Item],
    new: Vec<(Item, Item)>,
    offset: usize,
) -> Result<(), SessionFileError> {
    match stack.last_mut() {
        Some(Item::Dict(entries)) => {
            entries.extend(new);
            if entries.len() > MAX_ENTRIES {
                return Err(SessionFileError::TooManyEntries);
            }
            Ok(())
        }
        _ => Err(SessionFileError::Malformed {
            offset,
            reason: "SETITEM(S) without a dict",
        }),
    }
}

/// The memo index of a PUT/GET: one byte (`q`, `h`), four bytes (`r`, `j`) or a decimal line
/// (protocol 0 `p`, `g`).
fn memo_index(r: &mut Reader<'_>, op: u8, offset: usize) -> Result<u64, SessionFileError> {
    match op {
        b'q' | b'h' => r.le(1),
        b'r' | b'j' => r.le(4),
        _ => {
            let line = r.line()?;
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(SessionFileError::Malformed {
                    offset,
                    reason: "bad memo index",
                })
        }
    }
}

/// Parses the cookie dict of an Instaloader session file.
pub fn parse(bytes: &[u8]) -> Result<BTreeMap<String, String>, SessionFileError> {
    if bytes.is_empty() {
        return Err(SessionFileError::Empty);
    }
    if bytes.len() > MAX_FILE_BYTES {
        return Err(SessionFileError::TooLarge(bytes.len()));
    }
    // Protocol 2+ starts with PROTO (0x80); protocol 0/1 dicts start with MARK '(' or '}'.
    if !matches!(bytes[0], 0x80 | b'(' | b'}') {
        return Err(SessionFileError::NotAPickle);
    }
    let mut r = Reader { bytes, pos: 0 };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: BTreeMap<u64, Item> = BTreeMap::new();
    let mut copied = 0usize;
    let mut copy = |item: &Item, offset: usize| {
        copied = copied.saturating_add(copy_cost(item));
        if copied > MAX_COPIED_BYTES {
            Err(SessionFileError::MemoTooLarge(offset))
        } else {
            Ok(())
        }
    };
    loop {
        let offset = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(SessionFileError::Malformed {
                        offset,
                        reason: "pickle protocol above 5",
                    });
                }
            }
            0x95 => {
                r.le(8)?; // FRAME: a length hint only.
            }
            b'}' => stack.push(Item::Dict(Vec::new())),
            b'(' => stack.push(Item::Mark),
            b'd' => {
                let items = pop_mark(&mut stack, offset)?;
                let entries = pairs(items, offset)?;
                if entries.len() > MAX_ENTRIES {
                    return Err(SessionFileError::TooManyEntries);
                }
                stack.push(Item::Dict(entries));
            }
            b'u' => {
                let items = pop_mark(&mut stack, offset)?;
                let new = pairs(items, offset)?;
                add_to_dict(&mut stack, new, offset)?;
            }
            b's' => {
                let (Some(v), Some(k)) = (stack.pop(), stack.pop()) else {
                    return Err(SessionFileError::Malformed {
                        offset,
                        reason: "SETITEM with too few items",
                    });
                };
                add_to_dict(&mut stack, vec![(k, v)], offset)?;
            }
            0x8c => {
                let len = r.le(1)?;
                stack.push(Item::Str(r.string(len, offset)?));
            }
            b'X' => {
                let len = r.le(4)?;
                stack.push(Item::Str(r.string(len, offset)?));
            }
            0x8d => {
                let len = r.le(8)?;
                stack.push(Item::Str(r.string(len, offset)?));
            }
            b'U' => {
                // SHORT_BINSTRING (Python 2 str): bytes, taken as UTF-8.
                let len = r.le(1)?;
                stack.push(Item::Str(r.string(len, offset)?));
            }
            b'T' => {
                let len = r.le(4)?;
                stack.push(Item::Str(r.string(len, offset)?));
            }
            b'V' => {
                let line = r.line()?;
                stack.push(Item::Str(raw_unicode_escape(line, offset)?));
            }
            b'N' => stack.push(Item::None),
            b'K' | b'M' | b'J' => {
                r.take(match op {
                    b'K' => 1,
                    b'M' => 2,
                    _ => 4,
                })?;
                stack.push(Item::Other("an integer"));
            }
            0x94 => {
                let top = stack.last().cloned().ok_or(SessionFileError::Malformed {
                    offset,
                    reason: "MEMOIZE on an empty stack",
                })?;
                copy(&top, offset)?;
                memo.insert(memo.len() as u64, top);
            }
            b'q' | b'r' | b'p' => {
                let index = memo_index(&mut r, op, offset)?;
                let top = stack.last().cloned().ok_or(SessionFileError::Malformed {
                    offset,
                    reason: "PUT on an empty stack",
                })?;
                copy(&top, offset)?;
                memo.insert(index, top);
            }
            b'h' | b'j' | b'g' => {
                let index = memo_index(&mut r, op, offset)?;
                let item = memo
                    .get(&index)
                    .cloned()
                    .ok_or(SessionFileError::Malformed {
                        offset,
                        reason: "GET of an unknown memo entry",
                    })?;
                if matches!(item, Item::Dict(_)) {
                    return Err(SessionFileError::Malformed {
                        offset,
                        reason: "a dict referring to itself",
                    });
                }
                copy(&item, offset)?;
                stack.push(item);
            }
            b'.' => break,
            other => {
                return Err(SessionFileError::UnexpectedOpcode {
                    opcode: other,
                    offset,
                });
            }
        }
        if stack.len() > MAX_STACK {
            return Err(SessionFileError::StackTooDeep(offset));
        }
    }
    let top = match stack.pop() {
        Some(Item::Dict(entries)) if stack.is_empty() => entries,
        Some(Item::Dict(_)) => {
            return Err(SessionFileError::Malformed {
                offset: r.pos,
                reason: "items left on the stack",
            });
        }
        Some(Item::Str(_)) => return Err(SessionFileError::NotADict("a string")),
        Some(Item::None) => return Err(SessionFileError::NotADict("None")),
        Some(Item::Other(what)) => return Err(SessionFileError::NotADict(what)),
        Some(Item::Mark) | None => return Err(SessionFileError::NotADict("nothing")),
    };
    let mut cookies = BTreeMap::new();
    for (k, v) in top {
        match (k, v) {
            (Item::Str(k), Item::Str(v)) => {
                cookies.insert(k, v);
            }
            (Item::Str(_), _) => return Err(SessionFileError::NotAString("value")),
            _ => return Err(SessionFileError::NotAString("name")),
        }
    }
    Ok(cookies)
}

/// Parses a session file and checks that it is a logged-in session (`sessionid` and
/// `ds_user_id` present and non-empty).
pub fn parse_session(bytes: &[u8]) -> Result<BTreeMap<String, String>, SessionFileError> {
    let cookies = parse(bytes)?;
    for required in ["sessionid", "ds_user_id"] {
        if cookies.get(required).is_none_or(|v| v.is_empty()) {
            return Err(SessionFileError::MissingCookie(required));
        }
    }
    Ok(cookies)
}
