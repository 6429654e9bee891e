//! What a username and a password may be. Usernames become account ids in every order and Redis
//! key, so they keep to the account alphabet (DESIGN.md §2) and are case-insensitive: trimmed and
//! lower-cased before anything else, as the original lab did.

/// Shortest username.
pub const USERNAME_MIN: usize = 3;
/// Longest username (an account id is at most 32 bytes).
pub const USERNAME_MAX: usize = 32;
/// Shortest password (OWASP: at least 8 with multi-factor, we ask for 10 without).
pub const PASSWORD_MIN: usize = 10;
/// Longest password, in bytes (argon2 takes any length; this bounds the work a request can ask).
pub const PASSWORD_MAX: usize = 128;

/// A rule broken, with the field it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// `username` or `password`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn broken(field: &'static str, message: impl Into<String>) -> Broken {
    Broken { field, message: message.into() }
}

/// The username as stored: trimmed, lower-cased, 3–32 characters of `a–z 0–9 . _ -`, starting
/// with a letter or digit. The name `anonymous` is the development mode's shared account.
pub fn username(raw: &str) -> Result<String, Broken> {
    let name = raw.trim().to_ascii_lowercase();
    let len = name.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(broken(
            "username",
            format!("username must be {USERNAME_MIN} to {USERNAME_MAX} characters"),
        ));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')) {
        return Err(broken("username", "username may hold only letters a-z, digits, '.', '_' and '-'"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(broken("username", "username must start with a letter or a digit"));
    }
    if name == common::ids::ANONYMOUS {
        return Err(broken("username", "username \"anonymous\" is reserved"));
    }
    Ok(name)
}

/// A password for `user`: 10–128 bytes, not only spaces, not the username.
pub fn password(password: &str, user: &str) -> Result<(), Broken> {
    if password.len() < PASSWORD_MIN {
        return Err(broken("password", format!("password must be at least {PASSWORD_MIN} characters")));
    }
    if password.len() > PASSWORD_MAX {
        return Err(broken("password", format!("password must be at most {PASSWORD_MAX} bytes")));
    }
    if password.trim().is_empty() {
        return Err(broken("password", "password must not be only spaces"));
    }
    if password.trim().eq_ignore_ascii_case(user) {
        return Err(broken("password", "password must not be the username"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_trimmed_lower_cased_and_checked() {
        assert_eq!(username("  Alice.B-1 "), Ok("alice.b-1".into()));
        for bad in ["", "ab", "a b", "émile", "-abc", &"x".repeat(33), "bob:1", "Anonymous", "a/b"] {
            let e = username(bad).unwrap_err();
            assert_eq!(e.field, "username", "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_long_enough_and_not_the_name() {
        assert!(password("correct horse", "alice").is_ok());
        for bad in ["short", &" ".repeat(12), "ALICE", &"p".repeat(129)] {
            let e = password(bad, "alice").unwrap_err();
            assert_eq!(e.field, "password", "{bad:?}");
        }
        assert!(password("alicealice", "alice").is_ok(), "containing the name is fine");
    }
}
