//! What a generation prints: the new tokens as they come, then one JSON line.

use super::Generation;
use tokenizers::Tokenizer;

/// Turns the new tokens into text as they come: ids separated by spaces, or with a
/// tokenizer the text they add (the whole decoded again each time, so a character spread
/// over several tokens appears once it is complete).
pub struct TokenStream<'t> {
    tokenizer: Option<&'t Tokenizer>,
    ids: Vec<u32>,
    printed: usize,
}

impl<'t> TokenStream<'t> {
    /// A stream that prints ids, or text with `tokenizer`.
    pub fn new(tokenizer: Option<&'t Tokenizer>) -> TokenStream<'t> {
        TokenStream {
            tokenizer,
            ids: Vec::new(),
            printed: 0,
        }
    }

    /// The text `id` adds (empty while a character is unfinished).
    pub fn push(&mut self, id: i64) -> String {
        let first = self.ids.is_empty();
        self.ids.push(u32::try_from(id).unwrap_or(u32::MAX));
        let Some(t) = self.tokenizer else {
            return format!("{}{id}", if first { "" } else { " " });
        };
        let all = t.decode(&self.ids, true).unwrap_or_default();
        // Only a whole, grown prefix is printed; a replacement character at the end is an
        // unfinished multi-byte character.
        if all.len() <= self.printed
            || all.ends_with('\u{FFFD}')
            || !all.is_char_boundary(self.printed)
        {
            return String::new();
        }
        let new = all[self.printed..].to_string();
        self.printed = all.len();
        new
    }
}

/// Loads a Hugging Face `tokenizer.json`.
pub fn load_tokenizer(path: &std::path::Path) -> Result<Tokenizer, String> {
    Tokenizer::from_file(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The ids of `text` under `tokenizer`, without special tokens added.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<i64>, String> {
    let encoding = (tokenizer.encode(text, false)).map_err(|e| format!("the prompt: {e}"))?;
    Ok(encoding.get_ids().iter().map(|&i| i64::from(i)).collect())
}

/// The line that ends a generation: `prompt_tokens`, `ids`, `prefill_ms`,
/// `ms_per_token` (median), `p90_ms_per_token`, `tokens_per_s` (over `seconds`, the
/// whole generation) and `peak_rss_mb`, with `step_ms` when `steps`.
pub fn summary_json(out: &Generation, seconds: f64, steps: bool) -> String {
    let ids: Vec<String> = out.ids.iter().map(|i| i.to_string()).collect();
    let tokens_per_s = if seconds > 0.0 {
        out.ids.len() as f64 / seconds
    } else {
        0.0
    };
    let step_ms = if steps {
        let ms: Vec<String> = out.step_ms.iter().map(|m| format!("{m:.3}")).collect();
        format!(",\"step_ms\":[{}]", ms.join(","))
    } else {
        String::new()
    };
    format!(
        "{{\"prompt_tokens\":{},\"ids\":[{}],\"prefill_ms\":{:.3},\"ms_per_token\":{:.3},\"p90_ms_per_token\":{:.3},\"tokens_per_s\":{:.2},\"peak_rss_mb\":{:.1}{step_ms}}}",
        out.prompt_tokens,
        ids.join(","),
        out.prefill_ms,
        out.ms_per_token(),
        out.p90_ms_per_token(),
        tokens_per_s,
        peak_rss_mb()
    )
}

/// The process's peak resident memory (`VmHWM`), in MB; 0 where /proc is unreadable.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stream_separated_by_spaces_and_the_summary_lists_them() {
        let mut s = TokenStream::new(None);
        let text: String = [5, 17, 3].iter().map(|&id| s.push(id)).collect();
        assert_eq!(text, "5 17 3");
        let out = Generation {
            prompt_tokens: 2,
            ids: vec![5, 17],
            prefill_ms: 1.0,
            step_ms: vec![2.0],
        };
        let line = summary_json(&out, 0.5, true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ids"], serde_json::json!([5, 17]));
        assert_eq!(v["tokens_per_s"], serde_json::json!(4.0));
        assert_eq!(v["step_ms"], serde_json::json!([2.0]));
    }
}
