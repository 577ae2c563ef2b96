//! JSON text exactly as Python's `json` module writes it with Instaloader's settings, so that the
//! exported files are byte for byte the reference client's: `ensure_ascii` (every character
//! outside `' '..='~'` escaped as `\uXXXX`, lower-case hex, surrogate pairs above U+FFFF), floats
//! as Python's `repr` (`15.0`, `1e-05`, `1e+16`), keys in the order the object holds them.
//!
//! [`compact`] is `json.dump(obj, fp, separators=(",", ":"))` (the `.json.xz` files);
//! [`indented`] is `json.dumps(obj, indent=4)` (the `_comments.json` files).

use serde_json::{Number, Value};

/// `json.dumps(value, separators=(",", ":"))`.
pub fn compact(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, None, 0);
    out
}

/// `json.dumps(value, indent=4)`: a line per item, `": "` between key and value, `[]` and `{}`
/// for empty containers, no newline at the end.
pub fn indented(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, Some(4), 0);
    out
}

fn newline(out: &mut String, indent: Option<usize>, level: usize) {
    if let Some(width) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', width * level));
    }
}

fn write_value(out: &mut String, value: &Value, indent: Option<usize>, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_value(out, item, indent, level + 1);
            }
            newline(out, indent, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_string(out, key);
                out.push_str(if indent.is_some() { ": " } else { ":" });
                write_value(out, item, indent, level + 1);
            }
            newline(out, indent, level);
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&float_repr(f));
    }
}

/// Python's `repr(float)`: the shortest digits that read back as the same float (Rust's `{:e}`
/// finds the same ones), in fixed notation when the decimal point falls within 16 digits of the
/// first, else in scientific notation with a signed exponent of at least two digits.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Where the decimal point sits, counted from the first digit.
    let point = exponent + 1;
    let mut text = String::from(sign);
    if point <= -4 || point > 16 {
        text.push_str(&digits[..1]);
        if digits.len() > 1 {
            text.push('.');
            text.push_str(&digits[1..]);
        }
        let e = point - 1;
        text.push_str(&format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs()));
    } else if point <= 0 {
        text.push_str("0.");
        text.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        text.push_str(&digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            text.push_str(&digits);
            text.extend(std::iter::repeat_n('0', point - digits.len()));
            text.push_str(".0");
        } else {
            text.push_str(&digits[..point]);
            text.push('.');
            text.push_str(&digits[point..]);
        }
    }
    text
}

/// A JSON string with `ensure_ascii`: printable ASCII stays, `"` and `\` are escaped, the usual
/// short escapes for control characters, `\uXXXX` for everything else (DEL included).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_read_as_python_writes_them() {
        for (f, python) in [
            (15.0, "15.0"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (35.6762, "35.6762"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.5e300, "1.5e+300"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (123.456, "123.456"),
        ] {
            assert_eq!(float_repr(f), python, "{f:e}");
        }
    }

    #[test]
    fn strings_are_ascii_with_python_escapes() {
        // Checked against Python 3's json.dumps.
        let v = json!({"a": "\u{7f}\u{1f}\u{e9}\u{1F600}/\\\"\n\t\u{8}\u{c}\r"});
        assert_eq!(
            compact(&v),
            r#"{"a":"\u007f\u001f\u00e9\ud83d\ude00/\\\"\n\t\b\f\r"}"#
        );
    }

    #[test]
    fn key_order_and_layouts_follow_python() {
        let v: Value =
            serde_json::from_str(r#"{"z":[1,2.0,{"b":null,"a":true}],"a":{},"m":[]}"#).unwrap();
        assert_eq!(
            compact(&v),
            r#"{"z":[1,2.0,{"b":null,"a":true}],"a":{},"m":[]}"#
        );
        assert_eq!(
            indented(&v),
            "{\n    \"z\": [\n        1,\n        2.0,\n        {\n            \"b\": null,\n            \
             \"a\": true\n        }\n    ],\n    \"a\": {},\n    \"m\": []\n}"
        );
        assert_eq!(indented(&json!([])), "[]");
        assert_eq!(compact(&json!(u64::MAX)), "18446744073709551615");
    }
}
