//! `:name` parameters in a user's SQL statement, found by a small lexer that skips string
//! literals, quoted identifiers (`"x"`, MySQL's `` `x` ``), comments, dollar quotes and `::`
//! casts.

/// One piece of a statement: text to keep, or a parameter name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Param(&'a str),
}

fn is_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_part(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

fn lex(sql: &str) -> Vec<Piece<'_>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    // Skips to just past the next `end`, or to the end of the input.
    let skip_to = |from: usize, end: &[u8]| -> usize {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |p| from + p + end.len())
    };
    while i < b.len() {
        match b[i] {
            // '' and "" inside quotes are escapes; scanning to the next quote twice handles them.
            b'\'' => i = skip_to(i + 1, b"'"),
            b'"' => i = skip_to(i + 1, b"\""),
            // MySQL's quoted identifiers.
            b'`' => i = skip_to(i + 1, b"`"),
            b'-' if b.get(i + 1) == Some(&b'-') => i = skip_to(i + 2, b"\n"),
            b'/' if b.get(i + 1) == Some(&b'*') => i = skip_to(i + 2, b"*/"),
            b'$' => {
                // $tag$ … $tag$ (tag may be empty); a lone $1 is a positional parameter.
                let tag_end = b[i + 1..]
                    .iter()
                    .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                    .map(|p| i + 1 + p);
                match tag_end {
                    Some(e)
                        if b[e] == b'$' && !b[i + 1..e].first().is_some_and(u8::is_ascii_digit) =>
                    {
                        let tag = &b[i..=e];
                        i = skip_to(e + 1, tag);
                    }
                    _ => i += 1,
                }
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b.get(i + 1).copied().is_some_and(is_start) => {
                let mut e = i + 1;
                while e < b.len() && is_part(b[e]) {
                    e += 1;
                }
                // A trailing dot is punctuation, not part of the name.
                while b[e - 1] == b'.' {
                    e -= 1;
                }
                out.push(Piece::Text(&sql[text_start..i]));
                out.push(Piece::Param(&sql[i + 1..e]));
                text_start = e;
                i = e;
            }
            _ => i += 1,
        }
    }
    out.push(Piece::Text(&sql[text_start..]));
    out
}

/// Distinct parameter names in order of first use.
pub fn named_params(sql: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for p in lex(sql) {
        if let Piece::Param(n) = p {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
    }
    names
}

/// Parameter names in order of use, repeated where a name is used again (one MySQL `?` each).
pub fn occurrences(sql: &str) -> Vec<String> {
    lex(sql)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Param(n) => Some(n.to_string()),
            Piece::Text(_) => None,
        })
        .collect()
}

/// The statement with each `:name` replaced by `render(position)` (1-based, one position per
/// distinct name), and the names by position.
pub fn rewrite(sql: &str, render: impl Fn(usize) -> String) -> (String, Vec<String>) {
    let names = named_params(sql);
    let mut out = String::with_capacity(sql.len() + 8 * names.len());
    for p in lex(sql) {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Param(n) => {
                let pos = names.iter().position(|x| x == n).unwrap_or(0) + 1;
                out.push_str(&render(pos));
            }
        }
    }
    (out, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_found_outside_quotes_comments_and_casts() {
        let sql = "INSERT INTO t (a, b, \"c:x\") VALUES (:id, :user.name, ':no') \
                   ON CONFLICT (a) DO UPDATE SET b = :id::text -- :comment\n \
                   /* :block */ , d = $q$ :dollar $q$, e = $1";
        assert_eq!(named_params(sql), vec!["id", "user.name"]);
        assert_eq!(occurrences(sql), vec!["id", "user.name", "id"]);
        assert_eq!(named_params("SELECT `a:b`, :c"), vec!["c"]);
        let (out, names) = rewrite(sql, |i| format!("${i}"));
        assert_eq!(names, vec!["id", "user.name"]);
        assert!(out.contains("VALUES ($1, $2, ':no')"), "{out}");
        assert!(out.contains("b = $1::text"), "{out}");
        assert!(out.contains("-- :comment"), "{out}");
        assert!(out.contains("$q$ :dollar $q$"), "{out}");
    }

    #[test]
    fn a_trailing_dot_ends_the_name() {
        assert_eq!(named_params("select :a. from x"), vec!["a"]);
        assert_eq!(named_params("select 1"), Vec::<String>::new());
        assert_eq!(named_params("select ':'"), Vec::<String>::new());
        // An unterminated literal swallows the rest instead of panicking.
        assert_eq!(named_params("select 'abc :x"), Vec::<String>::new());
    }
}
