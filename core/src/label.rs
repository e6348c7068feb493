//! The `tokenlabel` and `tokenissuer` templates of the otpauth URI (spec 4.4). The policy code
//! calls [`validate`] when it loads a policy, so a bad template is refused at load time (where
//! privacyIDEA silently drops the whole URI at enrollment); enrollment calls [`render`] and hands
//! the result to `otpauth::uri`, which percent-encodes it and cuts the label to length.
//!
//! Tags: the legacy `<s>` `<u>` `<r>`, and `{serial}` `{user}` `{realm}` `{givenname}` `{surname}`
//! of Python's format syntax, with `{{` and `}}` for literal braces.

/// The values the tags stand for. Missing ones are empty strings, as in privacyIDEA.
#[derive(Debug, Clone, Default)]
pub struct LabelVars<'a> {
    pub serial: &'a str,
    pub user: &'a str,
    pub realm: &'a str,
    pub givenname: &'a str,
    pub surname: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown tag {{{tag}}} in template (known: {{serial}} {{user}} {{realm}} {{givenname}} {{surname}}, \
         and the legacy <s> <u> <r>)"
    )]
    UnknownTag { tag: String },
    #[error("unbalanced brace at byte {position} of the template (write {{{{ or }}}} for a literal brace)")]
    UnbalancedBrace { position: usize },
}

/// Checks a template at config load: legacy tags `<s>` `<u>` `<r>`, then `{serial}` `{user}`
/// `{realm}` `{givenname}` `{surname}`; `{{` and `}}` are literal braces; any other `{tag}`, a
/// `{` without its `}` and a lone `}` are errors. A template that passes renders without error.
pub fn validate(template: &str) -> Result<(), TemplateError> {
    expand(template, &LabelVars::default()).map(|_| ())
}

/// Renders a template: `<s>` serial, `<u>` user, `<r>` realm, then the `{..}` tags; missing
/// values are empty strings (so `{user}@{realm}` without a user gives `@`).
///
/// privacyIDEA replaces the legacy tags first and then formats the result. This does both in one
/// left-to-right pass, which gives the same text for every template [`validate`] accepts, but
/// never reads tags inside the inserted values (a user name holding `{` or `<r>` stays as it is).
pub fn render(template: &str, vars: &LabelVars<'_>) -> Result<String, TemplateError> {
    expand(template, vars)
}

/// Splits a GECOS/full name into (givenname, surname) at the first run of whitespace: "Alice
/// Smith" → ("Alice", "Smith"); "Alice" → ("Alice", ""); "Anna Maria de Vries" → ("Anna", "Maria
/// de Vries"); "" → ("", ""). Only the part before the first comma counts, because the other
/// comma-separated GECOS fields are room and phone numbers ("Bob,Room 1" → ("Bob", "")).
pub fn split_name(full: &str) -> (&str, &str) {
    let name = full.split_once(',').map_or(full, |(name, _)| name).trim();
    match name.split_once(char::is_whitespace) {
        Some((given, sur)) => (given, sur.trim_start()),
        None => (name, ""),
    }
}

