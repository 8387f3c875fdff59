//! Progress bars on stderr, drawn only when stderr is a terminal (so logs and pipes stay
//! clean).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar drawn with the indicatif `template`; its length is set as the work becomes known.
pub(crate) fn bar(template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(1);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
