//! A task's buttons (`[{customId, emoji, label, type: 2, style: 2}]`) and what a customId
//! sent back to `/mj/submit/action` asks for (`contract/midjourney-proxy.md` §1.5): U1-U4,
//! 🔄, V1-V4 on a grid; upscale (subtle, creative), vary (subtle, strong, region), zoom out
//! (2x, 1.5x, custom) and pan on one image.

use crate::base::operation::{Direction, Operation, Strength, UpscaleStyle};

/// What one button does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    /// U1-U4 on a grid.
    Upscale(u32),
    /// V1-V4 on a grid.
    Variation(u32),
    Reroll,
    /// Vary (Subtle) / Vary (Strong) on one image.
    Vary(Strength),
    /// Vary (Region): a MODAL asking for the mask and prompt.
    Region,
    /// Zoom Out by a percentage (200 = 2x, 150 = 1.5x).
    Zoom(u16),
    /// Custom Zoom: a MODAL asking for the prompt with `--zoom`.
    CustomZoom,
    Pan(Direction),
    /// Upscale (Subtle / Creative) of one image, 2x.
    UpscaleOne(UpscaleStyle),
}

impl Button {
    /// The task action the button's task has.
    pub fn action(self) -> &'static str {
        match self {
            Button::Upscale(_) | Button::UpscaleOne(_) => "UPSCALE",
            Button::Variation(_) | Button::Vary(_) => "VARIATION",
            Button::Reroll => "REROLL",
            Button::Region => "INPAINT",
            Button::Zoom(_) | Button::CustomZoom => "ZOOM",
            Button::Pan(_) => "PAN",
        }
    }

    /// Asks for a prompt (or mask) through `/mj/submit/modal` first.
    pub fn modal(self) -> bool {
        matches!(self, Button::Region | Button::CustomZoom)
    }

    /// May ask for a new prompt first when the client sends `enableRemix` (MJ's remix).
    pub fn remixable(self) -> bool {
        matches!(
            self,
            Button::Variation(_) | Button::Vary(_) | Button::Reroll | Button::Pan(_)
        )
    }

    /// The job's operation, its image of the parent (from 1; `None`: none, a reroll) and
    /// whether it makes a grid.
    pub fn job(self) -> (Operation, Option<u32>, bool) {
        match self {
            Button::Upscale(i) => (upscale(UpscaleStyle::Subtle), Some(i), false),
            Button::UpscaleOne(style) => (upscale(style), Some(1), false),
            Button::Variation(i) => (Operation::Variation(Strength::Strong), Some(i), true),
            Button::Vary(strength) => (Operation::Variation(strength), Some(1), true),
            Button::Reroll => (Operation::Reroll, None, true),
            Button::Region => (Operation::Edit, Some(1), true),
            Button::Zoom(percent) => (Operation::ZoomOut { percent }, Some(1), true),
            Button::CustomZoom => (Operation::ZoomOut { percent: 200 }, Some(1), true),
            Button::Pan(d) => (Operation::Outpaint(d), Some(1), true),
        }
    }

    /// The `/describe`-like text of the task it makes, after the parent's id.
    pub fn describe(self) -> String {
        match self {
            Button::Upscale(i) => format!("U{i}"),
            Button::Variation(i) => format!("V{i}"),
            Button::Reroll => "R".into(),
            Button::Vary(Strength::Subtle) => "Vary (Subtle)".into(),
            Button::Vary(Strength::Strong) => "Vary (Strong)".into(),
            Button::Region => "Vary (Region)".into(),
            Button::Zoom(p) => format!("Zoom Out {}x", f64::from(p) / 100.0),
            Button::CustomZoom => "Custom Zoom".into(),
            Button::Pan(d) => format!("Pan {}", direction(d)),
            Button::UpscaleOne(UpscaleStyle::Subtle) => "Upscale (Subtle)".into(),
            Button::UpscaleOne(UpscaleStyle::Creative) => "Upscale (Creative)".into(),
        }
    }

    /// Its customId on the task whose message hash is `hash`.
    pub fn custom_id(self, hash: &str) -> String {
        match self {
            Button::Upscale(i) => format!("MJ::JOB::upsample::{i}::{hash}"),
            Button::Variation(i) => format!("MJ::JOB::variation::{i}::{hash}"),
            Button::Reroll => format!("MJ::JOB::reroll::0::{hash}::SOLO"),
            Button::Vary(Strength::Subtle) => format!("MJ::JOB::low_variation::1::{hash}::SOLO"),
            Button::Vary(Strength::Strong) => format!("MJ::JOB::high_variation::1::{hash}::SOLO"),
            Button::Region => format!("MJ::Inpaint::1::{hash}::SOLO"),
            // Midjourney's own numbers: 50 is 2x, 75 is 1.5x.
            Button::Zoom(p) => {
                let share = if p >= 200 { 50 } else { 75 };
                format!("MJ::Outpaint::{share}::1::{hash}::SOLO")
            }
            Button::CustomZoom => format!("MJ::CustomZoom::{hash}"),
            Button::Pan(d) => format!("MJ::JOB::pan_{}::1::{hash}::SOLO", direction(d)),
            Button::UpscaleOne(UpscaleStyle::Subtle) => {
                format!("MJ::JOB::upsample_v6_2x_subtle::1::{hash}::SOLO")
            }
            Button::UpscaleOne(UpscaleStyle::Creative) => {
                format!("MJ::JOB::upsample_v6_2x_creative::1::{hash}::SOLO")
            }
        }
    }

    fn label(self) -> (String, &'static str) {
        match self {
            Button::Upscale(i) => (format!("U{i}"), ""),
            Button::Variation(i) => (format!("V{i}"), ""),
            Button::Reroll => (String::new(), "🔄"),
            Button::Pan(Direction::Left) => (String::new(), "⬅️"),
            Button::Pan(Direction::Right) => (String::new(), "➡️"),
            Button::Pan(Direction::Up) => (String::new(), "⬆️"),
            Button::Pan(Direction::Down) => (String::new(), "⬇️"),
            Button::Vary(_) | Button::Region => (self.describe(), "🪄"),
            Button::Zoom(_) | Button::CustomZoom => (self.describe(), "🔍"),
            Button::UpscaleOne(_) => (self.describe(), ""),
        }
    }

    /// The button as the task object shows it.
    pub fn shown(self, hash: &str) -> ShownButton {
        let (label, emoji) = self.label();
        ShownButton {
            custom_id: self.custom_id(hash),
            emoji,
            label,
            kind: 2,
            style: 2,
        }
    }
}

