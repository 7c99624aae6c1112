//! `${VAR}` interpolation in string values, as docker compose does it.
//!
//! `${VAR}` is the variable or empty, `${VAR:-default}` the default when VAR is unset or empty,
//! `${VAR:?message}` an error when VAR is unset or empty, `$$` a literal `$`. A `$` followed by
//! anything else is kept as it is.

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpandError {
    /// `${VAR:?message}` with VAR unset or empty.
    Required { var: String, message: String },
    /// `${` without its closing `}`.
    Unclosed,
    /// `${}` or a name with characters outside `[A-Za-z0-9_]`.
    BadName(String),
}

/// Expands `text`; `lookup` answers a variable's value. Also returns the variables it used.
pub(crate) fn expand(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), ExpandError> {
    if !text.contains('$') {
        return Ok((text.to_owned(), Vec::new()));
    }
    let mut out = String::with_capacity(text.len());
    let mut used = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner_and_tail) = after.strip_prefix('{') {
            let close = inner_and_tail.find('}').ok_or(ExpandError::Unclosed)?;
            let inner = &inner_and_tail[..close];
            out.push_str(&substitute(inner, lookup, &mut used)?);
            rest = &inner_and_tail[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok((out, used))
}

fn substitute(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    used: &mut Vec<String>,
) -> Result<String, ExpandError> {
    let (name, operator) = match inner.find(":-").into_iter().chain(inner.find(":?")).min() {
        Some(at) => (&inner[..at], Some((&inner[at..at + 2], &inner[at + 2..]))),
        None => (inner, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ExpandError::BadName(name.to_owned()));
    }
    used.push(name.to_owned());
    let value = lookup(name).filter(|v| !v.is_empty());
    match (value, operator) {
        (Some(value), _) => Ok(value),
        (None, None) => Ok(String::new()),
        (None, Some((":-", default))) => Ok(default.to_owned()),
        (None, Some((_, message))) => Err(ExpandError::Required {
            var: name.to_owned(),
            message: message.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/me".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, ExpandError> {
        expand(text, &env).map(|(s, _)| s)
    }

    #[test]
    fn expands_the_forms_compose_knows() {
        assert_eq!(run("${HOME}/x").unwrap(), "/home/me/x");
        assert_eq!(run("${NOPE}").unwrap(), "");
        assert_eq!(run("${NOPE:-8010}").unwrap(), "8010");
        assert_eq!(run("${EMPTY:-d}").unwrap(), "d");
        assert_eq!(run("${HOME:-d}").unwrap(), "/home/me");
        assert_eq!(run("cost $$5 and $x").unwrap(), "cost $5 and $x");
        assert_eq!(run("${NOPE:-a:?b}").unwrap(), "a:?b");
    }

    #[test]
    fn reports_what_cannot_be_expanded() {
        assert_eq!(
            run("${DB_URL:?set DB_URL first}"),
            Err(ExpandError::Required {
                var: "DB_URL".into(),
                message: "set DB_URL first".into()
            })
        );
        assert_eq!(run("${HOME"), Err(ExpandError::Unclosed));
        assert_eq!(run("${}"), Err(ExpandError::BadName(String::new())));
        assert_eq!(run("${A B}"), Err(ExpandError::BadName("A B".into())));
    }

    #[test]
    fn records_the_variables_it_used() {
        let (_, used) = expand("${HOME}-${NOPE:-x}", &env).unwrap();
        assert_eq!(used, ["HOME", "NOPE"]);
    }
}