fn expand(template: &str, vars: &LabelVars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        let position = template.len() - rest.len();
        if let Some((value, after)) = legacy_tag(rest, vars) {
            out.push_str(value);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = rest.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            // The field runs to the next brace, which must be a closing one (Python refuses a
            // `{` inside a field name too).
            let (tag, after) = match after.split_once(['{', '}']) {
                Some((tag, tail)) if after.as_bytes().get(tag.len()) == Some(&b'}') => (tag, tail),
                _ => return Err(TemplateError::UnbalancedBrace { position }),
            };
            out.push_str(brace_tag(tag, vars)?);
            rest = after;
        } else if c == '}' {
            return Err(TemplateError::UnbalancedBrace { position });
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    Ok(out)
}

/// The value of the legacy tag at the start of `s` and the text after it.
fn legacy_tag<'s, 'v>(s: &'s str, vars: &LabelVars<'v>) -> Option<(&'v str, &'s str)> {
    [("<s>", vars.serial), ("<u>", vars.user), ("<r>", vars.realm)]
        .into_iter()
        .find_map(|(tag, value)| s.strip_prefix(tag).map(|after| (value, after)))
}

fn brace_tag<'v>(tag: &str, vars: &LabelVars<'v>) -> Result<&'v str, TemplateError> {
    match tag {
        "serial" => Ok(vars.serial),
        "user" => Ok(vars.user),
        "realm" => Ok(vars.realm),
        "givenname" => Ok(vars.givenname),
        "surname" => Ok(vars.surname),
        _ => Err(TemplateError::UnknownTag { tag: tag.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> LabelVars<'static> {
        LabelVars {
            serial: "TOTP0002C4D5",
            user: "alice",
            realm: "realm1",
            givenname: "Alice",
            surname: "Smith",
        }
    }

    #[test]
    fn user_at_realm() {
        assert_eq!(render("{user}@{realm}", &alice()).unwrap(), "alice@realm1");
    }

    #[test]
    fn missing_user_gives_empty_strings() {
        let vars = LabelVars { serial: "X", ..LabelVars::default() };
        assert_eq!(render("{user}@{realm}", &vars).unwrap(), "@");
        assert_eq!(render("<u>@<r>", &vars).unwrap(), "@");
        assert_eq!(render("{givenname}{surname}", &vars).unwrap(), "");
    }

    #[test]
    fn legacy_tags() {
        assert_eq!(render("<u>@<r>/<s>", &alice()).unwrap(), "alice@realm1/TOTP0002C4D5");
        assert_eq!(render("<s>", &alice()).unwrap(), "TOTP0002C4D5");
        // Not a legacy tag: left as typed.
        assert_eq!(render("<x> <S> <s", &alice()).unwrap(), "<x> <S> <s");
    }

    #[test]
    fn mixed_tags() {
        assert_eq!(render("{givenname} {surname}/<s>", &alice()).unwrap(), "Alice Smith/TOTP0002C4D5");
        assert_eq!(render("ACME {realm}", &alice()).unwrap(), "ACME realm1");
        assert_eq!(render("{serial}:<u>", &alice()).unwrap(), "TOTP0002C4D5:alice");
        assert_eq!(render("", &alice()).unwrap(), "");
        assert_eq!(render("Zürich ☃ {user}", &alice()).unwrap(), "Zürich ☃ alice");
    }

    #[test]
    fn literal_braces() {
        assert_eq!(render("{{literal}}", &alice()).unwrap(), "{literal}");
        assert_eq!(render("{{{user}}}", &alice()).unwrap(), "{alice}");
        assert_eq!(render("{{<s>}}", &alice()).unwrap(), "{TOTP0002C4D5}");
        assert_eq!(validate("a}}b{{c"), Ok(()));
    }

    #[test]
    fn unknown_tags_are_refused() {
        let err = validate("{nope}").unwrap_err();
        assert_eq!(err, TemplateError::UnknownTag { tag: "nope".into() });
        let msg = err.to_string();
        assert!(msg.contains("{nope}") && msg.contains("{givenname}") && msg.contains("<s>"), "{msg}");
        assert_eq!(render("{nope}", &alice()), Err(err));
        // Python's format syntax beyond plain names is not supported, nor are other spellings.
        for bad in ["{}", "{0}", "{User}", "{ user }", "{user!r}", "{user:>10}", "{<s>}"] {
            assert!(matches!(validate(bad), Err(TemplateError::UnknownTag { .. })), "{bad}");
        }
    }

    #[test]
    fn unbalanced_braces_are_refused() {
        assert_eq!(validate("{user"), Err(TemplateError::UnbalancedBrace { position: 0 }));
        assert_eq!(validate("ab{"), Err(TemplateError::UnbalancedBrace { position: 2 }));
        assert_eq!(validate("a}b"), Err(TemplateError::UnbalancedBrace { position: 1 }));
        assert_eq!(validate("{user}}"), Err(TemplateError::UnbalancedBrace { position: 6 }));
        assert_eq!(validate("{us{er}}"), Err(TemplateError::UnbalancedBrace { position: 0 }));
        assert!(render("{user", &alice()).is_err());
        let msg = validate("{user").unwrap_err().to_string();
        assert!(msg.contains("{{ or }}"), "{msg}");
    }

    #[test]
    fn values_are_not_parsed_again() {
        let vars = LabelVars { user: "a{b}<r>", realm: "r", ..LabelVars::default() };
        assert_eq!(render("<u>@{realm}", &vars).unwrap(), "a{b}<r>@r");
        assert_eq!(render("{user}", &vars).unwrap(), "a{b}<r>");
    }

    #[test]
    fn names() {
        assert_eq!(split_name("Alice Smith"), ("Alice", "Smith"));
        assert_eq!(split_name("Alice"), ("Alice", ""));
        assert_eq!(split_name("Anna Maria de Vries"), ("Anna", "Maria de Vries"));
        assert_eq!(split_name(""), ("", ""));
        assert_eq!(split_name("  Alice \t Smith  "), ("Alice", "Smith"));
        assert_eq!(split_name("Alice Example,,,"), ("Alice", "Example"));
        assert_eq!(split_name("Bob,Room 1,,"), ("Bob", ""));
        assert_eq!(split_name(",Room 1"), ("", ""));
        assert_eq!(split_name("   "), ("", ""));
    }
}