/// A button in a task object (Discord's component fields).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShownButton {
    pub custom_id: String,
    pub emoji: &'static str,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: u8,
    pub style: u8,
}

fn upscale(style: UpscaleStyle) -> Operation {
    Operation::Upscale { style, factor: 2 }
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Left => "left",
        Direction::Right => "right",
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

/// The buttons of a finished task: a grid's U, 🔄 and V, or one image's upscales, varies,
/// zooms and pans (a describe has none).
pub fn of_task(grid: bool, has_image: bool) -> Vec<Button> {
    if grid {
        let mut all: Vec<Button> = (1..=4).map(Button::Upscale).collect();
        all.push(Button::Reroll);
        all.extend((1..=4).map(Button::Variation));
        return all;
    }
    if !has_image {
        return Vec::new();
    }
    let mut all = vec![
        Button::UpscaleOne(UpscaleStyle::Subtle),
        Button::UpscaleOne(UpscaleStyle::Creative),
        Button::Vary(Strength::Subtle),
        Button::Vary(Strength::Strong),
        Button::Region,
        Button::Zoom(200),
        Button::Zoom(150),
        Button::CustomZoom,
    ];
    all.extend(
        [
            Direction::Left,
            Direction::Right,
            Direction::Up,
            Direction::Down,
        ]
        .map(Button::Pan),
    );
    all
}

/// What a customId asks for, and the message hash it names; `None` for one Easel does not
/// know.
pub fn parse(custom_id: &str) -> Option<(Button, &str)> {
    let parts: Vec<&str> = custom_id.split("::").collect();
    let index = |s: &str| s.parse::<u32>().ok().filter(|i| (1..=4).contains(i));
    match parts.as_slice() {
        ["MJ", "JOB", "upsample", i, hash] => Some((Button::Upscale(index(i)?), hash)),
        ["MJ", "JOB", "variation", i, hash] => Some((Button::Variation(index(i)?), hash)),
        ["MJ", "JOB", "reroll", "0", hash, "SOLO"] => Some((Button::Reroll, hash)),
        ["MJ", "JOB", "low_variation", "1", hash, "SOLO"] => {
            Some((Button::Vary(Strength::Subtle), hash))
        }
        ["MJ", "JOB", "high_variation", "1", hash, "SOLO"] => {
            Some((Button::Vary(Strength::Strong), hash))
        }
        ["MJ", "Inpaint", "1", hash, "SOLO"] => Some((Button::Region, hash)),
        ["MJ", "Outpaint", "50", "1", hash, "SOLO"] => Some((Button::Zoom(200), hash)),
        ["MJ", "Outpaint", "75", "1", hash, "SOLO"] => Some((Button::Zoom(150), hash)),
        ["MJ", "CustomZoom", hash] | ["MJ", "CustomZoom", "1", hash] => {
            Some((Button::CustomZoom, hash))
        }
        ["MJ", "JOB", kind, "1", hash, "SOLO"] => {
            let button = match *kind {
                "pan_left" => Button::Pan(Direction::Left),
                "pan_right" => Button::Pan(Direction::Right),
                "pan_up" => Button::Pan(Direction::Up),
                "pan_down" => Button::Pan(Direction::Down),
                k if k.starts_with("upsample_") && k.ends_with("_creative") => {
                    Button::UpscaleOne(UpscaleStyle::Creative)
                }
                k if k.starts_with("upsample_") => Button::UpscaleOne(UpscaleStyle::Subtle),
                _ => return None,
            };
            Some((button, hash))
        }
        _ => None,
    }
}

/// The zoom of a custom zoom's prompt (`--zoom 1.8`) as a percentage, and the prompt without
/// it; 2x when the prompt names none, `None` outside 1-2.
pub fn custom_zoom(prompt: &str) -> Option<(u16, String)> {
    let words: Vec<&str> = prompt.split_whitespace().collect();
    let Some(at) = words.iter().position(|w| *w == "--zoom") else {
        return Some((200, prompt.trim().to_owned()));
    };
    let value: f64 = words.get(at + 1)?.parse().ok()?;
    if value <= 1.0 || value > 2.0 {
        return None;
    }
    let rest: Vec<&str> = words
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at && *i != at + 1)
        .map(|(_, w)| *w)
        .collect();
    Some(((value * 100.0).round() as u16, rest.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_button_parses_back() {
        for grid in [true, false] {
            for button in of_task(grid, true) {
                let id = button.custom_id("h-1");
                assert_eq!(parse(&id), Some((button, "h-1")), "{id}");
            }
        }
    }

    #[test]
    fn other_editions_spellings_parse() {
        assert_eq!(
            parse("MJ::CustomZoom::1::abc"),
            Some((Button::CustomZoom, "abc"))
        );
        assert_eq!(
            parse("MJ::JOB::upsample_v7_2x_creative::1::abc::SOLO"),
            Some((Button::UpscaleOne(UpscaleStyle::Creative), "abc"))
        );
        assert_eq!(parse("MJ::JOB::upsample::5::abc"), None);
        assert_eq!(parse("MJ::BOOKMARK::abc"), None);
    }

    #[test]
    fn custom_zoom_reads_its_flag() {
        assert_eq!(custom_zoom("a cat --zoom 1.5"), Some((150, "a cat".into())));
        assert_eq!(custom_zoom("a cat"), Some((200, "a cat".into())));
        assert_eq!(custom_zoom("a cat --zoom 3"), None);
        assert_eq!(custom_zoom("a cat --zoom"), None);
    }
}
