//! Progress for long benchmark runs (run N of M): a bar on a terminal, nothing in CI or when
//! piped, so that logs and `--json` output stay clean.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether progress should be drawn: stderr is a terminal and `CI` is not set.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A bar of `len` steps titled `what`; hidden unless [`wanted`].
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(len),
        if wanted() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}

/// A [`bar`] of `len` runs that is cleared from the terminal when dropped, however its loop ends.
pub fn runs(len: u64, what: &str) -> Runs {
    Runs(bar(len, what))
}

/// See [`runs`].
pub struct Runs(ProgressBar);

impl Runs {
    /// Run `n` (from 0) is under way.
    pub fn at(&self, n: u64) {
        self.0.set_position(n);
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
