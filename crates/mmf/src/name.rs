//! The portable segment-name rule.
//!
//! One rule on every platform, so a name that works on Linux works on Windows and back:
//! 1 to [`MAX_NAME_LEN`] characters from `A-Z a-z 0-9 . _ -`, not starting with `.`.
//! It excludes `/` (POSIX shm names are a single path component), `\` (the Windows object
//! namespace separator), and `.`/`..` (directory entries under `/dev/shm`).

use crate::error::{Error, Result};

/// Longest accepted segment name, in characters (all of which are ASCII).
pub const MAX_NAME_LEN: usize = 200;

/// Checks `name` against the portable rule, returning a typed error that says what is wrong.
pub(crate) fn validate(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 200 characters")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character outside A-Z a-z 0-9 . _ -")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks the name of an internal companion object, `<base>+<suffix>` (see
/// `MmfOptions::companion`): `<base>` follows the user rule, `<suffix>` is 1 to 16 lower-case
/// letters. The `+` is outside the user alphabet, so a companion never takes a user's name.
pub(crate) fn validate_companion(name: &str) -> Result<()> {
    let Some((base, suffix)) = name.rsplit_once('+') else {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "an internal companion name needs a '+' suffix",
        });
    };
    validate(base)?;
    if suffix.is_empty() || suffix.len() > 16 || !suffix.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "an internal companion suffix is 1 to 16 lower-case letters",
        });
    }
    Ok(())
}

/// Suffix of a frame channel's reader table's name: `+` is outside the user alphabet (see
/// [`crate::Mmf`], "Names"), so no user's segment can be called that.
const TABLE_SUFFIX: &str = "+readers";

/// The OS name of the reader table of channel `channel`: `<channel>+readers` (module docs of
/// [`crate::channel`], "Reader table layout"). [`Mmf::remove`](crate::Mmf::remove) removes
/// it with the channel.
///
/// Here, with the name rule, rather than in the channel: both the channel (which creates
/// the table) and the segment (whose `remove` removes it) need it, and the segment stands
/// below the channel.
pub fn reader_table_name(channel: &str) -> String {
    format!("{channel}{TABLE_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_portable_names() {
        for name in [
            "a",
            "cam0",
            "Camera_1.frames-v2",
            "0",
            "a.",
            &"x".repeat(200),
        ] {
            assert!(validate(name).is_ok(), "{name:?} should be valid");
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_name_with_its_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            (&"x".repeat(201), "longer than 200"),
            (".hidden", "starts with '.'"),
            (".", "starts with '.'"),
            ("..", "starts with '.'"),
            ("a/b", "outside"),
            ("/abs", "outside"),
            ("a\\b", "outside"),
            ("Global\\x", "outside"),
            ("sp ace", "outside"),
            ("nul\0", "outside"),
            ("ümlaut", "outside"),
            ("a:b", "outside"),
        ];
        for (name, why) in cases {
            match validate(name) {
                Err(Error::InvalidName { name: n, reason }) => {
                    assert_eq!(&n, name);
                    assert!(reason.contains(why), "{name:?}: {reason}");
                }
                other => panic!("{name:?}: expected InvalidName, got {other:?}"),
            }
        }
    }
}
