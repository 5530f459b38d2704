//! The built-in `local` provider: renders a deterministic PNG from the prompt, so the whole
//! flow works with no upstream key. Same prompt and seed, same image; drafts are smaller.

pub mod render;
