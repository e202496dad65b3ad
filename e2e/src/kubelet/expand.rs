//! `$(VAR)` expansion exactly as Kubernetes applies it to `env[].value`, `command` and `args`
//! (kubernetes `third_party/forked/golang/expansion`): `$(NAME)` becomes NAME's value when NAME
//! is defined and stays `$(NAME)` verbatim when it is not; `$$` is an escaped `$`; any other `$`
//! (and an unclosed `$(`) is kept as written.

/// Expands every `$(NAME)` in `input` through `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            let rest = &bytes[cursor + 1..];
            let advance = match rest[0] {
                b'$' => {
                    out.push(b'$');
                    1
                }
                b'(' => match rest.iter().position(|&b| b == b')') {
                    Some(close) => {
                        // '(' and ')' are ASCII, so the name is a whole UTF-8 slice.
                        let name = &input[cursor + 2..cursor + 1 + close];
                        match lookup(name) {
                            Some(value) => out.extend_from_slice(value.as_bytes()),
                            None => out.extend_from_slice(format!("$({name})").as_bytes()),
                        }
                        close + 1
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                other => {
                    out.push(b'$');
                    out.push(other);
                    1
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    out.extend_from_slice(&bytes[checkpoint.min(bytes.len())..]);
    // Only whole input bytes were copied, in order, around ASCII delimiters.
    String::from_utf8(out).expect("expansion keeps UTF-8 boundaries")
}

#[cfg(test)]
mod tests {
    use super::expand;
    use std::collections::HashMap;

    fn ex(input: &str) -> String {
        let vars: HashMap<&str, &str> =
            [("POD_IP", "127.0.0.2"), ("EMPTY", ""), ("X", "x$(Y)")].into();
        expand(input, |n| vars.get(n).map(|v| v.to_string()))
    }

    #[test]
    fn defined_variables_are_replaced() {
        assert_eq!(ex("$(POD_IP):8080"), "127.0.0.2:8080");
        assert_eq!(ex("a$(EMPTY)b"), "ab");
        assert_eq!(ex("$(POD_IP)$(POD_IP)"), "127.0.0.2127.0.0.2");
    }

    #[test]
    fn values_are_not_expanded_again() {
        assert_eq!(ex("$(X)"), "x$(Y)");
    }

    #[test]
    fn undefined_variables_stay_verbatim() {
        assert_eq!(ex("$(NOPE) and $(POD_IP)"), "$(NOPE) and 127.0.0.2");
        assert_eq!(ex("$()"), "$()");
    }

    #[test]
    fn dollar_dollar_escapes_and_other_dollars_stay() {
        assert_eq!(ex("$$(POD_IP)"), "$(POD_IP)");
        assert_eq!(ex("$$$(POD_IP)"), "$127.0.0.2");
        assert_eq!(ex("cost $5 $"), "cost $5 $");
        assert_eq!(ex("sh -c 'echo $HOME'"), "sh -c 'echo $HOME'");
    }

    #[test]
    fn unclosed_reference_is_kept() {
        assert_eq!(ex("$(POD_IP"), "$(POD_IP");
        assert_eq!(ex("a $( b"), "a $( b");
    }

    #[test]
    fn multibyte_text_is_kept() {
        assert_eq!(ex("é$(POD_IP)ü $é"), "é127.0.0.2ü $é");
    }
}
