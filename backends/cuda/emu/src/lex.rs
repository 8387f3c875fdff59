//! Splits PTX text into tokens with their source lines, dropping `//`
//! comments, so the parser does not depend on how statements are laid out.

use crate::error::ParseError;

/// A word (`ld.global.f32`, `%rd1`, `$L0`, `-4`, `0f3F800000`) or one
/// punctuation character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Word(String),
    Punct(char),
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '%' | '-')
}

/// Tokenizes `text`; any character outside the dialect is an error.
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let code = raw.split("//").next().unwrap_or("");
        lex_line(code, line, &mut out)?;
    }
    Ok(out)
}

fn lex_line(code: &str, line: u32, out: &mut Vec<Token>) -> Result<(), ParseError> {
    let mut chars = code.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if is_word_char(c) {
            let mut end = start;
            while let Some(&(j, d)) = chars.peek() {
                if !is_word_char(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            out.push(Token {
                tok: Tok::Word(code[start..end].to_string()),
                line,
            });
        } else if ",;:(){}[]<>@!+|".contains(c) {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            chars.next();
        } else {
            return Err(ParseError::new(line, format!("unexpected character '{c}'")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_and_punctuation() {
        let t = lex("@!%p1 ld.global.f32 %f1, [%rd7+-4]; // x\n$L0:").unwrap();
        let words: Vec<String> = t
            .iter()
            .map(|t| match &t.tok {
                Tok::Word(w) => w.clone(),
                Tok::Punct(c) => c.to_string(),
            })
            .collect();
        assert_eq!(
            words,
            [
                "@",
                "!",
                "%p1",
                "ld.global.f32",
                "%f1",
                ",",
                "[",
                "%rd7",
                "+",
                "-4",
                "]",
                ";",
                "$L0",
                ":"
            ]
        );
        assert_eq!(t.last().unwrap().line, 2);
    }

    #[test]
    fn rejects_stray_characters() {
        assert_eq!(lex("\n a = b").unwrap_err().line, 2);
    }
}
