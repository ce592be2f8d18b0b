//! The progress bar (indicatif), or nothing when asked to stay quiet.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(total: usize, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40.cyan/blue}] {pos}/{len} requests ({per_sec}, eta {eta})",
        )
        .expect("static template is valid")
        .progress_chars("=> "),
    );
    bar
}
